"""The bundled pretrained digits attention model (a tiny Transformer): architecture and loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from models.bundled import (
    BUNDLED_INPUT_SHAPE,
    FEATURE_EXTRACTOR_NAME,
    PRETRAINED_DIGITS,
    load_model_file,
    read_metadata_file,
)
from models.validation import check_whole_number

__all__ = [
    "ATTENTION_METADATA_PATH",
    "ATTENTION_MODEL_NAME",
    "ATTENTION_MODEL_PATH",
    "EMBEDDING_DIM",
    "FEED_FORWARD_DIM",
    "NUM_BLOCKS",
    "NUM_HEADS",
    "NUM_PATCHES",
    "PATCH_SIZE",
    "build_digits_attention",
    "load_attention_base",
    "load_attention_metadata",
    "load_attention_model",
]

ATTENTION_MODEL_PATH = Path(__file__).resolve().with_name("bundled_digits_attention.keras")
ATTENTION_METADATA_PATH = ATTENTION_MODEL_PATH.with_suffix(".json")
ATTENTION_MODEL_NAME = "digits_attention"
PATCH_SIZE = 2  # 2x2 pixel patches: an 8x8 digit is a sequence of 16 tokens of 4 pixels
NUM_PATCHES = (BUNDLED_INPUT_SHAPE[0] // PATCH_SIZE) * (BUNDLED_INPUT_SHAPE[1] // PATCH_SIZE)
EMBEDDING_DIM = 32
NUM_HEADS = 4
NUM_BLOCKS = 2
FEED_FORWARD_DIM = 64

_MISSING_HINT = (
    "It is created by scripts/train_bundled_model.py: run `make bundled` in the repository "
    "root (about a minute, offline), or `python scripts/train_bundled_model.py attention` "
    "for this model alone."
)


def _transformer_block(tokens: keras.KerasTensor, index: int) -> keras.KerasTensor:
    """One pre-norm Transformer block: self-attention then a feed-forward, each residual."""
    prefix = f"block{index}"
    normalized = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm1")(tokens)
    attended = keras.layers.MultiHeadAttention(
        NUM_HEADS, EMBEDDING_DIM // NUM_HEADS, name=f"{prefix}_attention"
    )(normalized, normalized)
    tokens = keras.layers.Add(name=f"{prefix}_add1")([tokens, attended])
    normalized = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm2")(tokens)
    hidden = keras.layers.Dense(FEED_FORWARD_DIM, activation="relu", name=f"{prefix}_dense1")(
        normalized
    )
    hidden = keras.layers.Dense(EMBEDDING_DIM, name=f"{prefix}_dense2")(hidden)
    return keras.layers.Add(name=f"{prefix}_add2")([tokens, hidden])


def build_digits_attention(num_classes: int = len(PRETRAINED_DIGITS)) -> keras.Model:
    """Builds the (untrained) architecture of the bundled digits attention model.

    A tiny Vision Transformer for 8x8x1 digits, made of built-in Keras layers only (so its
    `.keras` file loads in safe mode on every backend without custom objects). Its first layer
    is a nested Functional model named `"feature_extractor"`:

    - `patch_grid`, `patch_order`, `patches` (Reshape, Permute, Reshape): the image becomes a
      sequence of 16 tokens, the 2x2 patches in reading order, 4 pixels each.
    - `patch_embedding`, an `EinsumDense("btp,pd->btd", bias_axes="td")`: its kernel (4x32)
      projects every patch; its bias has one 32-vector per token, so it IS the learned
      position embedding (a Dense bias would be shared by all tokens).
    - Two pre-norm Transformer blocks `block1`, `block2`: LayerNormalization ->
      MultiHeadAttention (4 heads of size 8; its query, key, value and output projections are
      EinsumDense layers) -> Add, then LayerNormalization -> Dense(64, relu) -> Dense(32) -> Add.
    - `final_norm` (LayerNormalization) and `global_pool` (GlobalAveragePooling1D) give a
      32-dimensional feature vector.

    A Dense softmax layer named `"classifier"` follows. Every projection is a Dense or
    EinsumDense layer, so `layer.enable_lora(rank)` works on each.

    Args:
        num_classes: Number of output classes, at least 2.

    Returns:
        An uncompiled Functional `keras.Model` named `"digits_attention"`.

    Example:

    >>> model = build_digits_attention()
    >>> model.get_layer("feature_extractor").output.shape
    (None, 32)
    """
    check_whole_number(
        "num_classes", num_classes, 2, hint="A classifier needs at least two classes."
    )
    height, width, channels = BUNDLED_INPUT_SHAPE
    rows, columns = height // PATCH_SIZE, width // PATCH_SIZE
    image = keras.Input(BUNDLED_INPUT_SHAPE, name="features_input")
    grid = keras.layers.Reshape(
        (rows, PATCH_SIZE, columns, PATCH_SIZE * channels), name="patch_grid"
    )(image)
    grid = keras.layers.Permute((1, 3, 2, 4), name="patch_order")(grid)
    patches = keras.layers.Reshape(
        (NUM_PATCHES, PATCH_SIZE * PATCH_SIZE * channels), name="patches"
    )(grid)
    tokens = keras.layers.EinsumDense(
        "btp,pd->btd",
        output_shape=(NUM_PATCHES, EMBEDDING_DIM),
        bias_axes="td",
        name="patch_embedding",
    )(patches)
    for index in range(1, NUM_BLOCKS + 1):
        tokens = _transformer_block(tokens, index)
    tokens = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(tokens)
    features = keras.layers.GlobalAveragePooling1D(name="global_pool")(tokens)
    feature_extractor = keras.Model(image, features, name=FEATURE_EXTRACTOR_NAME)

    inputs = keras.Input(BUNDLED_INPUT_SHAPE, name="image")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(
        feature_extractor(inputs)
    )
    return keras.Model(inputs, outputs, name=ATTENTION_MODEL_NAME)


def load_attention_model() -> keras.Model:
    """Loads the bundled pretrained digits attention model from its `.keras` file.

    Loads `models/bundled_digits_attention.keras` in safe mode and without compiling (no
    network, no custom objects). Every call returns a new, independent model.

    Returns:
        The uncompiled `"digits_attention"` model, pretrained on digits 0-4.

    Raises:
        FileNotFoundError: When the file is missing; the message says how to recreate it.

    Example:

    >>> model = load_attention_model()
    >>> model.get_layer("feature_extractor").get_layer("block1_attention").num_heads
    4
    """
    return load_model_file(ATTENTION_MODEL_PATH, _MISSING_HINT)


def load_attention_metadata() -> dict[str, Any]:
    """Reads how the bundled attention model was trained and how well it did.

    Returns:
        The contents of `models/bundled_digits_attention.json`: seed, epochs, split sizes,
        `validation_accuracy`, architecture sizes, Keras version and other settings.

    Raises:
        FileNotFoundError: When the file is missing; the message says how to recreate it.

    Example:

    >>> load_attention_metadata()["validation_accuracy"] >= 0.9
    True
    """
    return read_metadata_file(ATTENTION_METADATA_PATH, _MISSING_HINT)


def load_attention_base() -> keras.Model:
    """Loads a fresh copy of the bundled attention model's pretrained feature extractor.

    Returns:
        The nested `"feature_extractor"` Functional model of a newly loaded attention model:
        8x8x1 images in, a 32-dimensional feature vector out, with pretrained weights.

    Example:

    >>> load_attention_base().output.shape
    (None, 32)
    """
    return load_attention_model().get_layer(FEATURE_EXTRACTOR_NAME)
