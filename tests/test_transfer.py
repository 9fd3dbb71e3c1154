"""Tests for models/transfer.py and models/layers.py: adaptation, nesting, head, save/load."""

import keras
import numpy as np
import pytest

from models.layers import RGBToGrayscale, grayscale_to_rgb
from models.transfer import build_transfer_model, cut_base


def tiny_base(input_shape, name="base", batch_norm=False, flatten=False):
    layers = [keras.Input(input_shape), keras.layers.Conv2D(4, 3, padding="same", name="conv")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5, name="batch_norm"))
    if flatten:
        layers.append(keras.layers.GlobalAveragePooling2D(name="pool"))
    return keras.Sequential(layers, name=name)


def layer_names(model):
    return [layer.name for layer in model.layers]


def test_base_is_one_nested_node_and_the_same_object():
    base = tiny_base((8, 8, 1))
    model = build_transfer_model(base, (8, 8, 1), num_classes=3)

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert nested == [base]
    assert model.get_layer("base") is base
    assert layer_names(model) == ["image", "base", "head_pooling", "head_dropout", "classifier"]
    # Freezing the base object freezes it inside the transfer model.
    base.trainable = False
    assert {id(weight) for weight in model.trainable_weights} == {
        id(weight) for weight in model.get_layer("classifier").trainable_weights
    }


def test_gray_data_into_rgb_base_adds_resize_and_to_rgb():
    base = tiny_base((16, 16, 3))
    model = build_transfer_model(base, (8, 8, 1), num_classes=5)

    assert layer_names(model) == [
        "image",
        "resize",
        "to_rgb",
        "base",
        "head_pooling",
        "head_dropout",
        "classifier",
    ]
    assert isinstance(model.get_layer("resize"), keras.layers.Resizing)
    assert isinstance(model.get_layer("to_rgb"), keras.layers.Concatenate)
    probabilities = model.predict(np.random.rand(4, 8, 8, 1).astype("float32"), verbose=0)
    assert probabilities.shape == (4, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_rgb_data_into_gray_base_adds_grayscale_and_resize():
    base = tiny_base((8, 8, 1))
    model = build_transfer_model(base, (32, 32, 3), num_classes=4)

    assert layer_names(model) == [
        "image",
        "to_grayscale",
        "resize",
        "base",
        "head_pooling",
        "head_dropout",
        "classifier",
    ]
    assert isinstance(model.get_layer("to_grayscale"), RGBToGrayscale)
    assert model.predict(np.random.rand(2, 32, 32, 3), verbose=0).shape == (2, 4)


def test_matching_data_needs_no_adaptation_and_vector_base_needs_no_pooling():
    base = tiny_base((8, 8, 1), flatten=True)
    model = build_transfer_model(base, (8, 8, 1), num_classes=2, dropout=0.0)
    assert layer_names(model) == ["image", "base", "classifier"]


def test_rescaling_is_applied_before_the_base():
    base = tiny_base((8, 8, 3))
    model = build_transfer_model(base, (8, 8, 3), num_classes=2, rescaling=(2.0, -1.0))
    assert layer_names(model)[:3] == ["image", "rescale", "base"]
    rescale = model.get_layer("rescale")
    np.testing.assert_allclose(rescale(np.array([[0.0, 0.5, 1.0]])), [[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize(("data_channels", "base_channels"), [(2, 3), (4, 1), (3, 4)])
def test_unsupported_channel_counts_name_expected_and_received(data_channels, base_channels):
    base = tiny_base((8, 8, base_channels))
    with pytest.raises(ValueError) as raised:
        build_transfer_model(base, (8, 8, data_channels), num_classes=3)
    message = str(raised.value)
    assert f"expects images with {base_channels} channel(s)" in message
    assert f"the data has {data_channels} channel(s)" in message


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        ({"num_classes": 1}, ValueError, "num_classes must be an integer >= 2"),
        ({"num_classes": 2.5}, ValueError, "received 2.5"),
        ({"dropout": 1.0}, ValueError, "dropout must be a rate in [0, 1)"),
        ({"dropout": -0.1}, ValueError, "received -0.1"),
        ({"data_input_shape": (8, 8)}, ValueError, "received (8, 8)"),
        ({"rescaling": (1.0,)}, ValueError, "pair (scale, offset)"),
        ({"base_training": "yes"}, TypeError, "received 'yes'"),
    ],
)
def test_bad_arguments_are_explained(arguments, error, fragment):
    keyword_arguments = {"data_input_shape": (8, 8, 1), "num_classes": 3, **arguments}
    with pytest.raises(error) as raised:
        build_transfer_model(tiny_base((8, 8, 1)), **keyword_arguments)
    assert fragment in str(raised.value)


def test_base_must_be_a_built_model_with_known_input():
    with pytest.raises(TypeError, match="received Conv2D"):
        build_transfer_model(keras.layers.Conv2D(4, 3), (8, 8, 1), 3)
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3)], name="unbuilt")
    with pytest.raises(ValueError, match="'unbuilt' has no known input shape"):
        build_transfer_model(unbuilt, (8, 8, 1), 3)


def test_rgb_to_grayscale_matches_numpy_luminance():
    images = np.random.rand(3, 5, 5, 3).astype("float32")
    gray = keras.ops.convert_to_numpy(RGBToGrayscale()(images))
    expected = images @ np.array([0.2989, 0.5870, 0.1140], dtype="float32")
    assert gray.shape == (3, 5, 5, 1)
    np.testing.assert_allclose(gray[..., 0], expected, rtol=1e-5)

    with pytest.raises(ValueError, match="received 2"):
        RGBToGrayscale(luminance_weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="3 channels"):
        RGBToGrayscale()(np.zeros((1, 4, 4, 2), "float32"))


def test_grayscale_to_rgb_copies_the_channel():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, grayscale_to_rgb(inputs))
    images = np.random.rand(2, 4, 4, 1).astype("float32")
    np.testing.assert_array_equal(model.predict(images, verbose=0), np.repeat(images, 3, -1))


def test_transfer_model_with_grayscale_round_trips_in_safe_mode(tmp_path):
    model = build_transfer_model(tiny_base((8, 8, 1), batch_norm=True), (16, 16, 3), 3)
    images = np.random.rand(4, 16, 16, 3).astype("float32")
    path = tmp_path / "transfer.keras"
    model.save(path)

    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)

    assert layer_names(reloaded) == layer_names(model)
    assert isinstance(reloaded.get_layer("to_grayscale"), RGBToGrayscale)
    assert isinstance(reloaded.get_layer("base"), keras.Model)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )


def test_frozen_batch_norm_keeps_statistics_and_fit_overrides_base_training():
    """Pins Keras 3 behaviour FreezeLab relies on (see build_transfer_model's docstring)."""
    images = np.random.rand(16, 8, 8, 1).astype("float32")
    labels = np.arange(16) % 2

    def moving_mean_changes(trainable):
        base = tiny_base((8, 8, 1), batch_norm=True)
        model = build_transfer_model(base, (8, 8, 1), 2, base_training=False)
        base.get_layer("batch_norm").trainable = trainable
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        before = base.get_layer("batch_norm").moving_mean.numpy().copy()
        model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
        return not np.array_equal(before, base.get_layer("batch_norm").moving_mean.numpy())

    assert not moving_mean_changes(trainable=False)
    # fit's training=True overrides the base node's training=False in Keras 3.
    assert moving_mean_changes(trainable=True)


def test_cut_base_shares_layers_and_explains_unknown_names():
    classifier = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(2, name="dense"),
        ],
        name="classifier_model",
    )
    features = cut_base(classifier, "pool", name="features")

    assert features.name == "features"
    assert tuple(features.output.shape) == (None, 4)
    assert features.get_layer("conv") is classifier.get_layer("conv")
    with pytest.raises(ValueError, match="no layer named 'missing'") as raised:
        cut_base(classifier, "missing")
    assert "'pool'" in str(raised.value)
