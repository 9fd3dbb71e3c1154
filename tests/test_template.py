"""Tests for models.template: ModelTemplate and the one format of model keys (ModelKey)."""

import math
import re

import keras
import numpy as np
import pytest

import models.catalogue
import models.presets
import models.workspace
from models.bundled import BUNDLED_MODEL_PATH
from models.bundled_attention import ATTENTION_MODEL_PATH
from models.catalogue import (
    DEFAULT_MODEL,
    MODEL_CATALOGUE,
    bundled_model_path,
    bundled_template,
    catalogue_key,
    load_template,
)
from models.template import (
    BUNDLED_ATTENTION_KEY,
    BUNDLED_MODEL_KEY,
    BUNDLED_MODEL_KEYS,
    ModelKey,
    ModelKind,
    ModelTemplate,
    parse_model_key,
)
from models.upload_model import uploaded_template

# Keys exactly as FreezeLab wrote them before `ModelKey` (stored runs and run configs hold them).
KNOWN_KEYS = {
    "bundled_digits_cnn": ModelKey(ModelKind.BUNDLED, catalogue_key="bundled_digits_cnn"),
    "bundled_digits_attention": ModelKey(
        ModelKind.BUNDLED, catalogue_key="bundled_digits_attention"
    ),
    "resnet50@96:imagenet": ModelKey(
        ModelKind.APPLICATION, catalogue_key="resnet50", input_size=96, pretrained=True
    ),
    "mobilenet_v2_035@128:random": ModelKey(
        ModelKind.APPLICATION, catalogue_key="mobilenet_v2_035", input_size=128, pretrained=False
    ),
    "upload:digits_cnn.keras:feature_extractor": ModelKey(
        ModelKind.UPLOAD, filename="digits_cnn.keras", cut_layer="feature_extractor"
    ),
    "upload:m.keras:block:1": ModelKey(ModelKind.UPLOAD, filename="m.keras", cut_layer="block:1"),
    "dense_base:4": ModelKey(ModelKind.DENSE_BASE, num_features=4),
}


def tiny_base() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.BatchNormalization(name="batch_norm"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ],
        name="tiny_base",
    )


@pytest.mark.parametrize(("text", "expected"), KNOWN_KEYS.items())
def test_known_keys_parse_to_their_parts_and_format_back(text, expected):
    key = parse_model_key(text)
    assert key == expected
    assert key.format() == str(key) == text


def test_builders_make_the_same_keys_as_the_parts():
    assert ModelKey.bundled().format() == BUNDLED_MODEL_KEY == "bundled_digits_cnn"
    assert ModelKey.bundled(BUNDLED_ATTENTION_KEY).format() == "bundled_digits_attention"
    assert ModelKey.application("resnet50", 96, True).format() == "resnet50@96:imagenet"
    assert ModelKey.application("resnet50", 96, False).weights == "random"
    assert ModelKey.dense_base(4).format() == "dense_base:4"
    assert ModelKey.bundled().weights is None


@pytest.mark.parametrize(
    "filename", ["digits.keras", "my model (1).keras", "ünïcödé.h5", "a:b.keras", "..."]
)
def test_upload_keys_replace_unsafe_file_name_characters_as_before(filename):
    # The independent reference: the substitution uploaded models' keys always used.
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", filename)
    key = ModelKey.upload(filename, "dense 1")
    assert key.format() == f"upload:{safe}:dense 1"
    assert parse_model_key(key.format()) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "resnet50",
        "resnet50@96",
        "resnet50@96:imagenet21k",
        "resnet50@0:random",
        "resnet50@x:random",
        "res net@96:random",
        "upload:",
        "upload:a.keras",
        "upload:a.keras:",
        "upload:a b.keras:dense",
        "dense_base:0",
        "dense_base:-1",
        "dense_base:",
    ],
)
def test_malformed_keys_are_refused_keras_style(text):
    with pytest.raises(ValueError, match="must be a model key") as raised:
        parse_model_key(text)
    message = str(raised.value)
    assert f"Received: key={text!r}" in message
    assert "'resnet50@96:imagenet'" in message and "upload:<file>:<cut layer>" in message


def test_a_non_string_key_is_a_type_error_too():
    with pytest.raises(TypeError, match="Received: key=5"):
        parse_model_key(5)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"kind": "bundled", "catalogue_key": "resnet50"}, "'bundled_digits_cnn'"),
        ({"kind": "bundled", "catalogue_key": "resnet50"}, "'bundled_digits_attention'"),
        ({"kind": "bundled", "catalogue_key": None}, "catalogue_key=None"),
        ({"kind": "bundled", "catalogue_key": BUNDLED_MODEL_KEY, "input_size": 96}, "input_size"),
        ({"kind": "application", "catalogue_key": "r@1", "input_size": 9, "pretrained": True}, "@"),
        ({"kind": "application", "catalogue_key": "vgg16", "input_size": 96}, "pretrained"),
        (
            {"kind": "application", "catalogue_key": "vgg16", "input_size": 0, "pretrained": True},
            "input_size",
        ),
        ({"kind": "upload", "filename": "a:b", "cut_layer": "dense"}, "filename"),
        ({"kind": "upload", "filename": "a.keras", "cut_layer": ""}, "cut_layer"),
        ({"kind": "dense_base", "num_features": 2.5}, "num_features"),
        ({"kind": "tabular"}, "kind"),
    ],
)
def test_inconsistent_fields_are_refused(fields, fragment):
    with pytest.raises(ValueError, match="Received") as raised:
        ModelKey(**fields)
    assert fragment in str(raised.value)


def test_the_bundled_key_has_one_owner():
    assert models.catalogue.BUNDLED_MODEL_KEY is BUNDLED_MODEL_KEY
    assert models.presets.BUNDLED_MODEL_KEY is BUNDLED_MODEL_KEY
    assert bundled_template().key == BUNDLED_MODEL_KEY
    assert parse_model_key(bundled_template().key).kind is ModelKind.BUNDLED


def test_every_bundled_key_is_offered_loads_and_reads_back():
    assert DEFAULT_MODEL == BUNDLED_MODEL_KEY == BUNDLED_MODEL_KEYS[0]  # the CNN stays default
    assert list(MODEL_CATALOGUE) == list(BUNDLED_MODEL_KEYS)
    assert "attention" in MODEL_CATALOGUE[BUNDLED_ATTENTION_KEY].lower()
    for key in BUNDLED_MODEL_KEYS:
        template = load_template(key)
        assert template.key == key and template.pretrained
        assert parse_model_key(template.key) == ModelKey.bundled(key)
        assert template.input_shape == (8, 8, 1)
    assert load_template(BUNDLED_ATTENTION_KEY).title == "Bundled digits attention"
    assert bundled_template().key == BUNDLED_MODEL_KEY  # no key: still the CNN


def test_an_unknown_bundled_key_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="Received: key='bundled_digits_vit'") as raised:
        bundled_template("bundled_digits_vit")
    assert "'bundled_digits_attention'" in str(raised.value)
    with pytest.raises(ValueError, match="Received: key='resnet50'"):
        bundled_model_path("resnet50")


def test_each_bundled_key_names_its_own_model_file():
    assert bundled_model_path() == BUNDLED_MODEL_PATH == bundled_model_path(BUNDLED_MODEL_KEY)
    assert bundled_model_path(BUNDLED_ATTENTION_KEY) == ATTENTION_MODEL_PATH
    for key in BUNDLED_MODEL_KEYS:
        model = keras.saving.load_model(bundled_model_path(key), compile=False, safe_mode=True)
        assert model.get_layer("feature_extractor").count_params() == (
            load_template(key).num_params
        )
    with pytest.raises(ValueError, match="bundled_digits_attention"):
        load_template("bundled_digits_vit")


def test_catalogue_key_reads_the_key():
    assert catalogue_key("resnet50@96:random") == "resnet50"
    assert catalogue_key(BUNDLED_MODEL_KEY) == BUNDLED_MODEL_KEY
    assert catalogue_key(BUNDLED_ATTENTION_KEY) == BUNDLED_ATTENTION_KEY
    assert catalogue_key("upload:m.keras:dense") is None
    with pytest.raises(ValueError, match="Received: key='resnet50@'"):
        catalogue_key("resnet50@")


def test_uploaded_templates_use_the_upload_key():
    model = keras.Sequential(
        [keras.Input((6, 6, 1)), tiny_base(), keras.layers.Dense(2, name="classifier")],
        name="uploaded",
    )
    template = uploaded_template(model, "tiny_base", "my digits.keras")
    key = parse_model_key(template.key)
    assert (key.kind, key.filename, key.cut_layer) == (
        ModelKind.UPLOAD,
        "my_digits.keras",
        "tiny_base",
    )


def test_workspace_still_offers_model_template():
    assert models.workspace.ModelTemplate is ModelTemplate


def test_a_template_copies_config_and_weights_and_counts_like_keras():
    base = tiny_base()
    template = ModelTemplate.from_model(
        base, key="dense_base:4", title="Tiny", description="", pretrained=False
    )
    assert template.num_params == base.count_params()  # Keras's own count
    assert template.num_params == sum(math.prod(w.shape) for w in base.weights)
    assert template.num_layers == len(base.layers) and template.input_shape == (6, 6, 1)
    assert template.class_name == "Sequential"
    assert all(not array.flags.writeable for array in template.weights)
    copies = [template.instantiate(), template.instantiate()]
    assert copies[0] is not copies[1]
    for copy in copies:
        for ours, reference in zip(copy.get_weights(), base.get_weights(), strict=True):
            np.testing.assert_array_equal(ours, reference)
    copies[0].get_layer("conv").kernel.assign(np.zeros((3, 3, 1, 3)))
    np.testing.assert_array_equal(copies[1].get_layer("conv").kernel.numpy(), base.get_weights()[0])
