"""Pitfall 2: BatchNormalization inside a frozen base, its moving statistics measured three ways.

The base is frozen in every run. The wrong run sets its BatchNormalization layers back to
trainable; the right run keeps them frozen; a third run keeps them trainable but calls the base
as `base(x, training=False)`, the folklore fix, whose effect during `fit` depends on the Keras
version (see `models.keras_version.VERSION_NOTES["training_false"]`): the third run's verdict
is read from its measurement.

Example:
>>> wrong, right, folklore = run(seed=0)
>>> right.numbers["Moving mean change"]
0.0
"""

from __future__ import annotations

import dataclasses

from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_PATH,
    LabRun,
    accuracy_measurement,
    base_drift,
    copy_values,
    max_change,
    moved,
)

PITFALL = Pitfall(
    key="batch_norm",
    number=2,
    title="BatchNormalization inside a frozen base",
    explanation=(
        "A BatchNormalization layer keeps a moving mean and variance. They are "
        "'non-trainable' (no optimizer touches them), yet a BatchNormalization layer "
        "whose flag is trainable updates them on every training batch from the new "
        "data, which shifts the pretrained features. A frozen BatchNormalization "
        "layer runs in inference mode and keeps them exactly. Folklore says calling "
        "the base as `base(x, training=False)` also protects them; whether it does "
        "during `fit` depends on the Keras version. The third run measures it on the "
        "installed Keras."
    ),
    what_to_look_at=(
        "The base is frozen except its BatchNormalization layers in the wrong run; "
        "everything in the base is frozen in the right run. Look at the moving-"
        "statistics chart and the 'moving mean change' number: it moves when the "
        "layers are trainable, is bitwise zero when they are frozen, and the third run "
        "shows what `training=False` does on this Keras."
    ),
    fix=(
        "Freeze the BatchNormalization layers (`layer.trainable = False`), also when "
        "you fine-tune the rest of the base: that holds on every Keras version, whatever "
        "`training=False` does."
    ),
    version_note="training_false",
)


def _verdict(
    num_moved: int, num_layers: int, mean_change: float, base_training: bool | None
) -> str:
    if not num_moved:
        return (
            f"Moving statistics of all {num_layers} BatchNormalization layers are "
            "bitwise unchanged."
        )
    ending = " although the base was called with training=False." if base_training is False else "."
    return (
        f"Moving statistics moved in {num_moved} of {num_layers} "
        f"BatchNormalization layers: max |d moving mean| = {mean_change:.4g}" + ending
    )


def _label(batch_norm_trainable: bool, base_training: bool | None) -> str:
    if not batch_norm_trainable:
        return "Right: BN frozen"
    if base_training is False:  # the outcome decides the prefix (see `run`)
        return "BN trainable, training=False"
    return "Wrong: BN left trainable"


def _variant(seed: int, batch_norm_trainable: bool, base_training: bool | None) -> VariantResult:
    run = LabRun(seed, base_training=base_training)
    run.tree.set_frozen(BASE_PATH, True)
    batch_norm_paths = run.tree.batch_norm_paths()
    if batch_norm_trainable:
        for path in batch_norm_paths:
            run.tree.set_frozen(path, False)
    moving_means = [run.tree.layer(path).moving_mean for path in batch_norm_paths]
    before = copy_values(moving_means)
    history = run.train(epochs=2)
    mean_change = max_change(moving_means, before)
    num_moved = sum(moved(moving_means, before))
    state_change = base_drift(run.recorder.frame(), "state")
    num_layers = len(batch_norm_paths)
    measurements = (
        Measurement(
            "BN layers whose statistics moved",
            float(num_moved),
            f"{num_moved} of {num_layers}",
            "BatchNormalization layers whose moving mean changed during fit.",
        ),
        Measurement(
            "Moving mean change",
            mean_change,
            f"{mean_change:.3g}",
            "max |moving_mean_end - moving_mean_start| over the BatchNormalization layers.",
        ),
        Measurement(
            "Moving statistics drift",
            state_change,
            f"{state_change:.1%}",
            "Largest relative change of a layer's moving mean and variance together.",
        ),
        accuracy_measurement(history),
    )
    call = "base(x, training=False)" if base_training is False else "base(x)"
    trainable_words = (
        ", set its BatchNormalization layers back to trainable" if batch_norm_trainable else ""
    )
    return run.result(
        label=_label(batch_norm_trainable, base_training),
        description=(
            f"Froze the base{trainable_words}, called it as {call}, trained the head 2 epochs."
        ),
        status=PROBLEM if num_moved else FINE,
        verdict=_verdict(num_moved, num_layers, mean_change, base_training),
        measurements=measurements,
        chart_kind="state",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 2: BN trainable, BN frozen, and BN trainable with `training=False`.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right, folklore)`; the folklore run's verdict says when its change equals
        the wrong run's exactly.

    Example:
    >>> wrong, right, folklore = run(seed=0)
    >>> folklore.status  # Keras 3.15.1: fit's training flag wins over training=False
    'problem'
    """
    wrong = _variant(seed, batch_norm_trainable=True, base_training=None)
    right = _variant(seed, batch_norm_trainable=False, base_training=None)
    folklore = _variant(seed, batch_norm_trainable=True, base_training=False)
    prefix = "Also wrong: " if folklore.status == PROBLEM else "Works on this Keras: "
    verdict = folklore.verdict
    if folklore.status == PROBLEM and (
        folklore.numbers["Moving mean change"] == wrong.numbers["Moving mean change"]
    ):
        verdict += " Exactly the same change as without training=False."
    folklore = dataclasses.replace(folklore, label=prefix + folklore.label, verdict=verdict)
    return wrong, right, folklore
