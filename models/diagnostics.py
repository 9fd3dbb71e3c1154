"""Gradient and update diagnostics: per layer, how strong the gradient is, how far a step moves it.

For every layer that trains, at every record point (the same points as the drift: every few
batches and each epoch end), FreezeLab reports for the LAST optimizer step before it:

- gradient_norm = ||g||, the L2 norm of the layer's gradients (all its trainable variables);
- update_norm = ||W_after - W_before||, how far that one step moved the layer;
- weight_norm = ||W_before||;
- update_ratio = update_norm / weight_norm, the "update-to-weight ratio" (CS231n, Karpathy's
  lectures: around 1e-3 is healthy; far above, the layer's learning rate is too high for it;
  far below, it barely learns); absolute update_norm when weight_norm is 0;
- relative_gradient = gradient_norm / weight_norm (what surgical fine-tuning and Auto-RGN rank
  layers by).

How it is measured, cheaply: Keras callbacks never see gradients, so the optimizer does it. The
`StepStatisticsOptimizer` mixin (`step_statistics_optimizer_class(Adam)` etc., also on top of the
per-layer-rate classes of `models.layer_rates`) wraps `apply`: inside the compiled training step
it reads each variable before the update, applies the update as the plain class does (bitwise:
the statistics only read), and writes three sums of squares per variable into ONE optimizer
variable of shape (3, num_variables). Reading that variable at a record point is one transfer of
a few hundred floats; `StepStatisticsRecorder` (a Keras callback) turns it into per-layer rows.
The statistics are optimizer variables, so on JAX they travel through the stateless training
step like the moments and come back with Keras's own state sync.

A model is never left compiled with these classes: `TrainingJob` recompiles it with the plain
optimizer at the end of a run (state copied), so a saved `.keras` file loads in plain Keras.

Example:
>>> optimizer = step_statistics_optimizer(keras.optimizers.Adam, learning_rate=1e-3)
>>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
>>> recorder = StepStatisticsRecorder(LayerTree(model), every_n_batches=5)
>>> model.fit(x, y, epochs=1, callbacks=[recorder], verbose=0)
>>> recorder.frame().tail()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from models.optimizer_mixins import mixed_optimizer_class
from models.tree import LayerTree
from models.validation import check_whole_number

STATISTICS_VARIABLE_NAME = "step_statistics"
"""The name of the optimizer variable that holds the last step's sums of squares."""

GUIDE_UPDATE_RATIO = 1e-3
"""The rule-of-thumb update-to-weight ratio of a healthy layer (CS231n)."""

TOO_FAST_RATIO = 1e-2
"""Above this update-to-weight ratio a layer moves too fast (10x the guide)."""

TOO_SLOW_RATIO = 1e-4
"""Below this update-to-weight ratio a layer that trains barely learns (0.1x the guide)."""

STATISTICS_COLUMNS = (
    "step",
    "epoch",
    "layer_path",
    "gradient_norm",
    "update_norm",
    "weight_norm",
    "update_ratio",
    "relative_gradient",
)
_DTYPES = ("int64", "int64", "object", *(["float64"] * 5))


class StepStatisticsOptimizer:
    """Mixin that keeps, after each step, per-variable sums of squares of g, the update and W.

    Mixed in before a Keras optimizer class by `step_statistics_optimizer_class`; test
    `isinstance(optimizer, StepStatisticsOptimizer)` to recognise one. It adds exactly one
    optimizer variable (`STATISTICS_VARIABLE_NAME`, float32, shape (3, num_variables), rows:
    squared gradient norm, squared update norm, squared weight norm before the step), created
    last, after the plain optimizer's own variables.
    """

    def build(self, variables: list[Any]) -> None:
        super().build(variables)
        self._step_statistics = self.add_variable(
            shape=(3, len(variables)),
            initializer="zeros",
            dtype="float32",
            name=STATISTICS_VARIABLE_NAME,
        )

    @property
    def statistics_variable(self) -> keras.Variable | None:
        """The (3, num_variables) statistics of the last step; None before the first step."""
        return getattr(self, "_step_statistics", None)

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> None:
        if trainable_variables is not None and not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self._trainable_variables)
        )
        grads = list(grads)
        before = [_snapshot(variable) for variable in variables]
        super().apply(grads, trainable_variables)
        rows: list[list[Any]] = [[], [], []]
        for gradient, variable, start in zip(grads, variables, before, strict=True):
            start = ops.cast(start, "float32")
            if gradient is None:
                rows[0].append(ops.zeros((), "float32"))
                rows[1].append(ops.zeros((), "float32"))
            else:
                gradient = ops.cast(ops.convert_to_tensor(gradient), "float32")
                change = ops.cast(ops.convert_to_tensor(variable), "float32") - start
                rows[0].append(ops.sum(gradient * gradient))
                rows[1].append(ops.sum(change * change))
            rows[2].append(ops.sum(start * start))
        self._step_statistics.assign(ops.stack([ops.stack(row) for row in rows]))


def _snapshot(variable: Any) -> Any:
    """The variable's value now, as a tensor the coming update cannot change.

    On TensorFlow a read inside the compiled step may share the variable's buffer, which the
    optimizer then updates in place (measured: the "before" read showed the updated value), so
    the value is copied explicitly; JAX's arrays are immutable.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        value = variable.value if isinstance(variable, keras.Variable) else variable
        return tf.raw_ops.DeepCopy(x=value.read_value())
    return ops.convert_to_tensor(variable)


def step_statistics_optimizer_class(
    optimizer_class: type[keras.optimizers.Optimizer],
) -> type[keras.optimizers.Optimizer]:
    """The subclass of a Keras optimizer class that keeps each step's statistics.

    Args:
        optimizer_class: A `keras.optimizers.Optimizer` subclass (Adam, AdamW, SGD, RMSprop,
            or one of `models.layer_rates`'s layer-rate classes).

    Returns:
        The subclass (made once per class), registered for Keras serialization as
        "FreezeLab>StepStatistics<Name>"; its constructor takes the class's own arguments.

    Example:
    >>> step_statistics_optimizer_class(keras.optimizers.SGD).__name__
    'StepStatisticsSGD'
    """
    return mixed_optimizer_class(
        StepStatisticsOptimizer,
        optimizer_class,
        prefix="StepStatistics",
        doc=f"{getattr(optimizer_class, '__name__', optimizer_class)} that keeps each step's "
        "gradient, update and weight norms (see `models.diagnostics`).",
    )


def step_statistics_optimizer(
    optimizer_class: type[keras.optimizers.Optimizer], **optimizer_arguments: Any
) -> keras.optimizers.Optimizer:
    """Builds an optimizer of `optimizer_class` that also keeps each step's statistics.

    Args:
        optimizer_class: A Keras optimizer class (see `step_statistics_optimizer_class`).
        **optimizer_arguments: Its own arguments (`learning_rate`, `variable_multipliers` for
            a layer-rate class, ...).

    Returns:
        The optimizer, ready for `model.compile(optimizer=...)`.
    """
    return step_statistics_optimizer_class(optimizer_class)(**optimizer_arguments)


def plain_state(optimizer: keras.optimizers.Optimizer) -> list[keras.Variable]:
    """The optimizer's variables without the step statistics: the plain class's state, in order."""
    statistics = getattr(optimizer, "statistics_variable", None)
    return [variable for variable in optimizer.variables if variable is not statistics]


@dataclass(frozen=True)
class _Record:
    step: int
    epoch: int
    sums: np.ndarray  # (3, num_layers): squared gradient, update and weight norms


class StepStatisticsRecorder(keras.callbacks.Callback):
    """A Keras callback that records each training layer's gradient and update norms.

    It reads the model's `StepStatisticsOptimizer` (a model compiled with another optimizer
    records nothing) every `every_n_batches` batches and at each epoch end: one transfer of the
    last step's (3, num_variables) statistics, summed per layer with NumPy.

    Args:
        tree: The `LayerTree` of the model being trained (it names the layers; the optimizer's
            variables are matched to them by identity, so a head model made of the same layer
            objects records under the same paths).
        every_n_batches: Also record every this many batches; None records at epoch ends only.

    Example:
    >>> recorder = StepStatisticsRecorder(LayerTree(model), every_n_batches=5)
    >>> model.fit(x, y, callbacks=[recorder], verbose=0)
    >>> recorder.frame().groupby("layer_path").update_ratio.last()
    """

    def __init__(self, tree: LayerTree, every_n_batches: int | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.every_n_batches = check_whole_number(
            "every_n_batches", every_n_batches, 1, allow_none=True
        )
        self._records: list[_Record] = []
        self._layer_paths: list[str] = []
        self._layer_of_variable: np.ndarray | None = None
        self._optimizer: Any = None
        self._step = 0
        self._epoch = 0
        self._epoch_first_step = 0

    # ------------------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None) -> None:
        self._optimizer = self.model.optimizer
        self._layer_of_variable = None  # matched at the first record (the optimizer builds late)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_first_step = self._step

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._step = self._epoch_first_step + batch + 1
        if self.every_n_batches and self._step % self.every_n_batches == 0:
            self.record()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch += 1
        if self._records and self._records[-1].step == self._step:
            self._records.pop()  # the epoch-end record replaces a batch record at this step
        self.record()

    # ---------------------------------------------------------------------------- recording
    def _match_layers(self, variables: list[Any]) -> None:
        """Maps each optimizer variable to the index of the tree layer that owns it."""
        owner: dict[int, str] = {}
        for path in self.tree.paths():
            for variable, _kind in self.tree.own_variables(path):
                owner.setdefault(id(variable), path)
        paths = [owner.get(id(variable), "") for variable in variables]
        # Layers keep their column across fits (a schedule's later phase trains more of them).
        self._layer_paths = list(dict.fromkeys([*self._layer_paths, *(p for p in paths if p)]))
        index = {path: position for position, path in enumerate(self._layer_paths)}
        self._layer_of_variable = np.array([index.get(path, -1) for path in paths], np.int64)

    def record(self) -> None:
        """Records the last step's statistics per layer (called by the hooks)."""
        optimizer = self._optimizer
        statistics = getattr(optimizer, "statistics_variable", None)
        if statistics is None or self._step == 0:
            return
        _ = self.model  # on JAX, Keras writes its training state (optimizer too) back
        if self._layer_of_variable is None:
            self._match_layers(list(optimizer._trainable_variables))
        values = np.asarray(keras.ops.convert_to_numpy(statistics.value), dtype=np.float64)
        known = self._layer_of_variable >= 0
        sums = np.zeros((3, len(self._layer_paths)))
        for row in range(3):
            np.add.at(sums[row], self._layer_of_variable[known], values[row, known])
        self._records.append(_Record(self._step, self._epoch, sums))

    # ------------------------------------------------------------------------------ results
    def frame(self) -> pd.DataFrame:
        """Returns the records, one row per training layer per record point.

        Returns:
            Columns `STATISTICS_COLUMNS`: step, epoch, layer_path, gradient_norm, update_norm,
            weight_norm, update_ratio, relative_gradient (see the module docstring). Layers
            whose gradient and update were both zero at a record (frozen by a multiplier of 0,
            or not connected to the loss) are left out of that record.
        """
        records = list(self._records)
        if not records:
            return pd.DataFrame(
                {c: pd.Series(dtype=d) for c, d in zip(STATISTICS_COLUMNS, _DTYPES, strict=True)}
            )
        num_layers = len(self._layer_paths)
        padded = [  # records of earlier fits know fewer layers: those did not train then
            np.pad(record.sums, ((0, 0), (0, num_layers - record.sums.shape[1])))
            for record in records
        ]
        sums = np.sqrt(np.stack(padded))  # (records, 3, layers)
        gradient, update, weight = sums[:, 0], sums[:, 1], sums[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(weight > 0, update / np.where(weight > 0, weight, 1.0), update)
            relative = np.where(weight > 0, gradient / np.where(weight > 0, weight, 1.0), gradient)
        frame = pd.DataFrame(
            {
                "step": np.repeat([r.step for r in records], num_layers).astype(np.int64),
                "epoch": np.repeat([r.epoch for r in records], num_layers).astype(np.int64),
                "layer_path": np.tile(np.array(self._layer_paths, dtype=object), len(records)),
                "gradient_norm": gradient.ravel(),
                "update_norm": update.ravel(),
                "weight_norm": weight.ravel(),
                "update_ratio": ratio.ravel(),
                "relative_gradient": relative.ravel(),
            },
            columns=list(STATISTICS_COLUMNS),
        )
        moved = (frame.gradient_norm > 0) | (frame.update_norm > 0)
        return frame[moved].reset_index(drop=True)


def speed_verdicts(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Names the layers that move too fast or too slowly at their last record.

    Args:
        frame: `StepStatisticsRecorder.frame()`.

    Returns:
        {"too_fast": [...], "too_slow": [...]}: layer paths whose last update-to-weight ratio is
        above `TOO_FAST_RATIO` or below `TOO_SLOW_RATIO` (layers with no weight norm, such as
        a zero-initialised bias alone, are not judged), in model order of the frame.

    Example:
    >>> speed_verdicts(recorder.frame())["too_fast"]
    ['transfer_model/classifier']
    """
    missing = [column for column in STATISTICS_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"`frame` lacks the columns {missing}; expected StepStatisticsRecorder.frame()."
        )
    last = frame.groupby("layer_path", sort=False).tail(1)
    last = last[last.weight_norm > 0]
    return {
        "too_fast": last.layer_path[last.update_ratio > TOO_FAST_RATIO].tolist(),
        "too_slow": last.layer_path[last.update_ratio < TOO_SLOW_RATIO].tolist(),
    }
