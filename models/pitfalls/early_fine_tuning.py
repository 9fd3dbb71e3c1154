"""Pitfall 3: fine-tuning the whole base too early with a high learning rate, against the recipe.

The wrong run trains base and new head together from the start at a high learning rate. The
right run follows the transfer-learning recipe, `two_phase_fine_tune` (also used by the lessons
page): head first on a frozen base, then the base unfrozen (BatchNormalization kept frozen) at
a low learning rate. Both report base drift and how much of digits 0-4 the base still knows.

Example:
>>> wrong, right = run(seed=0)
>>> wrong.numbers["Base drift"] > right.numbers["Base drift"]
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import keras

from models.drift import DriftRecorder
from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_NAME,
    BASE_PATH,
    HEAD_LEARNING_RATE,
    LabRun,
    accuracy_measurement,
    base_drift,
    original_task_accuracy,
)
from models.tree import LayerTree

EARLY_LEARNING_RATE = 1e-2
FINE_TUNE_LEARNING_RATE = 1e-3
EARLY_EPOCHS = 4
HEAD_EPOCHS = 2
FINE_TUNE_EPOCHS = 2

PhaseCallback = Callable[[str, LayerTree, DriftRecorder, dict[str, list[float]]], None]

PITFALL = Pitfall(
    key="early_fine_tuning",
    number=3,
    title="Fine-tuning the whole base too early, with a high learning rate",
    explanation=(
        "A new head starts from random weights, so its first gradients are large and "
        "noisy. If the pretrained base is trainable from the start, with a high "
        "learning rate, those gradients flow into the base and overwrite what it "
        "learned before. The recipe: freeze the base, train the head until it "
        "converges, then unfreeze the base and fine-tune with a low learning rate "
        "(BatchNormalization layers kept frozen)."
    ),
    what_to_look_at=(
        "Compare 'base drift' (how far the pretrained weights moved, as a fraction of "
        "their size) and 'digits 0-4 still recognised' (the base with its original "
        "classifier on the digits it was pretrained on: how much it still knows). "
        "Honest note: this base is tiny and digits 5-9 are plentiful and easy, so the "
        "wrong way may even reach a HIGHER accuracy on the new task here; the damage "
        "shows as drift and forgetting. With a large pretrained model and little data, "
        "that damage usually costs accuracy on the new task too."
    ),
    fix=(
        "Train the head with the base frozen first; then unfreeze and fine-tune with "
        "a learning rate 10-100 times lower."
    ),
)


def _train_in_two_phases(
    run: LabRun,
    head_epochs: int,
    fine_tune_epochs: int,
    head_learning_rate: float,
    fine_tune_learning_rate: float,
    on_phase_end: PhaseCallback | None,
) -> None:
    """Phase "head" on a frozen base, then phase "fine_tune" with BatchNormalization frozen."""
    run.tree.set_frozen(BASE_PATH, True)
    head_history = run.train(head_epochs, head_learning_rate)
    if on_phase_end is not None:
        on_phase_end("head", run.tree, run.recorder, head_history)
    run.tree.set_frozen(BASE_PATH, False)
    run.tree.freeze_batch_norm()
    fine_history = run.train(fine_tune_epochs, fine_tune_learning_rate)
    if on_phase_end is not None:
        on_phase_end("fine_tune", run.tree, run.recorder, fine_history)


def two_phase_fine_tune(
    seed: int,
    head_epochs: int = HEAD_EPOCHS,
    fine_tune_epochs: int = FINE_TUNE_EPOCHS,
    head_learning_rate: float = HEAD_LEARNING_RATE,
    fine_tune_learning_rate: float = FINE_TUNE_LEARNING_RATE,
    on_phase_end: PhaseCallback | None = None,
) -> tuple[keras.Model, LayerTree, DriftRecorder, dict[str, list[float]]]:
    """Runs the transfer-learning recipe: train the head on a frozen base, then fine-tune.

    Phase 1 freezes the base and trains the new head. Phase 2 unfreezes the base but keeps its
    BatchNormalization layers frozen (inference mode), recompiles with a low learning rate and
    trains again. One `DriftRecorder` measures both phases from the same starting weights.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.
        head_epochs: Epochs of phase 1.
        fine_tune_epochs: Epochs of phase 2.
        head_learning_rate: Learning rate of phase 1.
        fine_tune_learning_rate: Learning rate of phase 2.
        on_phase_end: Optional `callback(phase, tree, recorder, history)` after each phase
            ("head", then "fine_tune"); `tree.model` is the model.

    Returns:
        `(model, tree, recorder, history)`, the history of both phases concatenated.

    Example:
    >>> model, tree, recorder, history = two_phase_fine_tune(0)
    >>> len(history["val_accuracy"])
    4
    """
    run = LabRun(seed)
    _train_in_two_phases(
        run,
        head_epochs,
        fine_tune_epochs,
        head_learning_rate,
        fine_tune_learning_rate,
        on_phase_end,
    )
    return run.model, run.tree, run.recorder, run.history


def _measurements(run: LabRun, history: Mapping[str, list[float]]) -> tuple[Measurement, ...]:
    weights_drift = base_drift(run.recorder.frame(), "weights")
    remembered = original_task_accuracy(run.model.get_layer(BASE_NAME))
    return (
        Measurement(
            "Base drift",
            weights_drift,
            f"{weights_drift:.1%}",
            "Largest relative change ||W_end - W_start|| / ||W_start|| over the base's layers.",
        ),
        Measurement(
            "Digits 0-4 still recognised",
            remembered,
            f"{remembered:.1%}",
            "Accuracy of the base with its ORIGINAL classifier on the digits it was pretrained "
            "on (100% before training): how much pretrained knowledge survived.",
        ),
        accuracy_measurement(history),
    )


def _verdict(measurements: tuple[Measurement, ...]) -> str:
    drift_value, remembered, accuracy = (m.value for m in measurements)
    return (
        f"Base moved {drift_value:.1%}; it still recognises {remembered:.1%} of the digits 0-4 "
        f"it was pretrained on; new task (5-9) accuracy {accuracy:.1%}."
    )


def _early_variant(seed: int) -> VariantResult:
    run = LabRun(seed)
    history = run.train(EARLY_EPOCHS, EARLY_LEARNING_RATE)
    measurements = _measurements(run, history)
    return run.result(
        label=f"Wrong: whole base trainable from the start, lr {EARLY_LEARNING_RATE:g}",
        description=(
            f"Base and new head trained together from the start, learning rate "
            f"{EARLY_LEARNING_RATE:g}, {EARLY_EPOCHS} epochs."
        ),
        status=PROBLEM,
        verdict=_verdict(measurements),
        measurements=measurements,
        chart_kind="weights",
    )


def _careful_variant(seed: int) -> VariantResult:
    run = LabRun(seed)
    _train_in_two_phases(
        run,
        HEAD_EPOCHS,
        FINE_TUNE_EPOCHS,
        HEAD_LEARNING_RATE,
        FINE_TUNE_LEARNING_RATE,
        on_phase_end=None,
    )
    measurements = _measurements(run, run.history)
    return run.result(
        label=f"Right: head first, then fine-tune at lr {FINE_TUNE_LEARNING_RATE:g}",
        description=(
            f"Base frozen, head trained {HEAD_EPOCHS} epochs at {HEAD_LEARNING_RATE:g}; then "
            f"base unfrozen (BatchNormalization kept frozen), recompiled, {FINE_TUNE_EPOCHS} "
            f"epochs at {FINE_TUNE_LEARNING_RATE:g}."
        ),
        status=FINE,
        verdict=_verdict(measurements),
        measurements=measurements,
        chart_kind="weights",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 3: early high-rate fine-tuning against the two-phase recipe.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right)`. The wrong run's status is computed: "fine" if, for this seed, it did
        not move the base more than the recipe did.

    Example:
    >>> wrong, right = run(seed=0)
    >>> len(right.history["val_accuracy"])
    4
    """
    wrong = _early_variant(seed)
    right = _careful_variant(seed)
    if wrong.numbers["Base drift"] <= right.numbers["Base drift"]:
        # Computed, not assumed: a seed that does not show the effect is reported as such.
        wrong = dataclasses.replace(wrong, status=FINE)
    return wrong, right
