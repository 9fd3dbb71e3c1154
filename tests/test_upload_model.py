"""Tests for models/upload_model.py: every bad model upload is explained."""

import io
import json
import warnings
import zipfile

import keras
import numpy as np
import pytest

from models.bundled import BUNDLED_MODEL_PATH
from models.datasets import load_bundled_dataset
from models.export import model_file_bytes
from models.training import TrainingConfig
from models.transfer import build_transfer_model
from models.upload_model import (
    cut_layer_choices,
    default_cut_layer,
    load_uploaded_model,
    uploaded_template,
)
from models.workspace import Workspace

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def tiny_classifier(name="tiny"):
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    x = keras.layers.Dense(3, name="logits")(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def h5_bytes(model, tmp_path):
    path = tmp_path / "model.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path.read_bytes()


# ----------------------------------------------------------------------------- models
def test_a_good_keras_model_loads_and_its_default_cut_is_before_the_classifier():
    model = load_uploaded_model(BUNDLED_MODEL_PATH.read_bytes(), "digits_cnn.keras")
    assert model.name == "digits_cnn"
    assert cut_layer_choices(model) == ["feature_extractor", "classifier"]
    assert default_cut_layer(model) == "feature_extractor"

    template = uploaded_template(model, "feature_extractor", "uploads/digits_cnn.keras")
    assert template.pretrained
    assert template.key == "upload:digits_cnn.keras:feature_extractor"
    assert template.title == "Uploaded: digits_cnn.keras (cut at feature_extractor)"
    assert "dropped ['classifier']" in template.description
    # The base keeps the uploaded weights, bitwise.
    feature_extractor = model.get_layer("feature_extractor")
    for expected, received in zip(feature_extractor.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)
    workspace = Workspace(template, load_bundled_dataset("shapes"))
    names = [layer.name for layer in workspace.model.layers]
    assert names[:3] == ["image", "to_grayscale", "resize"]
    assert names[-1] == "classifier"
    assert workspace.model.output_shape == (None, 4)


def test_default_cut_skips_softmax_dense_and_dropout_and_keeps_feature_extractors_whole():
    assert default_cut_layer(tiny_classifier()) == "pool"
    features = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")], name="features"
    )
    assert default_cut_layer(features) == "conv"
    only_dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    assert default_cut_layer(only_dense) == "dense"


def test_a_model_compiled_with_a_custom_loss_loads_without_compiling():
    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred))

    model = tiny_classifier()
    model.compile(optimizer="adam", loss=my_loss)
    loaded = load_uploaded_model(model_file_bytes(model), "compiled.keras")
    assert loaded.name == "tiny" and not loaded.compiled


def test_an_h5_model_loads_in_safe_mode(tmp_path):
    model = tiny_classifier()
    loaded = load_uploaded_model(h5_bytes(model, tmp_path), "legacy.h5")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded.get_layer("conv").get_weights()[0], model.get_weights()[0])


def test_freezelab_layers_load_from_keras_and_h5_files(tmp_path):
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="base")
    model = build_transfer_model(base, (8, 8, 3), 2)
    assert "to_grayscale" in [layer.name for layer in model.layers]
    files = ((model_file_bytes(model), "m.keras"), (h5_bytes(model, tmp_path), "m.h5"))
    for data, filename in files:
        loaded = load_uploaded_model(data, filename)
        assert type(loaded.get_layer("to_grayscale")).__name__ == "RGBToGrayscale"


def lambda_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Lambda(lambda tensor: tensor * 2, name="times_two")(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_and_the_message_says_why(extension, tmp_path):
    model = lambda_model()
    data = model_file_bytes(model) if extension == ".keras" else h5_bytes(model, tmp_path)
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(data, f"evil{extension}")
    message = str(raised.value)
    assert "Lambda layer(s) ['times_two']" in message
    assert "would run that code on this server" in message
    assert "safe mode" in message


def test_a_lambda_activation_is_refused_too():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation=lambda x: x)])
        data = model_file_bytes(model)
    with pytest.raises(ValueError, match="stores a Python lambda function"):
        load_uploaded_model(data, "activation.keras")


def test_keras_safe_mode_itself_refuses_lambdas(tmp_path):
    """The independent reference: Keras's own loader refuses what FreezeLab refuses."""
    path = tmp_path / "evil.keras"
    lambda_model().save(path)
    with pytest.raises(ValueError, match="arbitrary code execution"):
        keras.saving.load_model(path, safe_mode=True)


def test_unknown_custom_classes_are_named(tmp_path):
    archive_bytes = model_file_bytes(tiny_classifier())
    source = zipfile.ZipFile(io.BytesIO(archive_bytes))
    config = json.loads(source.read("config.json"))
    pool = next(layer for layer in config["config"]["layers"] if layer["name"] == "pool")
    pool.update(module="my_package.layers", class_name="MysteryPool", registered_name="me>Mystery")
    edited = io.BytesIO()
    with zipfile.ZipFile(edited, "w") as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "config.json":
                content = json.dumps(config).encode()
            target.writestr(info.filename, content)
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(edited.getvalue(), "custom.keras")
    message = str(raised.value)
    assert "custom classes FreezeLab does not know: ['MysteryPool']" in message
    assert "the code of a custom class is not in the file" in message


@pytest.mark.parametrize(
    ("data", "filename", "fragment"),
    [
        (b"hello, I am text", "corrupt.keras", "this file is not a zip archive"),
        (b"hello, I am text", "corrupt.h5", "it is not a valid HDF5 file"),
        (b"", "empty.keras", "'empty.keras' is empty (0 bytes)"),
        (b"x" * 200, "big.keras", "the limit is 100 bytes"),
        (b"weights", "model.pt", "has the extension '.pt'; FreezeLab loads Keras models"),
        (b"weights", "model.weights.h5", "holds weights only"),
    ],
)
def test_corrupt_or_wrong_files_are_explained(data, filename, fragment):
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(data, filename, max_bytes=100)
    assert fragment in str(raised.value)


def test_a_zip_that_is_not_a_keras_archive_is_explained():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(buffer.getvalue(), "notes.keras")
    message = str(raised.value)
    assert "is a zip archive but not a Keras model: it has no config.json" in message
    assert "notes.txt" in message


def test_a_keras_archive_without_its_weights_file_is_explained():
    source = zipfile.ZipFile(io.BytesIO(model_file_bytes(tiny_classifier())))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name in ("metadata.json", "config.json"):
            target.writestr(name, source.read(name))
    with pytest.raises(ValueError, match="could not be loaded as a Keras model"):
        load_uploaded_model(buffer.getvalue(), "no_weights_file.keras")


def test_multi_input_and_multi_output_models_are_refused():
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(image))
    joined = keras.layers.Concatenate()([features, extra])
    two_inputs = keras.Model([image, extra], keras.layers.Dense(2)(joined), name="two_in")
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(model_file_bytes(two_inputs), "two_in.keras")
    message = str(raised.value)
    assert "FreezeLab needs a model with one input and one output" in message
    assert "has 2 input(s) (shapes (None, 8, 8, 1), (None, 3)) and 1 output(s)" in message

    two_outputs = keras.Model(image, [features, keras.layers.Dense(2)(features)], name="two_out")
    with pytest.raises(ValueError, match=r"1 input\(s\) .* and 2 output\(s\)"):
        load_uploaded_model(model_file_bytes(two_outputs), "two_out.keras")


def test_a_model_without_weights_is_refused():
    weightless = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Activation("relu")]
    )
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(model_file_bytes(weightless), "empty.keras")
    assert "has no weights: none of its 2 layers has variables" in str(raised.value)
    assert "nothing pretrained to transfer" in str(raised.value)


def test_bad_cut_layers_are_explained():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="'nope' cannot end the base"):
        uploaded_template(model, "nope", "tiny.keras")
    flat = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="leaves a base without weights"):
        uploaded_template(flat, "flat", "flat.keras")


def odd_names_classifier():
    """A model whose names Keras accepts and TensorFlow refuses as scope names while training."""
    inputs = keras.Input((8, 8, 1), name="in put")
    x = keras.layers.Conv2D(4, 3, name="odd names")(inputs)
    x = keras.layers.BatchNormalization(name="")(x)
    x = keras.layers.Conv2D(4, 3, name="<img src=x onerror=alert(1)>")(x)
    inner = keras.Sequential(
        [keras.Input((4, 4, 4)), keras.layers.Conv2D(4, 1, name="ünï ∑")], name="inner model"
    )
    x = keras.layers.GlobalAveragePooling2D(name="_pool")(inner(x))
    outputs = keras.layers.Dense(3, activation="softmax", name="old head")(x)
    return keras.Model(inputs, outputs, name="odd model")


def test_a_model_with_names_tensorflow_refuses_trains_and_keeps_its_names():
    loaded = load_uploaded_model(model_file_bytes(odd_names_classifier()), "odd names.keras")
    assert default_cut_layer(loaded) == "_pool"
    template = uploaded_template(loaded, "_pool", "odd names.keras")
    assert "7 layer name(s) TensorFlow cannot train under" in template.description
    uploaded_base = keras.Model(loaded.inputs, loaded.get_layer("_pool").output)
    for expected, received in zip(uploaded_base.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)

    workspace = Workspace(template, load_bundled_dataset("shapes"))
    base = workspace.base_path
    tree = workspace.tree
    # The tree shows (and its paths use) the names of the uploaded file.
    children = [node.name for node in tree.nodes() if node.parent_path == base]
    assert children == [
        "in put",
        "odd names",
        "",
        "<img src=x onerror=alert(1)>",
        "inner model",
        "_pool",
    ]
    assert f"{base}/inner model/ünï ∑" in tree.paths()
    frozen = [f"{base}/odd names", f"{base}/", f"{base}/inner model/ünï ∑"]
    for path in frozen:
        tree.set_frozen(path, True)
    trained = f"{base}/<img src=x onerror=alert(1)>"
    before = {path: [w.numpy().copy() for w in tree.layer(path).weights] for path in frozen}
    trained_before = [w.numpy().copy() for w in tree.layer(trained).weights]

    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)

    progress = run.job.progress()
    assert progress.state == "finished", progress.message
    for path in frozen:
        for old, new in zip(before[path], tree.layer(path).weights, strict=True):
            np.testing.assert_array_equal(old, new.numpy())
    assert any(
        not np.array_equal(old, new.numpy())
        for old, new in zip(trained_before, tree.layer(trained).weights, strict=True)
    )
    assert run.job.verification().all_unchanged
    drift = run.job.drift_frame()
    assert {"odd names", "", "<img src=x onerror=alert(1)>"} <= set(drift.layer_name)
    assert f"{base}/odd names" in set(drift.layer_path)

    # Frozen as a whole, the base's outputs are computed once and only the head trains.
    workspace.bulk_action("freeze_base")
    base_before = [w.numpy().copy() for w in tree.layer(base).weights]
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    assert run.job.progress().state == "finished", run.job.progress().message
    assert run.job.execution_plan.cached
    for old, new in zip(base_before, tree.layer(base).weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
