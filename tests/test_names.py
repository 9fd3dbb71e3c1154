"""Tests for models/names.py: internal layer names TensorFlow accepts, read back exactly."""

import keras
import numpy as np
import pytest

from models.names import display_name, internal_name, is_safe_name, with_internal_names

# Names Keras accepts (anything without "/") that TensorFlow refuses while training.
UNSAFE_NAMES = [
    "odd names",
    "<img src=x onerror=alert(1)>",
    "",
    "ünï ∑",
    "日本",
    "_hidden",
    "-",
    "a>b",
    'conv"); import os; os.system("echo hacked',
    "tab\there",
    "x" * 120 + " long",
]
SAFE_NAMES = ["conv2d_1", "block_1_expand_BN", "input_layer", "a.b-c", "0"]


def tensorflow_accepts(name: str) -> bool:
    """TensorFlow's own check: `name` as a root and a nested scope of a traced, run function."""
    tf = pytest.importorskip("tensorflow")

    @tf.function
    def double(x):
        with tf.name_scope(name), tf.name_scope(name):
            return tf.identity(x * 2.0, name="out")

    try:
        double(tf.constant(1.0))
    except (ValueError, tf.errors.InvalidArgumentError):
        return False
    return True


@pytest.mark.parametrize("name", UNSAFE_NAMES + SAFE_NAMES)
def test_internal_names_read_back_exactly_and_tensorflow_accepts_them(name):
    internal = internal_name(name)
    assert display_name(internal) == name
    assert tensorflow_accepts(internal)
    assert (internal == name) == is_safe_name(name)


def test_the_reference_check_refuses_the_names_that_break_training():
    for name in ["odd names", "<img src=x onerror=alert(1)>", "_hidden", "ünï"]:
        assert not tensorflow_accepts(name), name


def test_different_names_never_share_an_internal_name():
    names = UNSAFE_NAMES + SAFE_NAMES + [internal_name(name) for name in UNSAFE_NAMES]
    internals = [internal_name(name) for name in names]
    assert len(set(internals)) == len(set(names))


def test_names_that_only_look_internal_are_shown_as_they_are():
    # Not the exact form internal_name writes: shown unchanged.
    for name in ["odd_names>x6f", "odd_names>xzz", "wrong_readable>x6f6464", "a>b", ">x61"]:
        assert display_name(name) == name
    # A name read from a file that already holds an internal name is renamed again, so the
    # display shows the file's own name.
    internal = internal_name("odd names")
    assert display_name(internal_name(internal)) == internal


def test_with_internal_names_keeps_weights_flags_and_outputs_and_trains():
    inputs = keras.Input((6,), name="in put")
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="inner dense")], name="inner model"
    )
    shared = keras.layers.Dense(4, name="sh ared")
    hidden = shared(keras.layers.Dense(4, name="<i odd>")(inputs))
    hidden = shared(inner(hidden))
    hidden = keras.layers.BatchNormalization(name="")(hidden)
    outputs = keras.layers.Dense(2, activation="softmax", name="_out")(hidden)
    model = keras.Model(inputs, outputs, name="odd model")
    model.get_layer("<i odd>").trainable = False

    renamed_model, renamed = with_internal_names(model)

    assert set(renamed) == {
        "odd model",
        "in put",
        "inner model",
        "inner dense",
        "sh ared",
        "<i odd>",
        "",
        "_out",
    }
    layers = renamed_model._flatten_layers(include_self=True, recursive=True)
    assert all(is_safe_name(layer.name) or ">x" in layer.name for layer in layers)
    assert [display_name(layer.name) for layer in renamed_model.layers] == [
        layer.name for layer in model.layers
    ]
    assert not renamed_model.get_layer(renamed["<i odd>"]).trainable
    assert len(renamed_model.weights) == len(model.weights)
    for before, after in zip(model.weights, renamed_model.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(renamed_model(x)))

    renamed_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    renamed_model.fit(x, np.arange(16) % 2, epochs=1, batch_size=8, verbose=0)
    frozen = renamed_model.get_layer(renamed["<i odd>"])
    for before, after in zip(model.get_layer("<i odd>").weights, frozen.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())


def test_a_model_with_safe_names_is_returned_as_it_is():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="ok")
    same, renamed = with_internal_names(model)
    assert same is model and renamed == {}


def test_bad_arguments_are_explained():
    with pytest.raises(TypeError, match="must be a string; received int"):
        internal_name(3)
    with pytest.raises(TypeError, match=r"keras\.Model; received Dense"):
        with_internal_names(keras.layers.Dense(2))
