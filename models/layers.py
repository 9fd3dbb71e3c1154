"""Small custom Keras layers FreezeLab needs, registered so saved models load in safe mode."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

# ITU-R BT.601 luma weights, the same ones tf.image.rgb_to_grayscale and Pillow use.
DEFAULT_LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.2989, 0.5870, 0.1140)


@keras.saving.register_keras_serializable(package="freezelab")
class RGBToGrayscale(keras.layers.Layer):
    """Turns RGB images into one-channel grayscale images, keeping the channel axis.

    Computes a weighted sum of the last (channel) axis: `y = r*w0 + g*w1 + b*w2`, so an input
    of shape `(batch, height, width, 3)` becomes `(batch, height, width, 1)`. The layer has no
    weights and works on every Keras backend (it only uses `keras.ops`).

    Args:
        luminance_weights: Three luminance weights for red, green and blue. Defaults to the
            ITU-R BT.601 weights `(0.2989, 0.5870, 0.1140)`.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Example:

    >>> layer = RGBToGrayscale()
    >>> layer(np.ones((2, 8, 8, 3), "float32")).shape
    (2, 8, 8, 1)
    """

    def __init__(
        self,
        luminance_weights: tuple[float, float, float] | list[float] = DEFAULT_LUMINANCE_WEIGHTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        weights = tuple(float(weight) for weight in luminance_weights)
        if len(weights) != 3:
            raise ValueError(
                f"RGBToGrayscale expects exactly 3 luminance weights (red, green, blue); "
                f"received {len(weights)}: {weights}. Pass e.g. "
                "luminance_weights=(0.2989, 0.587, 0.114)."
            )
        self.luminance_weights = weights

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is not None and channels != 3:
            raise ValueError(
                f"RGBToGrayscale expects inputs with 3 channels on the last axis; received "
                f"shape {tuple(input_shape)} with {channels} channels. Only connect it to RGB "
                "images."
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        weights = ops.convert_to_tensor(self.luminance_weights, dtype=self.compute_dtype)
        inputs = ops.cast(inputs, self.compute_dtype)
        return ops.sum(inputs * weights, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*tuple(input_shape)[:-1], 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"luminance_weights": list(self.luminance_weights)})
        return config


# uint8 pixel -> float32 in [0, 1], exactly as NumPy's `x.astype("float32") / 255` computes it.
_UINT8_TO_UNIT = (np.arange(256, dtype="float32") / np.float32(255.0)).astype("float32")


@keras.saving.register_keras_serializable(package="freezelab")
class Uint8Rescaling(keras.layers.Layer):
    """Maps uint8 pixels (0..255) to float32 values in [0, 1], one batch at a time.

    FreezeLab keeps uploaded images as uint8 (a quarter of float32's memory) and puts this
    layer right after the model's input, so Keras converts each batch as it goes and no float
    copy of the whole dataset is ever made. The result is bitwise what NumPy's
    `x.astype("float32") / 255` gives: the layer looks each value up in a 256-entry table
    computed that way. (A division by 255 inside a compiled graph does not: XLA turns it into
    a multiplication by 1/255, which differs in the last bit for 126 of the 256 values, so
    training would no longer match training on the float images.) No weights, `keras.ops`
    only, so it works on every backend.

    Args:
        **kwargs: Base layer keyword arguments such as `name`.

    Example:

    >>> keras.ops.convert_to_numpy(Uint8Rescaling()(np.array([[0, 51, 255]], "uint8")))
    array([[0. , 0.2, 1. ]], dtype=float32)
    """

    def call(self, inputs: Any) -> Any:
        table = ops.convert_to_tensor(_UINT8_TO_UNIT, dtype="float32")
        values = ops.take(table, ops.cast(inputs, "int32"), axis=0)
        return ops.cast(values, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)


def grayscale_to_rgb(inputs: Any, name: str = "to_rgb") -> Any:
    """Repeats a one-channel image tensor three times along the channel axis.

    Built only from a built-in layer (`keras.layers.Concatenate` of three copies), so models
    that use it need no custom objects and load in safe mode.

    Args:
        inputs: A symbolic Keras tensor of shape `(batch, height, width, 1)`.
        name: Name of the concatenation layer.

    Returns:
        A symbolic tensor of shape `(batch, height, width, 3)`.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> grayscale_to_rgb(inputs).shape
    (None, 8, 8, 3)
    """
    return keras.layers.Concatenate(axis=-1, name=name)([inputs, inputs, inputs])


# What each keras.applications family's `preprocess_input` does to [0, 255] RGB images
# (keras/src/applications/imagenet_utils.py), restated for FreezeLab's [0, 1] images.
PREPROCESSING_MODES: tuple[str, ...] = ("tf", "torch", "caffe", "none")
IMAGENET_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Caffe's BGR channel means, on the [0, 255] scale.
CAFFE_MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="freezelab")
class ImagenetPreprocessing(keras.layers.Layer):
    """Maps [0, 1] RGB images to what a keras.applications model expects.

    FreezeLab keeps every image in [0, 1]. keras.applications models expect the output of their
    family's `preprocess_input` applied to [0, 255] images. For an input `x` in [0, 1] this
    layer returns exactly `preprocess_input(255 * x)` of the family's mode:

    - `"tf"` (MobileNetV2, Xception): `2 * x - 1`, in [-1, 1].
    - `"torch"` (DenseNet): `(x - mean) / std` per channel with ImageNet's mean and std.
    - `"caffe"` (ResNet50, VGG16): RGB -> BGR, then `255 * x - mean` per BGR channel.
    - `"none"`: `255 * x`, for models that normalise inside themselves (EfficientNet,
      ConvNeXt, MobileNetV3), whose `preprocess_input` returns its input unchanged.

    Putting it inside the model means training, drift, prediction and saved files all see the
    same preprocessing. It has no weights and uses only `keras.ops`.

    Args:
        mode: One of `"tf"`, `"torch"`, `"caffe"` or `"none"`.
        **kwargs: Base layer keyword arguments such as `name`.

    Example:

    >>> ImagenetPreprocessing("tf")(np.ones((1, 2, 2, 3), "float32"))[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"ImagenetPreprocessing expects mode to be one of {list(PREPROCESSING_MODES)}; "
                f"received {mode!r}. Use the mode of the model family's preprocess_input, "
                "e.g. 'tf' for MobileNetV2 or 'caffe' for ResNet50."
            )
        self.mode = mode

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if self.mode in ("torch", "caffe") and channels is not None and channels != 3:
            raise ValueError(
                f"ImagenetPreprocessing(mode={self.mode!r}) normalises the 3 RGB channels; "
                f"received inputs of shape {tuple(input_shape)} with {channels} channel(s). "
                "Convert the images to RGB first."
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        inputs = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return inputs * 2.0 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (inputs - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(inputs, axis=-1) * 255.0 - mean
        return inputs * 255.0

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
