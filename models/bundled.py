"""The bundled pretrained digits CNN, its default use, and the loaders all bundled models share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras

from models.transfer import build_transfer_model
from models.validation import check_whole_number

__all__ = [
    "BUNDLED_INPUT_SHAPE",
    "BUNDLED_METADATA_PATH",
    "BUNDLED_MODEL_NAME",
    "BUNDLED_MODEL_PATH",
    "FEATURE_EXTRACTOR_NAME",
    "PRETRAINED_DIGITS",
    "build_default_transfer_model",
    "build_digits_cnn",
    "load_bundled_base",
    "load_bundled_metadata",
    "load_bundled_model",
    "load_model_file",
    "read_metadata_file",
]

BUNDLED_MODEL_PATH = Path(__file__).resolve().with_name("bundled_digits_cnn.keras")
BUNDLED_METADATA_PATH = BUNDLED_MODEL_PATH.with_suffix(".json")
BUNDLED_MODEL_NAME = "digits_cnn"
FEATURE_EXTRACTOR_NAME = "feature_extractor"
BUNDLED_INPUT_SHAPE: tuple[int, int, int] = (8, 8, 1)
PRETRAINED_DIGITS: tuple[int, ...] = (0, 1, 2, 3, 4)

_MISSING_HINT = (
    "It is created by scripts/train_bundled_model.py: run `make bundled` in the repository "
    "root (about a minute, offline)."
)


def load_model_file(path: Path, hint: str = _MISSING_HINT) -> keras.Model:
    """Loads a bundled `.keras` file offline, in safe mode and without compiling.

    Args:
        path: The `.keras` file.
        hint: What to do when the file is missing (ends the error message).

    Returns:
        A new, independent, uncompiled model.

    Raises:
        FileNotFoundError: When `path` is not a file; the message says how to recreate it.

    Example:

    >>> load_model_file(BUNDLED_MODEL_PATH).name
    'digits_cnn'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The bundled model file {path} is missing. {hint}")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def read_metadata_file(path: Path, hint: str = _MISSING_HINT) -> dict[str, Any]:
    """Reads a bundled model's `.json` metadata: how it was trained and how well it did.

    Args:
        path: The `.json` file.
        hint: What to do when the file is missing (ends the error message).

    Returns:
        The metadata as a dict.

    Raises:
        FileNotFoundError: When `path` is not a file; the message says how to recreate it.

    Example:

    >>> read_metadata_file(BUNDLED_METADATA_PATH)["digits"]
    [0, 1, 2, 3, 4]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The bundled model metadata {path} is missing. {hint}")
    with path.open(encoding="utf-8") as metadata_file:
        return json.load(metadata_file)


def build_digits_cnn(num_classes: int = len(PRETRAINED_DIGITS)) -> keras.Model:
    """Builds the (untrained) architecture of the bundled digits CNN.

    The model takes 8x8x1 images. Its first layer is a nested `keras.Sequential` named
    `"feature_extractor"` of three Conv2D -> BatchNormalization -> ReLU blocks (16, 32 and 32
    filters, a 2x2 max pooling to 4x4 before the third; BatchNormalization momentum 0.9)
    ending in GlobalAveragePooling2D, so it outputs a 32-dimensional feature vector. A Dense
    softmax layer named `"classifier"` follows.

    Args:
        num_classes: Number of output classes, at least 2.

    Returns:
        An uncompiled Functional `keras.Model` named `"digits_cnn"`.

    Example:

    >>> model = build_digits_cnn()
    >>> model.get_layer("feature_extractor").output.shape
    (None, 32)
    """
    check_whole_number(
        "num_classes", num_classes, 2, hint="A classifier needs at least two classes."
    )

    def conv_block(filters: int, index: int) -> list[keras.layers.Layer]:
        return [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}"),
            # momentum 0.9: with ~23 steps an epoch the moving statistics settle within
            # a few epochs (Keras's 0.99 needs hundreds of steps on this small dataset).
            keras.layers.BatchNormalization(momentum=0.9, name=f"batch_norm{index}"),
            keras.layers.ReLU(name=f"relu{index}"),
        ]

    feature_extractor = keras.Sequential(
        [
            keras.Input(BUNDLED_INPUT_SHAPE, name="features_input"),
            *conv_block(16, 1),
            *conv_block(32, 2),
            keras.layers.MaxPooling2D(2, name="pool"),
            *conv_block(32, 3),
            keras.layers.GlobalAveragePooling2D(name="global_pool"),
        ],
        name=FEATURE_EXTRACTOR_NAME,
    )
    inputs = keras.Input(BUNDLED_INPUT_SHAPE, name="image")
    features = feature_extractor(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(features)
    return keras.Model(inputs, outputs, name=BUNDLED_MODEL_NAME)


def load_bundled_model() -> keras.Model:
    """Loads the bundled pretrained digits CNN from `models/bundled_digits_cnn.keras`.

    Loads in safe mode and without compiling, from the file in the repository (no network).
    Every call returns a new, independent model, so freezing or training it never affects
    another caller.

    Returns:
        The uncompiled `"digits_cnn"` model, pretrained on digits 0-4.

    Example:

    >>> model = load_bundled_model()
    >>> model.get_layer("feature_extractor").name
    'feature_extractor'
    """
    return load_model_file(BUNDLED_MODEL_PATH)


def load_bundled_metadata() -> dict[str, Any]:
    """Reads how the bundled model was trained and how well it did.

    Returns:
        The contents of `models/bundled_digits_cnn.json`: seed, epochs, split sizes,
        `validation_accuracy`, Keras version and other settings.

    Example:

    >>> load_bundled_metadata()["validation_accuracy"] >= 0.9
    True
    """
    return read_metadata_file(BUNDLED_METADATA_PATH)


def load_bundled_base() -> keras.Model:
    """Loads a fresh copy of the bundled model's pretrained feature extractor.

    Returns:
        The nested `"feature_extractor"` Sequential of a newly loaded bundled model: 8x8x1
        images in, a 32-dimensional feature vector out, with pretrained weights.

    Example:

    >>> base = load_bundled_base()
    >>> base.output.shape
    (None, 32)
    """
    return load_bundled_model().get_layer(FEATURE_EXTRACTOR_NAME)


def build_default_transfer_model(
    num_classes: int = 5,
    *,
    dropout: float = 0.2,
    base_training: bool | None = None,
    name: str = "transfer_model",
) -> keras.Model:
    """Builds FreezeLab's default transfer model: the bundled feature extractor plus a new head.

    The pretrained feature extractor (8x8x1 digits) is ONE nested layer of the result, so the
    layer tree shows it as a node whose BatchNormalization and Conv2D layers can be frozen one
    by one. The model is meant for the default task, digits 5-9.

    Args:
        num_classes: Number of classes of the new head, at least 2.
        dropout: Dropout rate before the classifier, in [0, 1).
        base_training: Passed to `build_transfer_model` (see its caveat for Keras 3).
        name: Name of the returned model.

    Returns:
        An uncompiled Functional `keras.Model` for 8x8x1 inputs.

    Example:

    >>> model = build_default_transfer_model(num_classes=5)
    >>> [layer.name for layer in model.layers]
    ['image', 'feature_extractor', 'head_dropout', 'classifier']
    """
    return build_transfer_model(
        load_bundled_base(),
        BUNDLED_INPUT_SHAPE,
        num_classes,
        base_training=base_training,
        dropout=dropout,
        name=name,
    )
