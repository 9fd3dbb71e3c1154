"""Tests for models.applications (+ application_entries), ImagenetPreprocessing, the catalogue.

Offline only.
"""

import dataclasses
import hashlib
import shutil
import time
import warnings

import keras
import numpy as np
import pytest

import models.application_entries
import models.download
from models.applications import (
    APPLICATION_ENTRIES,
    APPLICATIONS,
    RANDOM_INITIALISATION_LABEL,
    WeightsUnavailableError,
    application_template,
    build_application_base,
    imagenet_weights_path,
    keras_cache_dir,
    validate_input_size,
)
from models.catalogue import (
    APPLICATION_CATALOGUE,
    DEFAULT_MODEL,
    MODEL_CATALOGUE,
    catalogue_key,
    load_template,
)
from models.datasets import load_bundled_dataset
from models.download import DOWNLOAD_TIMEOUT_ENV
from models.layers import ImagenetPreprocessing
from models.template import ModelTemplate
from models.transfer import build_transfer_model
from models.tree import LayerTree
from models.workspace import Workspace
from tests.test_download import cache_listing

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def save_as_keras_weights_file(model, path):
    """Writes a legacy HDF5 file that `load_weights` / `weights=path` read (like Keras's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name("model_for_test.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(temporary)
    shutil.move(temporary, path)


def randomise_normalization(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) and layer.weights:
            mean, variance, count = layer.get_weights()
            shift = np.array([0.4, 0.5, 0.6], "float32")
            layer.set_weights([mean + shift, variance + shift / 10, count])


# ----------------------------------------------------------------------------- catalogue
def test_catalogue_lists_the_required_families_without_building_anything():
    builders = {entry.builder for entry in APPLICATION_ENTRIES.values()}
    assert {
        "MobileNetV2",
        "MobileNetV3Small",
        "ResNet50",
        "EfficientNetB0",
        "DenseNet121",
        "VGG16",
        "Xception",
        "ConvNeXtTiny",
    } <= builders
    assert dict(APPLICATION_CATALOGUE) == dict(APPLICATIONS)
    assert DEFAULT_MODEL in MODEL_CATALOGUE
    assert not set(MODEL_CATALOGUE) & set(APPLICATIONS)
    for entry in APPLICATION_ENTRIES.values():
        assert entry.default_input_size in entry.input_sizes
        assert min(entry.input_sizes) >= entry.min_input_size
        assert entry.preprocessing in ("tf", "torch", "caffe", "none")


def _keras_requested_file(entry, input_size, monkeypatch):
    """Builds the Keras application with weights="imagenet", recording what it asks for."""
    requested = {}

    class Requested(Exception):
        pass

    def fake_get_file(fname=None, origin=None, **kwargs):
        requested.update(fname=fname, origin=origin, **kwargs)
        raise Requested

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", fake_get_file)
    builder = getattr(keras.applications, entry.builder)
    with pytest.raises(Requested), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder(
            include_top=False,
            weights="imagenet",
            input_shape=(input_size, input_size, 3),
            **dict(entry.builder_arguments),
        )
    return requested


FAST_KEYS = ["mobilenet_v2_035", "mobilenet_v3_small", "efficientnet_b0", "vgg16"]
SLOW_KEYS = ["mobilenet_v2", "resnet50", "densenet121", "xception", "convnext_tiny"]


def _catalogue_matches_keras(key, monkeypatch):
    entry = APPLICATION_ENTRIES[key]
    size = entry.min_input_size if key != "mobilenet_v2_035" else 96
    requested = _keras_requested_file(entry, size, monkeypatch)
    # The reference is Keras's own builder: the same file name, URL, folder and hash.
    assert requested["fname"] == entry.weights_file_name(size)
    assert requested["origin"] == entry.weights_url(size)
    assert requested["cache_subdir"] == "models"
    assert requested.get("file_hash") == entry.weights_file_hash
    base, is_pretrained = build_application_base(key, size, pretrained=False)
    tree = LayerTree(base)
    assert not is_pretrained
    assert tree.totals().total == entry.num_params == base.count_params()
    assert len(tree) - 1 == entry.num_layers


@pytest.mark.parametrize("key", FAST_KEYS)
def test_weights_file_and_counts_match_keras(key, monkeypatch):
    _catalogue_matches_keras(key, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("key", SLOW_KEYS)
def test_weights_file_and_counts_match_keras_for_the_large_models(key, monkeypatch):
    _catalogue_matches_keras(key, monkeypatch)


def test_mobilenet_v2_weights_depend_on_size_with_keras_fallback_to_224():
    assert imagenet_weights_path("mobilenet_v2_035", 128).name.endswith("_0.35_128_no_top.h5")
    # Keras loads the 224 px weights for sizes without their own file.
    assert imagenet_weights_path("mobilenet_v2_035", 100).name.endswith("_0.35_224_no_top.h5")
    assert imagenet_weights_path("mobilenet_v2", 96).name.endswith("_1.0_96_no_top.h5")


def test_cache_folder_follows_keras_home_or_an_explicit_folder(offline_keras_home, tmp_path):
    assert keras_cache_dir() == offline_keras_home
    assert imagenet_weights_path("vgg16", 64).parent == offline_keras_home / "models"
    assert keras_cache_dir(tmp_path / "other") == tmp_path / "other"


@pytest.mark.parametrize(
    ("key", "size", "fragment"),
    [
        ("xception", 32, "Xception takes square images from 71 to 512 px"),
        ("vgg16", 16, "Received: input_size=16"),
        ("vgg16", 96.0, "Received: input_size=96.0"),
        ("vgg16", 4096, "from 32 to 512"),
    ],
)
def test_bad_input_sizes_are_explained(key, size, fragment):
    with pytest.raises(ValueError) as raised:
        validate_input_size(key, size)
    assert fragment in str(raised.value)


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown keras\.applications model 'resnet9'"):
        build_application_base("resnet9", 64, pretrained=False)
    with pytest.raises(ValueError, match=r"Unknown model 'nope'.*resnet50"):
        load_template("nope")


# ----------------------------------------------------------------------------- preprocessing
PREPROCESSING_FAMILIES = {
    "tf": ["mobilenet_v2", "xception"],
    "torch": ["densenet"],
    "caffe": ["resnet50", "vgg16"],
    "none": ["efficientnet", "convnext", "mobilenet_v3"],
}


@pytest.mark.parametrize("key", sorted(APPLICATION_ENTRIES))
def test_preprocessing_layer_equals_the_family_preprocess_input(key):
    entry = APPLICATION_ENTRIES[key]
    images = np.random.default_rng(0).uniform(0, 1, (2, 5, 5, 3)).astype("float32")
    expected = getattr(keras.applications, entry.family).preprocess_input(images * 255.0)
    received = ImagenetPreprocessing(entry.preprocessing)(images)
    np.testing.assert_allclose(np.asarray(received), np.asarray(expected), rtol=1e-5, atol=1e-4)
    assert entry.family in PREPROCESSING_FAMILIES[entry.preprocessing]


def test_preprocessing_layer_checks_mode_and_channels_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="received 'bgr'"):
        ImagenetPreprocessing("bgr")
    with pytest.raises(ValueError, match="with 1 channel"):
        ImagenetPreprocessing("caffe")(np.zeros((1, 4, 4, 1), "float32"))
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="base")
    model = build_transfer_model(base, (8, 8, 1), 2, preprocessing="caffe")
    assert [layer.name for layer in model.layers][:4] == ["image", "to_rgb", "preprocess", "base"]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert loaded.get_layer("preprocess").mode == "caffe"
    images = np.random.default_rng(1).uniform(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_preprocessing_is_for_images_only():
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="dense")
    with pytest.raises(ValueError, match="preprocessing='tf' is for images"):
        build_transfer_model(base, (4,), 2, preprocessing="tf")
    with pytest.raises(ValueError, match="received 'rgb'"):
        build_transfer_model(base, (4,), 2, preprocessing="rgb")


# ----------------------------------------------------------------------------- weights
def test_random_initialisation_is_labelled_everywhere_and_trains_in_a_workspace():
    template = application_template("mobilenet_v2_035", 96, pretrained=False)
    assert not template.pretrained
    assert RANDOM_INITIALISATION_LABEL in template.title
    assert "not pretrained (random initialisation)" in template.title.lower()
    assert "Not pretrained (random initialisation)" in template.description
    assert template.key == "mobilenet_v2_035@96:random"
    assert catalogue_key(template.key) == "mobilenet_v2_035"
    assert template.preprocessing == "tf"
    assert (template.num_layers, template.num_params) == (154, 410_208)
    assert template.input_shape == (96, 96, 3)

    workspace = Workspace(template, load_bundled_dataset("digits_5_9"))
    names = [layer.name for layer in workspace.model.layers]
    assert names[:4] == ["image", "resize", "to_rgb", "preprocess"]
    preprocess = workspace.model.get_layer("preprocess")
    assert preprocess.mode == "tf"


def test_missing_weights_offline_name_model_file_folder_and_the_way_out(offline_keras_home):
    with pytest.raises(WeightsUnavailableError) as raised:
        build_application_base("efficientnet_b0", 64, pretrained=True, allow_download=False)
    error = raised.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert "EfficientNetB0" in message
    assert "'efficientnetb0_notop.h5' is not in" in message
    assert str(offline_keras_home / "models") in message
    assert "~/.keras/models" in message
    assert "downloading is off" in message
    assert "continue with random initialisation" in message
    assert "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5" in message
    assert error.file_name == "efficientnetb0_notop.h5"
    assert error.folder == offline_keras_home / "models"


def test_no_network_download_failure_is_explained(offline_keras_home):
    with pytest.raises(WeightsUnavailableError) as raised:
        application_template("vgg16", 32, pretrained=True)
    message = str(raised.value)
    assert "downloading it failed: the connection failed (network disabled in tests)." in message
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "continue with random initialisation" in message
    assert cache_listing(offline_keras_home / "models") == []


def test_pretrained_weights_load_from_the_keras_cache_without_network(offline_keras_home):
    keras.utils.set_random_seed(7)
    source, _ = build_application_base("mobilenet_v2_035", 96, pretrained=False)
    path = imagenet_weights_path("mobilenet_v2_035", 96)
    assert path.parent == offline_keras_home / "models"
    save_as_keras_weights_file(source, path)
    # Keras itself reads the file through weights=path.
    checked = keras.applications.MobileNetV2(
        include_top=False, weights=str(path), input_shape=(96, 96, 3), alpha=0.35
    )
    for expected, received in zip(source.get_weights(), checked.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, received)

    keras.utils.set_random_seed(8)  # a different random draw, so equality proves the load
    template = application_template("mobilenet_v2_035", 96, pretrained=True, allow_download=False)
    assert template.pretrained and template.key == "mobilenet_v2_035@96:imagenet"
    assert "pretrained on ImageNet" in template.title
    assert "not pretrained" not in template.title.lower()
    for expected, received in zip(source.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)


def _serve_weights(monkeypatch, server, key, body, file_hash):
    """Points a catalogue entry's weights URL at the local server, serving `body`."""
    entry = dataclasses.replace(
        APPLICATION_ENTRIES[key], weights_origin=server.url("weights/"), weights_file_hash=file_hash
    )
    monkeypatch.setattr(
        models.application_entries, "APPLICATION_ENTRIES", {**APPLICATION_ENTRIES, key: entry}
    )
    return entry, server.serve(f"weights/{entry.weights_file_name(96)}", body)


def test_missing_weights_are_downloaded_into_the_cache_with_progress(
    offline_keras_home, monkeypatch, tmp_path, local_server
):
    keras.utils.set_random_seed(3)
    source, _ = build_application_base("mobilenet_v2_035", 96, pretrained=False)
    served = tmp_path / "served.h5"
    save_as_keras_weights_file(source, served)
    body = served.read_bytes()
    entry, url = _serve_weights(
        monkeypatch, local_server, "mobilenet_v2_035", body, hashlib.md5(body).hexdigest()
    )
    reports = []

    keras.utils.set_random_seed(4)  # a different random draw, so equality proves the load
    template = application_template(
        "mobilenet_v2_035", 96, on_progress=lambda *report: reports.append(report)
    )
    assert template.pretrained and template.key == "mobilenet_v2_035@96:imagenet"
    assert url == entry.weights_url(96)
    assert local_server.requests == [f"/weights/{entry.weights_file_name(96)}"]
    path = imagenet_weights_path("mobilenet_v2_035", 96)
    assert path.read_bytes() == body
    assert cache_listing(path.parent) == [entry.weights_file_name(96)]
    assert reports[0] == (0, len(body)) and reports[-1] == (len(body), len(body))
    for expected, received in zip(source.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)

    # Now cached: loading again downloads nothing and reports no progress.
    reports.clear()
    application_template("mobilenet_v2_035", 96, on_progress=lambda *report: reports.append(report))
    assert reports == [] and len(local_server.requests) == 1


def test_a_stalled_weights_download_times_out_and_offers_random_init(
    offline_keras_home, monkeypatch, local_server
):
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "1")
    entry, url = _serve_weights(monkeypatch, local_server, "mobilenet_v2_035", b"", None)
    local_server.serve(
        f"weights/{entry.weights_file_name(96)}",
        b"\x89HDF" * 100,
        declared_length=10**7,
        stall=True,
    )
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as raised:
        load_template("mobilenet_v2_035", input_size=96, pretrained=True)
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "downloading it failed: the download stalled: no data for 1 s after 400 B" in message
    assert url in message
    assert str(offline_keras_home / "models") in message
    assert "continue with random initialisation" in message
    assert cache_listing(offline_keras_home / "models") == []
    # The offline way out still works.
    assert not load_template("mobilenet_v2_035", input_size=96, pretrained=False).pretrained


def test_weights_with_the_wrong_hash_are_refused_and_not_kept(
    offline_keras_home, monkeypatch, local_server
):
    expected = APPLICATION_ENTRIES["vgg16"].weights_file_hash
    _serve_weights(monkeypatch, local_server, "mobilenet_v2_035", b"<html>", expected)
    with pytest.raises(WeightsUnavailableError) as raised:
        build_application_base("mobilenet_v2_035", 96, pretrained=True)
    message = str(raised.value)
    assert f"has md5 {hashlib.md5(b'<html>').hexdigest()}; expected {expected}" in message
    assert cache_listing(offline_keras_home / "models") == []


def test_a_corrupt_cached_weights_file_is_reported(offline_keras_home):
    path = imagenet_weights_path("vgg16", 32)
    path.parent.mkdir(parents=True)
    path.write_text("not an HDF5 file")
    with pytest.raises(WeightsUnavailableError) as raised:
        build_application_base("vgg16", 32, pretrained=True, allow_download=False)
    message = str(raised.value)
    assert f"the file {path} exists but could not be loaded" in message
    assert "Delete it and try again" in message


@pytest.mark.slow
def test_pretrained_efficientnet_matches_keras_imagenet_structure(offline_keras_home, monkeypatch):
    """Keras adds a Rescaling layer only for weights="imagenet"; FreezeLab must too."""
    keras.utils.set_random_seed(5)
    source, _ = build_application_base("efficientnet_b0", 32, pretrained=False)
    randomise_normalization(source)
    path = imagenet_weights_path("efficientnet_b0", 32)
    save_as_keras_weights_file(source, path)

    ours, is_pretrained = build_application_base(
        "efficientnet_b0", 32, pretrained=True, allow_download=False
    )
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: str(path))
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(32, 32, 3)
    )
    assert is_pretrained
    assert len(ours.layers) == len(reference.layers) == len(source.layers) + 1
    assert [type(layer).__name__ for layer in ours.layers] == [
        type(layer).__name__ for layer in reference.layers
    ]
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(ours(pixels)), np.asarray(reference(pixels)), rtol=1e-5, atol=1e-5
    )
    # A template's config rebuilds the same structure and weights.
    copy = ModelTemplate.from_model(
        ours, key="efficientnet", title="", description="", pretrained=True
    ).instantiate()
    assert [type(layer).__name__ for layer in copy.layers] == [
        type(layer).__name__ for layer in ours.layers
    ]
    np.testing.assert_allclose(
        np.asarray(copy(pixels)), np.asarray(ours(pixels)), rtol=1e-4, atol=1e-4
    )


def test_load_template_offers_applications_and_keeps_the_bundled_default():
    assert load_template(DEFAULT_MODEL).key == DEFAULT_MODEL
    template = load_template("vgg16", input_size=32, pretrained=False)
    assert template.title.startswith("VGG16 · 32 px · not pretrained")
    with pytest.raises(WeightsUnavailableError):
        load_template("vgg16", input_size=32, pretrained=True, allow_download=False)
