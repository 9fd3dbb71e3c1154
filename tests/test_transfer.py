"""Tests for models/transfer.py and models/layers.py: adaptation, nesting, head, save/load."""

import importlib.util

import keras
import numpy as np
import pytest

from models.layers import RGBToGrayscale, Uint8Rescaling, grayscale_to_rgb
from models.transfer import build_transfer_model, cut_base, describe_input_adaptation
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend


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
        ({"num_classes": 1}, ValueError, "`num_classes` must be a whole number >= 2"),
        ({"num_classes": 2.5}, ValueError, "Received: num_classes=2.5"),
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


def test_uint8_images_get_a_weightless_scaling_layer_and_the_same_counts():
    float_model = build_transfer_model(tiny_base((8, 8, 3)), (16, 16, 1), 3)
    uint8_model = build_transfer_model(tiny_base((8, 8, 3)), (16, 16, 1), 3, input_dtype="uint8")
    assert uint8_model.inputs[0].dtype == "uint8"
    assert layer_names(uint8_model) == [
        "image", "from_uint8", "resize", "to_rgb", "base", "head_pooling", "head_dropout",
        "classifier",
    ]  # fmt: skip
    assert layer_names(uint8_model) == ["image", "from_uint8", *layer_names(float_model)[1:]]
    assert not uint8_model.get_layer("from_uint8").weights
    assert LayerTree(uint8_model).totals() == LayerTree(float_model).totals()
    uint8_model.set_weights(float_model.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        uint8_model.predict(pixels, verbose=0),
        float_model.predict(pixels.astype("float32") / 255, verbose=0),
    )
    # A NumPy dtype (dataset.x.dtype) is accepted as is.
    numpy_dtype = build_transfer_model(tiny_base((8, 8, 3)), (8, 8, 3), 3, input_dtype=pixels.dtype)
    assert numpy_dtype.inputs[0].dtype == "uint8"


def test_uint8_rescaling_is_bitwise_numpy_division_and_round_trips(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    scaled = keras.ops.convert_to_numpy(Uint8Rescaling()(pixels))
    np.testing.assert_array_equal(scaled, pixels.astype("float32") / 255)
    # Keras's Rescaling(1 / 255) multiplies, which differs in the last bit for some values.
    multiplied = keras.ops.convert_to_numpy(keras.layers.Rescaling(1 / 255)(scaled * 255))
    np.testing.assert_allclose(multiplied, scaled, rtol=1e-6)

    model = build_transfer_model(tiny_base((8, 8, 1)), (8, 8, 1), 2, input_dtype="uint8")
    path = tmp_path / "uint8.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert isinstance(reloaded.get_layer("from_uint8"), Uint8Rescaling)
    assert reloaded.inputs[0].dtype == "uint8"
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def _trained_on(pixels, labels, input_dtype, *, freeze_base):
    """A transfer model built with seed 0 and trained by a TrainingJob with seed 3."""
    from models.training import TrainingConfig, TrainingJob

    keras.utils.set_random_seed(0)
    base = tiny_base((8, 8, 3), batch_norm=True)
    model = build_transfer_model(base, pixels.shape[1:], 3, input_dtype=input_dtype)
    base.trainable = not freeze_base
    config = TrainingConfig(epochs=2, batch_size=16, validation_fraction=0.25, seed=3)
    job = TrainingJob(model, pixels, labels, config=config, tree=LayerTree(model))
    job.run()
    assert job.progress().state.value == "finished", job.progress().message
    return model, job


@pytest.mark.parametrize("freeze_base", [False, True], ids=["plain_fit", "prefix_cache"])
def test_training_on_uint8_pixels_gives_bitwise_the_weights_of_float_images(freeze_base):
    """uint8 storage + the model's per-batch scaling == float32 storage of x / 255.

    Bitwise, not within a tolerance: `Uint8Rescaling` looks up NumPy's own x / 255 values, so
    the first layer after the input sees the same float32 numbers on both paths and every
    later computation is identical (with `keras.layers.Rescaling(1 / 255)` the weights differ
    by about 6e-8 after two epochs, since it multiplies instead of dividing).
    """
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (60, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(60) % 3
    uint8_model, uint8_job = _trained_on(pixels, labels, "uint8", freeze_base=freeze_base)
    float_model, float_job = _trained_on(
        pixels.astype("float32") / 255, labels, "float32", freeze_base=freeze_base
    )
    assert uint8_job.execution_plan.cached is freeze_base  # the cache predicts on uint8 batches
    assert uint8_job.parameter_counts == float_job.parameter_counts
    float_weights = {weight.path: weight for weight in float_model.weights}
    assert len(uint8_model.weights) == len(float_weights)
    for weight in uint8_model.weights:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(weight),
            keras.ops.convert_to_numpy(float_weights[weight.path]),
            err_msg=weight.path,
        )
    assert uint8_job.history_frame().equals(float_job.history_frame())
    if freeze_base:
        assert uint8_job.verification().all_unchanged  # the proof still holds


@pytest.mark.parametrize(
    ("data_input_shape", "input_dtype", "fragment"),
    [
        ((8, 8, 1), "float64", "input_dtype must be one of ['float32', 'uint8']"),
        ((8, 8, 1), "pixels", "received 'pixels'"),
        ((4,), "uint8", "input_dtype='uint8' is for images"),
    ],
)
def test_bad_input_dtypes_are_explained(data_input_shape, input_dtype, fragment):
    base = tiny_base((8, 8, 1))
    if len(data_input_shape) == 1:
        base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="dense")
    with pytest.raises(ValueError) as raised:
        build_transfer_model(base, data_input_shape, 3, input_dtype=input_dtype)
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


def test_frozen_batch_norm_keeps_statistics_and_base_training_acts_as_in_plain_keras():
    """A frozen BN keeps its statistics on every Keras; what `base_training=False` does to a
    trainable one depends on the version, so it is compared with plain Keras, measured here."""
    images = np.random.rand(16, 8, 8, 1).astype("float32")
    labels = np.arange(16) % 2

    def moving_mean_changes(trainable, base_training, plain_keras=False):
        keras.utils.set_random_seed(0)
        base = tiny_base((8, 8, 1), batch_norm=True)
        if plain_keras:  # the Keras guide's own pattern, no FreezeLab code
            inputs = keras.Input((8, 8, 1))
            features = keras.layers.GlobalAveragePooling2D()(base(inputs, training=base_training))
            model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(features))
        else:
            model = build_transfer_model(base, (8, 8, 1), 2, base_training=base_training)
        base.get_layer("batch_norm").trainable = trainable
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        before = base.get_layer("batch_norm").moving_mean.numpy().copy()
        model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
        return not np.array_equal(before, base.get_layer("batch_norm").moving_mean.numpy())

    for base_training in (None, False):
        assert not moving_mean_changes(trainable=False, base_training=base_training)
    # FreezeLab's default calls base(x): a trainable BN updates during fit on every version.
    assert moving_mean_changes(trainable=True, base_training=None)
    assert moving_mean_changes(trainable=True, base_training=False) == moving_mean_changes(
        trainable=True, base_training=False, plain_keras=True
    )


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


# --------------------------------------------------------------- resizing without aliasing
def checkerboard(size):
    """The finest pattern there is: pixels alternate 0, 1. Its mean is 0.5."""
    return (np.indices((size, size)).sum(axis=0) % 2).astype("float32")


def thin_lines(size, period):
    """One-pixel vertical strokes every `period` pixels (pen strokes at full resolution)."""
    image = np.zeros((size, size), "float32")
    image[:, ::period] = 1.0
    return image


def resized_by_model(image, base_side=8):
    """What the base of a transfer model receives for `image` (the "resize" layer's output)."""
    base = tiny_base((base_side, base_side, 1))
    model = build_transfer_model(base, (*image.shape, 1), num_classes=2)
    adaptation = keras.Model(model.inputs[0], model.get_layer("resize").output)
    return adaptation.predict(image[None, :, :, None], verbose=0)[0, :, :, 0]


def test_downsizing_a_checkerboard_gives_its_mean_not_a_moire():
    # 28x28 (MNIST's size) to the bundled model's 8x8: a factor of 3.5.
    image = checkerboard(28)
    seen = resized_by_model(image)
    assert seen.shape == (8, 8)
    np.testing.assert_allclose(seen, 0.5, atol=0.01)
    # The same resize without antialiasing samples 2x2 pixels per output pixel: a moire.
    aliased = keras.ops.convert_to_numpy(keras.layers.Resizing(8, 8)(image[None, :, :, None]))
    assert np.abs(aliased - 0.5).max() >= 0.1


def test_downsizing_keeps_thin_strokes_as_numpy_block_averaging_does():
    image = thin_lines(64, period=8)  # 64x64 -> 8x8: an integer factor of 8
    reference = image.reshape(8, 8, 8, 8).mean(axis=(1, 3))  # every pixel counts
    seen = resized_by_model(image)
    # Away from the border (where the filter is cut off) it is the block average exactly.
    np.testing.assert_allclose(seen[1:-1, 1:-1], reference[1:-1, 1:-1], atol=1e-5)
    assert seen.min() > 0.05  # no stroke vanishes, at the border either
    # Bilinear without antialiasing reads pixels 3 and 4 of each block: the strokes vanish.
    aliased = keras.ops.convert_to_numpy(keras.layers.Resizing(8, 8)(image[None, :, :, None]))
    np.testing.assert_array_equal(aliased, 0.0)


def test_only_shrinking_resizes_antialias():
    shrink = build_transfer_model(tiny_base((8, 8, 1)), (28, 28, 1), num_classes=2)
    grow = build_transfer_model(tiny_base((32, 32, 1)), (8, 8, 1), num_classes=2)
    assert shrink.get_layer("resize").get_config()["antialias"] is True
    assert grow.get_layer("resize").get_config()["antialias"] is False
    assert shrink.get_layer("resize").interpolation == "bilinear"


ANTIALIAS_SCRIPT = """
import json

import keras
import numpy as np

from models.transfer import build_transfer_model

image = (np.indices((28, 28)).sum(axis=0) % 2).astype("float32")[None, :, :, None]
base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="base")
model = build_transfer_model(base, (28, 28, 1), num_classes=2)
seen = keras.Model(model.inputs[0], model.get_layer("resize").output)(image)
print("RESULT " + json.dumps({"backend": keras.backend.backend(),
                  "values": keras.ops.convert_to_numpy(seen).ravel().tolist()}))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_antialiased_resizing_is_the_same_on_jax():
    result = run_on_backend(ANTIALIAS_SCRIPT, "jax", timeout=300)
    assert result["backend"] == "jax"
    on_tensorflow = resized_by_model(checkerboard(28)).ravel()
    np.testing.assert_allclose(result["values"], on_tensorflow, atol=1e-5)
    np.testing.assert_allclose(result["values"], 0.5, atol=0.01)


@pytest.mark.parametrize(
    ("base_shape", "data_shape", "text"),
    [
        (
            (8, 8, 1),
            (28, 28, 1),
            "Images 28×28×1 → the model sees 8×8×1 (downsized with antialiasing).",
        ),
        (
            (8, 8, 1),
            (32, 32, 3),
            "Images 32×32×3 → the model sees 8×8×1 (downsized with antialiasing; RGB turned "
            "to gray).",
        ),
        (
            (32, 32, 3),
            (8, 8, 1),
            "Images 8×8×1 → the model sees 32×32×3 (upsized, bilinear; the gray channel "
            "copied to RGB).",
        ),
        (
            (8, 8, 3),
            (8, 8, 1),
            "Images 8×8×1 → the model sees 8×8×3 (the gray channel copied to RGB).",
        ),
        (
            (8, 8, 1),
            (8, 8, 1),
            "Images 8×8×1: the model sees them at this size (no resizing).",
        ),
    ],
)
def test_describe_input_adaptation_says_what_the_model_sees(base_shape, data_shape, text):
    model = build_transfer_model(
        tiny_base(base_shape), data_shape, num_classes=2, rescaling=(2.0, -1.0)
    )
    adaptation = describe_input_adaptation(model)
    assert adaptation.data_shape == data_shape and adaptation.model_shape == base_shape
    assert adaptation.text == text


def test_describe_input_adaptation_of_tabular_data_and_bad_input():
    base = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)], name="dense_base")
    assert describe_input_adaptation(build_transfer_model(base, (5,), num_classes=2)) is None
    with pytest.raises(TypeError, match="build_transfer_model; received str"):
        describe_input_adaptation("model")
