"""Pitfall 5: one base shared by two models: one layer object, one `trainable` flag.

Model A is the lab model (the pretrained base with a new head). Model B puts a second head on a
base: in the wrong run on the very same base object, in the right run on its own copy
(`keras.models.clone_model` + `set_weights`). Both runs freeze the base "for model A", then
unfreeze B's base to fine-tune B, and train model B only. The bitwise check of A's base and A's
predictions say what happened to model A, which nobody trained.

Example:
>>> wrong, right = run(seed=0)
>>> right.verification.all_unchanged
True
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import keras
import numpy as np

from models.bundled import BUNDLED_INPUT_SHAPE
from models.drift import VerificationResult
from models.freezing import set_trainable
from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_NAME,
    BASE_PATH,
    LabRun,
    compile_model,
    copy_values,
    fit_model,
    largest_change,
    moved,
    snapshot_layers,
    task_split,
    verify_layers,
)

SECOND_MODEL_NAME = "second_model"
SECOND_HEAD_NAME = "second_classifier"
SECOND_LEARNING_RATE = 1e-3
SECOND_EPOCHS = 2

PITFALL = Pitfall(
    key="shared_layer",
    number=5,
    title="One base shared by two models",
    explanation=(
        "In Keras, `trainable` belongs to the layer object, not to the model that uses it. "
        "Build two models on the same base object (two heads, or a feature model next to a "
        "classifier) and they share one flag and one set of weights. Freezing the base "
        '"for model A" freezes it for model B too; unfreezing it to fine-tune model B '
        "unfreezes it for A, and training B changes A's base, although nobody trained A."
    ),
    what_to_look_at=(
        "Both runs freeze the base for model A, unfreeze B's base and train only model B "
        "for 2 epochs. The chart and the bitwise check show model A's layers. Left: B uses "
        "the same base object, so A's base moves and A's predictions change. Right: B has "
        "its own copy, and A's base stays bitwise unchanged."
    ),
    fix=(
        "Give each model its own base (`keras.models.clone_model(base)` then "
        "`set_weights(base.get_weights())`) when they must freeze or train differently."
    ),
)


def build_second_model(base: keras.Model, seed: int) -> keras.Model:
    """Builds model B: the lab's image input, `base`, and a new 5-class head of its own.

    Args:
        base: The base object to put under the new head (shared or a copy).
        seed: Seed of the new head's weights.

    Returns:
        An uncompiled Functional model named "second_model".

    Example:
    >>> [layer.name for layer in build_second_model(pretrained_base(), 0).layers]
    ['image', 'feature_extractor', 'second_classifier']
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(BUNDLED_INPUT_SHAPE, name="image")
    outputs = keras.layers.Dense(5, activation="softmax", name=SECOND_HEAD_NAME)(base(inputs))
    return keras.Model(inputs, outputs, name=SECOND_MODEL_NAME)


class BCounts(NamedTuple):
    """Model B's trainable parameter counts (Keras's `trainable_weights`) around A's freeze."""

    before: int
    frozen_with_a: int
    total: int


def _own_copy(base: keras.Model) -> keras.Model:
    """A separate base with the same architecture and weights (no layer object shared)."""
    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    return copy


def _num_params(variables: list[keras.Variable]) -> int:
    return int(sum(np.prod(variable.shape) for variable in variables))


def _predicted_classes(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=1)


def _verdict(verification: VerificationResult, max_change: float, b_counts: BCounts) -> str:
    parts = []
    if b_counts.frozen_with_a < b_counts.before:
        parts.append(
            "Freezing the base for model A froze it in model B too (B's trainable params "
            f"{b_counts.before:,} -> {b_counts.frozen_with_a:,})."
        )
    num_moved, num_checked = len(verification.changed_paths), verification.num_checked
    if num_moved:
        parts.append(
            f"Training model B then moved {num_moved} of {num_checked} layers of A's base "
            f"(max |dW| = {max_change:.4g}), although nobody trained model A."
        )
    else:
        parts.append(
            f"Training model B left all {num_checked} layers of A's frozen base bitwise unchanged."
        )
    return " ".join(parts)


def _measurements(
    verification: VerificationResult,
    max_change: float,
    a_flag: bool,
    changed_predictions: float,
    b_counts: BCounts,
    b_accuracy: float,
) -> tuple[Measurement, ...]:
    num_moved, num_checked = len(verification.changed_paths), verification.num_checked
    return (
        Measurement(
            "A's base layers that moved",
            float(num_moved),
            f"{num_moved} of {num_checked}",
            "Layers of model A's base whose weights or state changed while model B trained.",
        ),
        Measurement(
            "Largest change in A's base",
            max_change,
            f"{max_change:.3g}",
            "max |W_end - W_start| over model A's base; 0 means untouched.",
        ),
        Measurement(
            "A's predictions that changed",
            changed_predictions,
            f"{changed_predictions:.1%}",
            "Held-out images whose class model A predicts differently after B's training.",
        ),
        Measurement(
            "A's base flag at the end",
            float(a_flag),
            "trainable" if a_flag else "frozen",
            f"`trainable` of model A's '{BASE_NAME}' after B's training.",
        ),
        Measurement(
            "B's trainable params after A's freeze",
            float(b_counts.frozen_with_a),
            f"{b_counts.frozen_with_a:,} of {b_counts.total:,}",
            "Keras's `model_b.trainable_weights` right after freezing the base for model A "
            f"({b_counts.before:,} before).",
        ),
        Measurement(
            "B's validation accuracy",
            b_accuracy,
            f"{b_accuracy:.1%}",
            "Model B's accuracy on held-out digits 5-9 after its last epoch.",
        ),
    )


def _variant(seed: int, share: bool) -> VariantResult:
    run = LabRun(seed)
    base = run.tree.layer(BASE_PATH)
    model_b = build_second_model(base if share else _own_copy(base), seed)
    b_base = model_b.get_layer(BASE_NAME)
    before = _num_params(model_b.trainable_weights)
    run.tree.set_frozen(BASE_PATH, True)  # "for model A"
    b_counts = BCounts(before, _num_params(model_b.trainable_weights), _num_params(model_b.weights))
    set_trainable(b_base, True)  # "for model B", to fine-tune it
    snapshot = snapshot_layers(run.tree, run.tree.descendants(BASE_PATH))
    b_base_start = copy_values(b_base.weights)
    x_validation = task_split(seed)[2]
    predictions_before = _predicted_classes(run.model, x_validation)
    compile_model(model_b, SECOND_LEARNING_RATE)
    run.history = fit_model(model_b, seed, epochs=SECOND_EPOCHS, callbacks=[run.recorder])
    verification = verify_layers(snapshot)
    max_change = largest_change(snapshot)
    changed = float(np.mean(_predicted_classes(run.model, x_validation) != predictions_before))
    b_base_moved = any(moved(b_base.weights, b_base_start))
    result = run.result(
        label="Wrong: B shares A's base" if share else "Right: B has its own copy",
        description=(
            f"Froze the base for model A, set {'that same' if share else 'its own'} base "
            f"trainable for model B, trained model B {SECOND_EPOCHS} epochs (B's base "
            f"{'moved' if b_base_moved else 'did not move'}); model A was never trained."
        ),
        status=PROBLEM if verification.changed_paths or b_counts.frozen_with_a < before else FINE,
        verdict=_verdict(verification, max_change, b_counts),
        measurements=_measurements(
            verification,
            max_change,
            run.tree.layer(BASE_PATH).trainable,
            changed,
            b_counts,
            float(run.history["val_accuracy"][-1]),
        ),
        chart_kind="weights",
    )
    # The recorder only checks layers frozen during B's fit; A's base was unfrozen through
    # the shared object in the wrong run, so the proof is the check of A's whole base.
    return dataclasses.replace(result, verification=verification)


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 5: model B on A's very base object, then on its own copy.

    Args:
        seed: Seed of both heads' weights, the data split and the batch order.

    Returns:
        `(wrong, right)`: "Wrong: B shares A's base" and "Right: B has its own copy"; each
        one's `verification` is the bitwise check of model A's base layers.

    Example:
    >>> wrong, right = run(seed=0)
    >>> right.numbers["A's base layers that moved"]
    0.0
    """
    return _variant(seed, share=True), _variant(seed, share=False)
