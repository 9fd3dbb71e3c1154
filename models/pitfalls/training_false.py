"""Pitfall 8: `base(x, training=False)` while fine-tuning: the base's BatchNorm and a head Dropout.

The Keras transfer-learning guide calls its base as `base(x, training=False)` so that its
BatchNormalization layers stay in inference mode when the base is unfrozen for fine-tuning,
and puts a Dropout in the head. What that call really does during `fit` changed between Keras
releases (`models.keras_version.VERSION_NOTES["training_false"]`), for the base's
BatchNormalization AND for the layers after it. Both runs fine-tune the whole pretrained base
with a head Dropout(0.5) whose probe measures the share of its inputs it zeroed during `fit`:

- the wrong run relies on `base(x, training=False)`, BatchNormalization left trainable;
- the right run calls `base(x)` and freezes the BatchNormalization layers, which keeps them in
  inference mode on every Keras version and leaves the head's Dropout alone.

Example:
>>> wrong, right = run(seed=0)
>>> right.numbers["Moving mean change"], round(right.numbers["Head Dropout zeroed"], 1)
(0.0, 0.5)
"""

from __future__ import annotations

import keras
import numpy as np

from models.bundled import BUNDLED_INPUT_SHAPE
from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    MODEL_NAME,
    LabRun,
    accuracy_measurement,
    copy_values,
    max_change,
    moved,
    pretrained_base,
)

DROPOUT_RATE = 0.5
FINE_TUNE_LEARNING_RATE = 1e-3
EPOCHS = 2
# A working Dropout(0.5) zeroes about half its inputs; below this share it is called off.
WORKING_DROPOUT_SHARE = 0.25

PITFALL = Pitfall(
    key="training_false",
    number=8,
    title="`base(x, training=False)` while fine-tuning: the base's BatchNorm and a head Dropout",
    explanation=(
        "The Keras guide builds its transfer model as `base(inputs, training=False)` with a "
        "Dropout in the head, so that the base's BatchNormalization layers stay in inference "
        "mode when the base is later unfrozen for fine-tuning. What that call does during "
        "`fit` has changed between Keras releases, for the base's BatchNormalization and for "
        "every layer called after it, such as the head's Dropout. Both runs fine-tune the "
        "whole pretrained base; a probe in the head measures how much its Dropout(0.5) "
        "really dropped during `fit`."
    ),
    what_to_look_at=(
        "'Moving mean change' (the base's BatchNormalization statistics: 0 means they were "
        "kept) and 'Head Dropout zeroed' (about 50% means the Dropout works; 0% means it was "
        "silently switched off) in both runs, on the Keras shown below the results."
    ),
    fix=(
        "Freeze the BatchNormalization layers (`layer.trainable = False`) and call the base "
        "without `training=False`: BatchNorm then stays in inference mode on every Keras "
        "version, and the head's Dropout keeps dropping during `fit`."
    ),
    version_note="training_false",
)


@keras.saving.register_keras_serializable(package="freezelab_pitfalls")
class DropoutProbe(keras.layers.Layer):
    """A Dropout that records the share of its non-zero inputs it zeroed in its last call.

    Args:
        rate: The Dropout rate.
        **kwargs: Base layer arguments (e.g. `name`).

    Example:
    >>> probe = DropoutProbe(0.5)
    >>> _ = probe(np.ones((4, 100), "float32"), training=True)
    >>> round(float(probe.zeroed.numpy()), 1)
    0.5
    """

    def __init__(self, rate: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.dropout = keras.layers.Dropout(self.rate)
        self.zeroed = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="zeroed_share"
        )

    def call(self, inputs, training=None):
        outputs = self.dropout(inputs, training=training)
        nonzero = keras.ops.not_equal(inputs, 0)
        dropped = keras.ops.logical_and(nonzero, keras.ops.equal(outputs, 0))
        count = keras.ops.maximum(keras.ops.sum(keras.ops.cast(nonzero, "float32")), 1.0)
        self.zeroed.assign(keras.ops.sum(keras.ops.cast(dropped, "float32")) / count)
        return outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


def build_probe_model(seed: int, base_training: bool | None) -> keras.Model:
    """The pretrained base (called with `base_training`), a `DropoutProbe`, a new classifier.

    Args:
        seed: Seed of the head's weights (the same for both runs).
        base_training: `False` to call the base as `base(x, training=False)`; None for
            `base(x)`.

    Returns:
        An uncompiled model named "transfer_model".
    """
    base = pretrained_base()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(BUNDLED_INPUT_SHAPE, name="image")
    features = base(inputs, training=base_training) if base_training is False else base(inputs)
    dropped = DropoutProbe(DROPOUT_RATE, name="head_dropout")(features)
    outputs = keras.layers.Dense(5, activation="softmax", name="classifier")(dropped)
    return keras.Model(inputs, outputs, name=MODEL_NAME)


class _DropoutWatch(keras.callbacks.Callback):
    """Reads the probe's zeroed share after every training batch (validation never counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.shares: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        probe = self.model.get_layer("head_dropout")
        self.shares.append(float(np.asarray(probe.zeroed.numpy())))


def _verdict(num_moved: int, num_layers: int, mean_change: float, zeroed: float) -> str:
    if num_moved:
        batch_norm = (
            f"BatchNormalization statistics moved in {num_moved} of {num_layers} layers "
            f"(max |d moving mean| = {mean_change:.3g})"
        )
    else:
        batch_norm = f"BatchNormalization statistics of all {num_layers} layers bitwise kept"
    working = zeroed >= WORKING_DROPOUT_SHARE
    dropout = f"the head Dropout({DROPOUT_RATE:g}) zeroed {zeroed:.1%} of its inputs" + (
        "" if working else ": it was switched off"
    )
    return f"{batch_norm}; {dropout}."


def _variant(seed: int, rely_on_training_false: bool) -> VariantResult:
    model = build_probe_model(seed, base_training=False if rely_on_training_false else None)
    run = LabRun(seed, model=model)
    batch_norm_paths = run.tree.batch_norm_paths()
    if not rely_on_training_false:
        for path in batch_norm_paths:
            run.tree.set_frozen(path, True)
    moving_means = [run.tree.layer(path).moving_mean for path in batch_norm_paths]
    before = copy_values(moving_means)
    watch = _DropoutWatch()
    history = run.train(epochs=EPOCHS, learning_rate=FINE_TUNE_LEARNING_RATE, callbacks=[watch])
    num_moved = sum(moved(moving_means, before))
    mean_change = max_change(moving_means, before)
    zeroed = float(np.mean(watch.shares)) if watch.shares else 0.0
    problem = num_moved > 0 or zeroed < WORKING_DROPOUT_SHARE
    num_layers = len(batch_norm_paths)
    measurements = (
        Measurement(
            "Moving mean change",
            mean_change,
            f"{mean_change:.3g}",
            "max |moving_mean_end - moving_mean_start| over the base's BatchNormalization "
            "layers; 0 means inference mode was kept.",
        ),
        Measurement(
            "BN layers whose statistics moved",
            float(num_moved),
            f"{num_moved} of {num_layers}",
            "BatchNormalization layers of the base whose moving mean changed during fit.",
        ),
        Measurement(
            "Head Dropout zeroed",
            zeroed,
            f"{zeroed:.1%}",
            f"Share of its non-zero inputs the head's Dropout({DROPOUT_RATE:g}) set to zero, "
            "averaged over the training batches: about 50% when it works, 0% when off.",
        ),
        accuracy_measurement(history),
    )
    if rely_on_training_false:
        label = "Wrong: relying on base(x, training=False)"
        description = (
            f"Unfroze the whole base (BatchNorm included), called it as base(x, "
            f"training=False), fine-tuned {EPOCHS} epochs at lr {FINE_TUNE_LEARNING_RATE:g}."
        )
    else:
        label = "Right: BatchNorm frozen, base(x)"
        description = (
            f"Unfroze the base except its BatchNormalization layers, called it as base(x), "
            f"fine-tuned {EPOCHS} epochs at lr {FINE_TUNE_LEARNING_RATE:g}."
        )
    return run.result(
        label=label,
        description=description,
        status=PROBLEM if problem else FINE,
        verdict=_verdict(num_moved, num_layers, mean_change, zeroed),
        measurements=measurements,
        chart_kind="state",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 8 relying on `training=False`, then with BatchNorm frozen and `base(x)`.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right)`; their verdicts are read from the measurement of the installed Keras.

    Example:
    >>> wrong, right = run(seed=0)
    >>> right.status
    'fine'
    """
    return _variant(seed, rely_on_training_false=True), _variant(seed, rely_on_training_false=False)
