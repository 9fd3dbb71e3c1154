"""Builds transfer-learning models: input adaptation, a nested pretrained base and a new head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import keras
import numpy as np

from models.layers import (
    PREPROCESSING_MODES,
    ImagenetPreprocessing,
    RGBToGrayscale,
    Uint8Rescaling,
    grayscale_to_rgb,
)
from models.validation import check_whole_number

# Images are resized with bilinear interpolation; when they are made smaller, with
# antialiasing: every input pixel then contributes (a triangle filter as wide as the scale),
# instead of sampling 2x2 pixels per output pixel, which aliases thin strokes and fine
# patterns away. Backend-neutral: JAX, TensorFlow and PyTorch all support it ("area" is
# TensorFlow-only in Keras 3.15).
RESIZE_INTERPOLATION = "bilinear"

TRANSFER_MODEL_NAME = "transfer_model"
"""The name of the model `build_transfer_model` builds (the first part of every layer path)."""

INPUT_DTYPES: tuple[str, ...] = ("float32", "uint8")
"""What a transfer model's image input takes: float32 values in [0, 1], or uint8 pixels 0..255."""

UINT8_LAYER_NAME = "from_uint8"
"""The name of the `Uint8Rescaling` layer a uint8 input gets (see `build_transfer_model`)."""


def _validate_input_dtype(input_dtype: object, data_shape: tuple[int, ...]) -> str:
    """The input dtype as "float32" or "uint8"; uint8 only for images."""
    try:
        dtype = keras.backend.standardize_dtype(input_dtype)
    except (TypeError, ValueError):
        dtype = None
    if dtype not in INPUT_DTYPES:
        raise ValueError(
            f"input_dtype must be one of {list(INPUT_DTYPES)}: 'float32' for values in [0, 1], "
            f"'uint8' for pixels 0..255 (e.g. dataset.x.dtype); received {input_dtype!r}."
        )
    if dtype == "uint8" and len(data_shape) != 3:
        raise ValueError(
            f"input_dtype='uint8' is for images (pixels 0..255), but the data are feature "
            f"vectors of shape {data_shape}. Pass input_dtype='float32' for tabular data."
        )
    return dtype


def _validate_data_input_shape(data_input_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(data_input_shape, str) or not isinstance(data_input_shape, Sequence):
        raise TypeError(
            f"data_input_shape must be a tuple (height, width, channels), e.g. (8, 8, 1), or "
            f"(num_features,) for tabular data; received {data_input_shape!r}."
        )
    shape = tuple(data_input_shape)
    if len(shape) not in (1, 3) or any(
        isinstance(size, bool) or not isinstance(size, Integral) or size < 1 for size in shape
    ):
        raise ValueError(
            f"data_input_shape must be 3 positive integers (height, width, channels), e.g. "
            f"(8, 8, 1), or 1 positive integer (num_features,) for tabular data; received "
            f"{shape!r}."
        )
    return tuple(int(size) for size in shape)


def _base_input_shape(base: keras.Model) -> tuple:
    if not isinstance(base, keras.Model):
        raise TypeError(
            f"base must be a keras.Model (e.g. a Sequential or Functional model); received "
            f"{type(base).__name__}."
        )
    inputs = getattr(base, "inputs", None) if base.built else None
    if not inputs:
        raise ValueError(
            f"base model '{base.name}' has no known input shape: it must be built with an "
            "input, e.g. keras.Sequential([keras.Input((8, 8, 1)), ...]) or a Functional "
            "model. Subclassed models without inputs are not supported."
        )
    if len(inputs) != 1:
        raise ValueError(
            f"base model '{base.name}' must take exactly one image input; it takes "
            f"{len(inputs)} inputs."
        )
    if len(base.outputs) != 1:
        raise ValueError(
            f"base model '{base.name}' must have exactly one output; it has {len(base.outputs)}."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) not in (2, 4):
        raise ValueError(
            f"base model '{base.name}' must take images of shape (batch, height, width, "
            f"channels) or feature vectors of shape (batch, num_features); its input shape is "
            f"{shape}."
        )
    return shape[1:]


def _validate_arguments(
    num_classes: int,
    dropout: float,
    base_training: bool | None,
    rescaling: tuple[float, float] | None,
    preprocessing: str | None,
) -> None:
    check_whole_number(
        "num_classes", num_classes, 2, hint="A classifier needs at least two classes."
    )
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
        raise ValueError(
            f"dropout must be a rate in [0, 1), e.g. 0.2 (0 disables dropout); received "
            f"{dropout!r}."
        )
    if base_training not in (True, False, None):
        raise TypeError(f"base_training must be True, False or None; received {base_training!r}.")
    if rescaling is not None and (
        isinstance(rescaling, str)
        or not isinstance(rescaling, Sequence)
        or len(rescaling) != 2
        or not all(isinstance(value, Real) for value in rescaling)
    ):
        raise ValueError(
            f"rescaling must be None or a pair (scale, offset) of numbers, e.g. (2.0, -1.0); "
            f"received {rescaling!r}."
        )
    if preprocessing is not None and preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"preprocessing must be None or one of {list(PREPROCESSING_MODES)} (the mode of "
            f"the base's keras.applications preprocess_input); received {preprocessing!r}."
        )


def _adapt_images(
    inputs: keras.KerasTensor,
    data_shape: tuple[int, int, int],
    base: keras.Model,
    base_shape: tuple,
) -> keras.KerasTensor:
    height, width, channels = data_shape
    base_height, base_width, base_channels = base_shape
    if base_channels is None:
        raise ValueError(
            f"base model '{base.name}' has an unknown number of input channels; build it "
            "with a fixed channel count, e.g. keras.Input((None, None, 3))."
        )
    needs_grayscale = channels == 3 and base_channels == 1
    needs_rgb = channels == 1 and base_channels == 3
    if channels != base_channels and not (needs_grayscale or needs_rgb):
        raise ValueError(
            f"The base model '{base.name}' expects images with {base_channels} channel(s) "
            f"(input shape {(base_height, base_width, base_channels)}), but the data has "
            f"{channels} channel(s) (shape {(height, width, channels)}). FreezeLab adapts "
            "only 1 <-> 3 channels; convert the data to 1 (grayscale) or 3 (RGB) channels."
        )
    target_height = height if base_height is None else int(base_height)
    target_width = width if base_width is None else int(base_width)

    outputs = inputs
    if needs_grayscale:
        outputs = RGBToGrayscale(name="to_grayscale")(outputs)
    if (target_height, target_width) != (height, width):
        outputs = keras.layers.Resizing(
            target_height,
            target_width,
            interpolation=RESIZE_INTERPOLATION,
            # Antialiasing only changes a dimension that shrinks; upsizing stays plain bilinear.
            antialias=target_height < height or target_width < width,
            name="resize",
        )(outputs)
    if needs_rgb:
        outputs = grayscale_to_rgb(outputs, name="to_rgb")
    return outputs


def _check_features(data_shape: tuple[int, ...], base: keras.Model, base_shape: tuple) -> None:
    if len(data_shape) != len(base_shape):
        if len(base_shape) == 3:
            raise ValueError(
                f"The base model '{base.name}' expects images of shape {base_shape} "
                f"(height, width, channels), but the data are feature vectors of shape "
                f"{data_shape}. Pick a model for tabular data (e.g. the Dense base) or load "
                "an image dataset."
            )
        raise ValueError(
            f"The base model '{base.name}' expects feature vectors of shape {base_shape}, but "
            f"the data are images of shape {data_shape}. Pick an image model (e.g. the bundled "
            "CNN or a keras.applications model) or load a CSV dataset."
        )
    (num_features,) = data_shape
    (base_features,) = base_shape
    if base_features is not None and int(base_features) != num_features:
        raise ValueError(
            f"The base model '{base.name}' expects {base_features} features per sample, but the "
            f"data has {num_features}. Features cannot be resized: use a base built for "
            f"{num_features} features (e.g. dense_base_for_features({num_features}))."
        )


def build_transfer_model(
    base: keras.Model,
    data_input_shape: tuple[int, ...],
    num_classes: int,
    *,
    base_training: bool | None = None,
    dropout: float = 0.2,
    rescaling: tuple[float, float] | None = None,
    preprocessing: str | None = None,
    input_dtype: str | np.dtype = "float32",
    name: str = TRANSFER_MODEL_NAME,
) -> keras.Model:
    """Wraps a pretrained base in a Functional model with a new classification head.

    For images the layers are, in order: `keras.Input(data_input_shape)` named `"image"`
    (of dtype `input_dtype`), `"from_uint8"` when `input_dtype` is uint8 (a weightless
    `Uint8Rescaling`: each batch's pixels become float32 in [0, 1], bitwise as `x / 255` in
    NumPy, so the dataset never needs a float copy), input adaptation only where needed
    (`"to_grayscale"` when the data is RGB and the base
    wants 1 channel, `"resize"` when height/width differ: bilinear, with `antialias=True`
    when the images shrink, so every pixel counts, `"to_rgb"` when the data has 1
    channel and the base wants 3, `"rescale"` when `rescaling` is given, `"preprocess"` when
    `preprocessing` is given), the base itself as ONE nested layer (the same object that was
    passed in, so freezing it or its layers acts on this model), then `"head_pooling"`
    (GlobalAveragePooling2D, only if the base outputs 4-D feature maps), `"head_dropout"`
    (only if `dropout > 0`) and the `"classifier"` Dense softmax layer.

    For tabular data (`data_input_shape=(num_features,)` and a base taking
    `(batch, num_features)`) the input is named `"features"` and no image adaptation is added.

    Args:
        base: A built `keras.Model` with one input: 4-D images of known channel count, or
            2-D feature vectors.
        data_input_shape: Shape of one sample: `(height, width, channels)` for images,
            `(num_features,)` for tabular data.
        num_classes: Number of classes of the new head, at least 2.
        base_training: The `training` argument the base's node is called with: None
            (default: `base(x)`), `False` or `True`. What `False` does during `fit` differs
            between Keras versions (`models.keras_version.VERSION_NOTES["training_false"]`):
            up to Keras 3.15 `fit`'s own flag wins; after 3.15.1 (keras-team/keras#23364)
            `False` wins for the base and for every head layer after it, so a head Dropout
            would drop nothing. FreezeLab therefore calls `base(x)` and keeps
            BatchNormalization in inference mode by freezing it (`trainable = False`): a
            frozen BatchNormalization layer runs in inference mode on every Keras 3 version.
        dropout: Dropout rate before the classifier, in [0, 1); 0 adds no dropout layer.
        rescaling: Optional `(scale, offset)` for a `keras.layers.Rescaling` applied right
            before the base, e.g. `(2.0, -1.0)` to map [0, 1] data to the [-1, 1] range
            keras.applications' MobileNetV2 expects, or `(255.0, 0.0)` for [0, 255].
        preprocessing: Optional mode of an `ImagenetPreprocessing` layer applied right before
            the base (after `rescaling`, if both are given): `"tf"`, `"torch"`, `"caffe"` or
            `"none"`, mapping [0, 1] images exactly as the base family's `preprocess_input`
            maps [0, 255] images. Images only.
        input_dtype: `"float32"` (default) for images in [0, 1] and feature vectors, or
            `"uint8"` for images stored as pixels 0..255 (`dataset.x.dtype` may be passed
            as is). The model then takes uint8 batches only: float images in [0, 1] would
            be cast to uint8 (almost all zeros), so build a float32 model for them.
        name: Name of the returned model.

    Returns:
        An uncompiled Functional `keras.Model`.

    Example:

    >>> base = keras.Sequential(
    ...     [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)], name="base")
    >>> model = build_transfer_model(base, (8, 8, 1), num_classes=5)
    >>> [layer.name for layer in model.layers]
    ['image', 'resize', 'to_rgb', 'base', 'head_pooling', 'head_dropout', 'classifier']
    """
    data_shape = _validate_data_input_shape(data_input_shape)
    base_shape = _base_input_shape(base)
    _validate_arguments(num_classes, dropout, base_training, rescaling, preprocessing)
    input_dtype = _validate_input_dtype(input_dtype, data_shape)

    if len(data_shape) == 3 and len(base_shape) == 3:
        inputs = keras.Input(data_shape, dtype=input_dtype, name="image")
        outputs = inputs
        if input_dtype == "uint8":
            outputs = Uint8Rescaling(name=UINT8_LAYER_NAME)(outputs)
        outputs = _adapt_images(outputs, data_shape, base, base_shape)
    else:
        _check_features(data_shape, base, base_shape)
        if preprocessing is not None:
            raise ValueError(
                f"preprocessing={preprocessing!r} is for images, but the data are feature "
                f"vectors of shape {data_shape}. Pass preprocessing=None for tabular data."
            )
        inputs = keras.Input(data_shape, name="features")
        outputs = inputs
    if rescaling is not None:
        scale, offset = (float(value) for value in rescaling)
        outputs = keras.layers.Rescaling(scale, offset, name="rescale")(outputs)
    if preprocessing is not None:
        outputs = ImagenetPreprocessing(preprocessing, name="preprocess")(outputs)

    # None records no training argument at all: fit's own flag then applies to the base.
    call_arguments = {} if base_training is None else {"training": base_training}
    outputs = base(outputs, **call_arguments)

    feature_rank = len(base.outputs[0].shape)
    if feature_rank == 4:
        outputs = keras.layers.GlobalAveragePooling2D(name="head_pooling")(outputs)
    elif feature_rank != 2:
        outputs = keras.layers.Flatten(name="head_flatten")(outputs)
    if dropout > 0:
        outputs = keras.layers.Dropout(float(dropout), name="head_dropout")(outputs)
    outputs = keras.layers.Dense(int(num_classes), activation="softmax", name="classifier")(outputs)
    return keras.Model(inputs, outputs, name=name)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(size) for size in shape)


@dataclass(frozen=True)
class InputAdaptation:
    """What a transfer model does to an image before its base sees it.

    Attributes:
        data_shape: Shape of one image of the data, `(height, width, channels)`.
        model_shape: Shape of the image the base receives, after adaptation.
        resize: `"none"`, `"downsized"`, `"upsized"` or `"resized"` (one side shrinks, the
            other grows).
        interpolation: The resizing's interpolation (`"bilinear"`), or None without resizing.
        antialias: Whether the resizing antialiases (averages every pixel when shrinking).
    """

    data_shape: tuple[int, int, int]
    model_shape: tuple[int, int, int]
    resize: str
    interpolation: str | None
    antialias: bool

    @property
    def text(self) -> str:
        """One line for the Data step, e.g. "Images 28×28×1 → the model sees 8×8×1 (...)"."""
        data, seen = _shape_text(self.data_shape), _shape_text(self.model_shape)
        if self.data_shape == self.model_shape:
            return f"Images {data}: the model sees them at this size (no resizing)."
        details = []
        if self.antialias:
            details.append(f"{self.resize} with antialiasing")
        elif self.resize == "upsized":
            details.append(f"upsized, {self.interpolation}")
        elif self.resize != "none":
            details.append(f"{self.resize}, {self.interpolation} without antialiasing")
        data_channels, model_channels = self.data_shape[2], self.model_shape[2]
        if data_channels == 1 and model_channels == 3:
            details.append("the gray channel copied to RGB")
        elif data_channels == 3 and model_channels == 1:
            details.append("RGB turned to gray")
        return f"Images {data} → the model sees {seen} ({'; '.join(details)})."


def describe_input_adaptation(model: keras.Model) -> InputAdaptation | None:
    """Describes the resolution a transfer model's base sees next to the data's own.

    Reads the model built by `build_transfer_model`: the image input's shape, and the shape
    of the tensor that reaches the nested base (after `"to_grayscale"`, `"resize"`,
    `"to_rgb"`; rescaling keeps the shape), and the `"resize"` layer's settings.

    Args:
        model: A model from `build_transfer_model`.

    Returns:
        An `InputAdaptation`, or None for tabular data (feature vectors are never adapted).

    Example:

    >>> base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)])
    >>> describe_input_adaptation(build_transfer_model(base, (28, 28, 1), 10)).text
    'Images 28×28×1 → the model sees 8×8×1 (downsized with antialiasing).'
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise TypeError(
            f"model must be a Functional keras.Model from build_transfer_model; received "
            f"{type(model).__name__}."
        )
    data_shape = tuple(model.inputs[0].shape[1:])
    if len(data_shape) != 3 or any(size is None for size in data_shape):
        return None
    model_shape = data_shape
    resizing = None
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # the base: everything before it is adaptation
            break
        if isinstance(layer, keras.layers.InputLayer):
            continue
        model_shape = tuple(layer.output.shape[1:])
        if isinstance(layer, keras.layers.Resizing):
            resizing = layer
    (height, width, _), (new_height, new_width, _) = data_shape, model_shape
    if (new_height, new_width) == (height, width):
        resize = "none"
    elif new_height <= height and new_width <= width:
        resize = "downsized"
    elif new_height >= height and new_width >= width:
        resize = "upsized"
    else:
        resize = "resized"
    return InputAdaptation(
        data_shape=tuple(int(size) for size in data_shape),
        model_shape=tuple(int(size) for size in model_shape),
        resize=resize,
        interpolation=None if resizing is None else str(resizing.interpolation),
        antialias=bool(resizing is not None and resizing.antialias),
    )


def cut_base(model: keras.Model, layer_name: str, name: str = "base") -> keras.Model:
    """Cuts a Functional model at a layer, keeping its inputs up to that layer's output.

    The returned model shares layers and weights with `model` (nothing is copied), which is
    how a pretrained classifier is turned into a feature extractor.

    Args:
        model: A Functional or Sequential `keras.Model` with known inputs.
        layer_name: Name of a top-level layer of `model` whose output ends the new model.
        name: Name of the returned model.

    Returns:
        `keras.Model(model.inputs, model.get_layer(layer_name).output, name=name)`.

    Example:

    >>> features = cut_base(classifier, "feature_extractor", name="features")
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; received {type(model).__name__}.")
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"model '{model.name}' has no known inputs; cut_base needs a Functional or "
            "Sequential model built with keras.Input."
        )
    layer_names = [layer.name for layer in model.layers]
    if layer_name not in layer_names:
        shown = ", ".join(repr(candidate) for candidate in layer_names[-8:])
        more = f" (last 8 of {len(layer_names)})" if len(layer_names) > 8 else ""
        raise ValueError(
            f"model '{model.name}' has no layer named {layer_name!r}; valid names include "
            f"{shown}{more}. Use one of [layer.name for layer in model.layers]."
        )
    return keras.Model(model.inputs, model.get_layer(layer_name).output, name=name)
