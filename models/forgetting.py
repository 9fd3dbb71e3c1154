"""Forgetting: how well a fine-tuned bundled base still does the task it was pretrained on.

Both bundled bases were pretrained on digits 0-4 with a classifier on top. After fine-tuning on
a new task (digits 5-9 by default), FreezeLab puts that original classifier back on the base
and measures its accuracy on the bundled digits 0-4 in inference mode. The untouched base
scores what it did before fine-tuning; a base whose features were overwritten scores much less
("catastrophic forgetting"). Only bundled bases have a pretraining task FreezeLab knows; for any
other base the measure is None.

Example:
>>> pretraining_task_accuracy(workspace.template.key, workspace.tree.layer(workspace.base_path))
0.98
"""

from __future__ import annotations

import functools

import keras
import numpy as np

from models.catalogue import BUNDLED_MODEL_KEYS, load_pretrained_model
from models.datasets import load_bundled_dataset
from models.template import ModelKind, parse_model_key

PRETRAINING_TASK = "digits_0_4"
"""The bundled dataset both bundled bases were pretrained on."""

CLASSIFIER_NAME = "classifier"
"""The name of the bundled models' original classifier layer."""


@functools.lru_cache(maxsize=len(BUNDLED_MODEL_KEYS))
def _pretraining_task(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The task's images and labels and the bundled model's own classifier kernel and bias
    (read once per process per base, read-only)."""
    kernel, bias = (
        np.array(weight, copy=True)
        for weight in load_pretrained_model(key).get_layer(CLASSIFIER_NAME).get_weights()
    )
    data = load_bundled_dataset(PRETRAINING_TASK)
    arrays = (np.array(data.x, copy=True), np.array(data.y, copy=True), kernel, bias)
    for array in arrays:
        array.flags.writeable = False
    return arrays


def pretraining_task_accuracy(template_key: str, base: keras.layers.Layer) -> float | None:
    """The accuracy of `base` with its original classifier on the task it was pretrained on.

    Args:
        template_key: The workspace's model key (`ModelTemplate.key`).
        base: The base as it is now (fine-tuned or not; LoRA adapters count, as the base
            computes with them).

    Returns:
        Accuracy in [0, 1] on every bundled digit 0-4, or None when the base is not a bundled
        one (no known pretraining task).

    Raises:
        ValueError: When `template_key` is not a model key.
    """
    key = parse_model_key(template_key)
    if key.kind is not ModelKind.BUNDLED:
        return None
    x, y, kernel, bias = _pretraining_task(key.catalogue_key)
    features = np.asarray(keras.ops.convert_to_numpy(base(x, training=False)))
    if features.shape[-1] != kernel.shape[0]:
        return None  # not the bundled base's features (a changed architecture)
    predictions = np.argmax(features @ kernel + bias, axis=1)
    return float(np.mean(predictions == y))
