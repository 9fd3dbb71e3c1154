"""Run one pitfall variant: the lab's model, data and fit, measured from identical starting weights.

Every variant of every pitfall trains the bundled pretrained feature extractor (three Conv2D +
BatchNormalization blocks, pretrained on digits 0-4) with a new head on the bundled digits 5-9.
`LabRun` does the shared steps once: it builds that model from a seed, keeps its `LayerTree`
and a `DriftRecorder`, compiles and fits with the same data split and batch order, and turns
what it measured into a `VariantResult`. An experiment only says what to freeze and which
numbers to report.

Example:
>>> run = LabRun(seed=0)
>>> run.tree.set_frozen(BASE_PATH, True)
>>> history = run.train(epochs=2)
>>> run.recorder.verify().all_unchanged
True
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd

from models.bundled import BUNDLED_INPUT_SHAPE, load_bundled_base
from models.catalogue import BUNDLED_MODEL_KEY
from models.datasets import load_bundled_dataset
from models.drift import DriftRecorder, LayerCheck, VerificationResult
from models.forgetting import pretraining_task_accuracy
from models.pitfalls.results import Measurement, VariantResult
from models.splits import train_validation_split
from models.transfer import build_transfer_model
from models.tree import STATE_KIND, WEIGHTS_KIND, LayerTree

TASK = "digits_5_9"
PRETRAINED_TASK = "digits_0_4"
VALIDATION_FRACTION = 0.2
BATCH_SIZE = 32
MODEL_NAME = "transfer_model"
BASE_NAME = "feature_extractor"
BASE_PATH = f"{MODEL_NAME}/{BASE_NAME}"
DRIFT_EVERY_BATCHES = 4
HEAD_LEARNING_RATE = 1e-2

_BASE_LOCK = threading.Lock()
_BASE_CACHE: dict[str, object] = {}


# ------------------------------------------------------------------------- model and data
def pretrained_base() -> keras.Model:
    """Returns a fresh, independent copy of the bundled pretrained feature extractor.

    The file is read once per process; later calls rebuild the model from its config and copy
    the weights (read-only cache, nothing shared is ever trained).

    Returns:
        A new `"feature_extractor"` Sequential (8x8x1 images in, 32 features out).

    Example:
    >>> pretrained_base().name
    'feature_extractor'
    """
    with _BASE_LOCK:
        if not _BASE_CACHE:
            base = load_bundled_base()
            _BASE_CACHE["config"] = base.get_config()
            _BASE_CACHE["weights"] = [np.array(w, copy=True) for w in base.get_weights()]
        config, weights = _BASE_CACHE["config"], _BASE_CACHE["weights"]
    base = keras.Sequential.from_config(config)
    base.set_weights(weights)
    return base


def original_task_accuracy(base: keras.Model) -> float:
    """How well a (possibly fine-tuned) base still does the task it was pretrained on.

    Puts the bundled model's original classifier back on top of `base` and measures accuracy
    on all bundled digits 0-4 in inference mode. The untouched pretrained base scores 1.0; a
    base whose features were overwritten scores much lower ("catastrophic forgetting").

    Args:
        base: A feature extractor with the bundled base's architecture (32 features out).

    Returns:
        Accuracy in [0, 1].

    Example:
    >>> original_task_accuracy(pretrained_base())
    1.0
    """
    return pretraining_task_accuracy(BUNDLED_MODEL_KEY, base)


@functools.lru_cache(maxsize=4)
def task_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns the bundled digits 5-9 split 80/20 (stratified), read-only, cached per seed.

    Args:
        seed: Seed of the split.

    Returns:
        `(x_train, y_train, x_validation, y_validation)`; 8x8x1 float32 images in [0, 1].

    Example:
    >>> x_train, y_train, x_val, y_val = task_split(0)
    >>> x_train.shape
    (716, 8, 8, 1)
    """
    dataset = load_bundled_dataset(TASK)
    arrays = train_validation_split(dataset.x, dataset.y, VALIDATION_FRACTION, seed=seed)
    for array in arrays:
        array.flags.writeable = False
    return arrays


def build_lab_model(seed: int, base_training: bool | None = None) -> keras.Model:
    """Builds the lab's transfer model: the pretrained base (one nested layer) + a new head.

    The head's weights come from `seed`, so two calls with one seed give identical models.

    Args:
        seed: Seed of the new head's weights.
        base_training: The `training` argument the base is called with (see
            `build_transfer_model`).

    Returns:
        An uncompiled model named "transfer_model": image -> feature_extractor -> classifier.

    Example:
    >>> [layer.name for layer in build_lab_model(0).layers]
    ['image', 'feature_extractor', 'classifier']
    """
    base = pretrained_base()
    keras.utils.set_random_seed(seed)  # after the base: its first load draws random numbers
    return build_transfer_model(
        base,
        BUNDLED_INPUT_SHAPE,
        5,
        dropout=0.0,
        base_training=base_training,
        name=MODEL_NAME,
    )


# ------------------------------------------------------------------------- compile and fit
def compile_model(model: keras.Model, learning_rate: float) -> None:
    """Compiles with Adam, sparse cross-entropy and accuracy (a fresh optimizer every call)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


class _EagerValidation(keras.callbacks.Callback):
    """Measures validation loss and accuracy at each epoch end with one eager forward pass.

    Cheaper than Keras's `validation_data` here: no second traced function per `fit`.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.history: dict[str, list[float]] = {"val_loss": [], "val_accuracy": []}

    def on_epoch_end(self, epoch, logs=None) -> None:
        loss, accuracy = evaluate(self.model, self.x, self.y)
        self.history["val_loss"].append(loss)
        self.history["val_accuracy"].append(accuracy)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Returns `(loss, accuracy)` of a softmax classifier in inference mode (one eager call)."""
    probabilities = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    picked = probabilities[np.arange(len(y)), y]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y))
    return loss, accuracy


def fit_model(
    model: keras.Model,
    seed: int,
    epochs: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, list[float]]:
    """Fits on the lab's data split with a fixed batch order.

    Args:
        model: A compiled model.
        seed: Seed of the data split and of the batch order.
        epochs: Epochs to train.
        callbacks: Extra Keras callbacks, e.g. a `DriftRecorder`.

    Returns:
        Keras's history dict plus "val_loss" and "val_accuracy" per epoch.

    Example:
    >>> history = fit_model(model, seed=0, epochs=2)
    >>> len(history["val_accuracy"])
    2
    """
    x_train, y_train, x_validation, y_validation = task_split(seed)
    validation = _EagerValidation(x_validation, y_validation)
    keras.utils.set_random_seed(seed)
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        callbacks=[*(callbacks or []), validation],
        verbose=0,
    )
    result = {name: [float(v) for v in values] for name, values in history.history.items()}
    result.update(validation.history)
    return result


def merge_histories(*histories: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """Concatenates per-epoch histories, name by name, in the order given."""
    merged: dict[str, list[float]] = {}
    for history in histories:
        for name, values in history.items():
            merged.setdefault(name, []).extend(values)
    return merged


# ------------------------------------------------------------------------------ evidence
def final_drift(drift: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The last record of each layer for one kind ("weights" or "state")."""
    rows = drift[drift["kind"] == kind]
    return rows.groupby("layer_path", sort=False).tail(1).reset_index(drop=True)


def base_drift(drift: pd.DataFrame, kind: str = "weights") -> float:
    """Max over the base's layers of the final relative change of one kind (0 when none)."""
    rows = final_drift(drift, kind)
    rows = rows[rows["layer_path"].str.startswith(BASE_PATH + "/")]
    return float(rows["relative_change"].max()) if len(rows) else 0.0


def layer_change(drift: pd.DataFrame, path: str, kind: str) -> float:
    """The final max |W_end - W_start| of one layer and kind (0 when it was not recorded)."""
    rows = final_drift(drift, kind)
    rows = rows[rows["layer_path"] == path]
    return float(rows["max_abs_change"].iloc[0]) if len(rows) else 0.0


def short_path(path: str) -> str:
    """Drops the top model's name from a path for display."""
    return path.split("/", 1)[-1] if "/" in path else path


def copy_values(variables: Sequence[keras.Variable]) -> list[np.ndarray]:
    """NumPy copies of `variables` now, to compare with after a fit."""
    return [np.array(variable.numpy(), copy=True) for variable in variables]


def moved(variables: Sequence[keras.Variable], before: Sequence[np.ndarray]) -> list[bool]:
    """Per variable: whether it differs from its copy `before` (exact comparison)."""
    return [
        not np.array_equal(variable.numpy(), start)
        for variable, start in zip(variables, before, strict=True)
    ]


def max_change(variables: Sequence[keras.Variable], before: Sequence[np.ndarray]) -> float:
    """The largest |value_now - value_before| over `variables` (0 when there are none)."""
    return max(
        (
            float(np.max(np.abs(np.asarray(variable.numpy()) - start)))
            for variable, start in zip(variables, before, strict=True)
        ),
        default=0.0,
    )


def accuracy_measurement(history: Mapping[str, list[float]]) -> Measurement:
    """The "Validation accuracy" measurement: held-out digits 5-9 after the last epoch."""
    accuracy = float((history.get("val_accuracy") or [math.nan])[-1])
    return Measurement(
        "Validation accuracy",
        accuracy,
        f"{accuracy:.1%}",
        "Accuracy on held-out digits 5-9 after the last epoch.",
    )


# ------------------------------------------------------------------------------- the run
class LabRun:
    """One variant being measured: the lab model, its layer tree, its drift recorder, its clock.

    Building one starts the clock and builds `build_lab_model(seed, base_training)`, so every
    variant of a pitfall starts from identical weights. `train` compiles (unless told not to)
    and fits with the lab's data and batch order; measured fits go through the recorder and
    into `history`. `result` packs the evidence into a `VariantResult`.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.
        base_training: The `training` argument the base is called with (see
            `build_transfer_model`).
        model: A model built by the experiment itself (same base, its own head), instead
            of `build_lab_model(seed, base_training)`.

    Attributes:
        seed: The seed.
        model: The lab model.
        tree: Its `LayerTree` (freeze through it).
        recorder: The `DriftRecorder` of the measured fits.
        history: The measured fits' histories, concatenated.

    Example:
    >>> run = LabRun(seed=0)
    >>> run.tree.set_frozen(BASE_PATH, True)
    >>> history = run.train(epochs=2)
    >>> variant = run.result(label="Right", description="...", status=FINE, verdict="...",
    ...                      measurements=(accuracy_measurement(history),), chart_kind="weights")
    """

    def __init__(
        self, seed: int, base_training: bool | None = None, model: keras.Model | None = None
    ) -> None:
        self._started = time.perf_counter()
        self.seed = seed
        self.model = model if model is not None else build_lab_model(seed, base_training)
        self.tree = LayerTree(self.model)
        self.recorder = DriftRecorder(self.tree, every_n_batches=DRIFT_EVERY_BATCHES)
        self.history: dict[str, list[float]] = {}

    def train(
        self,
        epochs: int,
        learning_rate: float = HEAD_LEARNING_RATE,
        *,
        recompile: bool = True,
        measure: bool = True,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> dict[str, list[float]]:
        """Compiles (a fresh Adam) and fits on the lab's data, recording drift.

        Args:
            epochs: Epochs to train.
            learning_rate: Adam's learning rate (used when compiling).
            recompile: False reuses the previous `compile()` (the stale-compile mistake).
            measure: False trains without the recorder and leaves `history` as it is (a
                warm-up before the measurement starts).
            callbacks: More Keras callbacks for this fit (an experiment's own probes).

        Returns:
            This fit's history ("loss", "accuracy", "val_loss", "val_accuracy" per epoch).
        """
        if recompile:
            compile_model(self.model, learning_rate)
        fit_callbacks = [*([self.recorder] if measure else []), *callbacks]
        history = fit_model(self.model, self.seed, epochs=epochs, callbacks=fit_callbacks)
        if measure:
            self.history = merge_histories(self.history, history)
        return history

    def result(
        self,
        *,
        label: str,
        description: str,
        status: str,
        verdict: str,
        measurements: tuple[Measurement, ...],
        chart_kind: str,
    ) -> VariantResult:
        """Returns the variant's result: the given texts and numbers plus the recorded evidence.

        Args:
            label: e.g. "Wrong: no recompile".
            description: What this run did, in one sentence.
            status: One of `STATUSES`.
            verdict: One line computed from the measurement.
            measurements: Key numbers, in display order.
            chart_kind: "weights", "state" or "effective_kernel" (LoRA layers).

        Returns:
            A `VariantResult` with `history`, the drift frame, the bitwise verification, the
            layer order and the seconds since this run was built.
        """
        return VariantResult(
            label=label,
            description=description,
            status=status,
            verdict=verdict,
            history=dict(self.history),
            drift=self.recorder.frame(),
            verification=self.recorder.verify(),
            measurements=measurements,
            chart_kind=chart_kind,
            layer_order=tuple(self.tree.paths()),
            seconds=time.perf_counter() - self._started,
        )


# ---------------------------------------------------------- bitwise check of chosen layers
LayerSnapshot = dict[str, tuple[tuple[keras.Variable, str, np.ndarray], ...]]
"""Per layer path: `(variable, kind, copy)` for each of the layer's own variables."""


def snapshot_layers(tree: LayerTree, paths: Sequence[str]) -> LayerSnapshot:
    """Copies the own weights and state of chosen layers now, to check bitwise later.

    For runs where the `DriftRecorder`'s own check does not fit: the layers that should not
    change are not frozen in the model being trained (a layer shared with another model, a
    freeze plan lost on loading), so the recorder does not know them as frozen.

    Args:
        tree: The `LayerTree` that holds the layers.
        paths: Layer paths; those without variables of their own are skipped.

    Returns:
        A `LayerSnapshot` for `verify_layers`.

    Example:
    >>> snapshot = snapshot_layers(run.tree, run.tree.descendants(BASE_PATH))
    >>> verify_layers(snapshot).all_unchanged
    True
    """
    snapshot: LayerSnapshot = {}
    for path in paths:
        variables = tree.own_variables(path)
        if variables:
            snapshot[path] = tuple(
                (variable, kind, np.array(variable.numpy(), copy=True))
                for variable, kind in variables
            )
    return snapshot


def verify_layers(snapshot: LayerSnapshot) -> VerificationResult:
    """Checks bitwise (byte for byte) whether each snapshotted layer kept weights and state.

    Args:
        snapshot: From `snapshot_layers`, taken before the run.

    Returns:
        A `VerificationResult` with one `LayerCheck` per layer, in snapshot order.
    """

    def unchanged(entries: tuple[tuple[keras.Variable, str, np.ndarray], ...], kind: str) -> bool:
        return all(
            np.array_equal(
                np.ascontiguousarray(np.asarray(variable.numpy())).view(np.uint8),
                np.ascontiguousarray(start).view(np.uint8),
            )
            for variable, variable_kind, start in entries
            if variable_kind == kind
        )

    return VerificationResult(
        checks=tuple(
            LayerCheck(
                path=path,
                weights_unchanged=unchanged(entries, WEIGHTS_KIND),
                state_unchanged=unchanged(entries, STATE_KIND),
            )
            for path, entries in snapshot.items()
        )
    )


def largest_change(snapshot: LayerSnapshot) -> float:
    """The largest |W_now - W_snapshot| over every snapshotted variable (0 when none)."""
    return max(
        (
            float(np.max(np.abs(np.asarray(variable.numpy()) - start)))
            for entries in snapshot.values()
            for variable, _, start in entries
        ),
        default=0.0,
    )
