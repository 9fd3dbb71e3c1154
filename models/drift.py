"""Record how far every layer's weights and state move during training, and prove frozen ones don't.

Definitions used throughout FreezeLab, per layer and per kind ("weights": variables created
trainable such as kernel, bias, gamma, beta; "state": variables that never train, such as
BatchNormalization's moving mean and variance), with W_0 the values at the start of training and
W_t the values at step t, all of a kind's variables taken together as one vector:

- relative_change = ||W_t - W_0|| / ||W_0|| (L2 norms); when ||W_0|| = 0 (e.g. a bias that
  starts at zero) the absolute change ||W_t - W_0|| is reported instead, so 0 still means "did
  not move" and any movement is visible.
- max_abs_change = max |W_t - W_0| over every element.
- unchanged = W_t == W_0 elementwise at that step; `verify_frozen_unchanged` then checks the
  frozen layers bitwise (byte for byte) at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from keras import ops

from models.tree import STATE_KIND, WEIGHTS_KIND, LayerTree

DRIFT_COLUMNS = (
    "step",
    "epoch",
    "layer_path",
    "layer_name",
    "class_name",
    "kind",
    "relative_change",
    "max_abs_change",
    "unchanged",
    "frozen",
    "num_params",
)


@dataclass(frozen=True)
class _Group:
    """The variables of one layer and one kind, with their starting values."""

    path: str
    name: str
    class_name: str
    kind: str
    variables: tuple[keras.Variable, ...]
    start_values: tuple  # backend tensors, one copy of W_0
    start_norm: float
    num_params: int


@dataclass(frozen=True)
class LayerCheck:
    """The outcome of the bitwise check of one frozen layer.

    Attributes:
        path: The layer's path.
        weights_unchanged: Whether its weights are bitwise equal to the start (True when it has
            none).
        state_unchanged: Whether its non-trainable state is bitwise equal to the start (True
            when it has none).
    """

    path: str
    weights_unchanged: bool
    state_unchanged: bool

    @property
    def unchanged(self) -> bool:
        """Whether both weights and state are bitwise unchanged."""
        return self.weights_unchanged and self.state_unchanged


@dataclass(frozen=True)
class VerificationResult:
    """Whether every layer frozen throughout training kept its weights and state bitwise.

    Attributes:
        checks: One `LayerCheck` per frozen layer that holds variables, in model order.
    """

    checks: tuple[LayerCheck, ...]

    @property
    def all_unchanged(self) -> bool:
        """True when every frozen layer is bitwise unchanged (vacuously True with none)."""
        return all(check.unchanged for check in self.checks)

    @property
    def changed_paths(self) -> tuple[str, ...]:
        """Paths of frozen layers whose weights or state changed."""
        return tuple(check.path for check in self.checks if not check.unchanged)

    @property
    def num_checked(self) -> int:
        """Number of frozen layers checked."""
        return len(self.checks)

    def message(self) -> str:
        """A one-line human summary, naming every frozen layer that changed.

        Example:
        >>> result.message()
        'All 7 frozen layers are bitwise unchanged.'
        """
        if not self.checks:
            return "No layer was frozen during training, so there is nothing to verify."
        if self.all_unchanged:
            noun = "layer is" if self.num_checked == 1 else "layers are"
            return f"All {self.num_checked} frozen {noun} bitwise unchanged."
        parts = []
        for check in self.checks:
            if check.unchanged:
                continue
            what = [
                label
                for label, ok in (
                    ("weights", check.weights_unchanged),
                    ("state", check.state_unchanged),
                )
                if not ok
            ]
            parts.append(f"{check.path} ({' and '.join(what)})")
        return (
            f"{len(parts)} of {self.num_checked} frozen layers changed during training: "
            + ", ".join(parts)
            + "."
        )


def _as_bits(array: np.ndarray) -> np.ndarray:
    """Views an array's bytes so that equality is bitwise (NaN == NaN, -0.0 != 0.0)."""
    return np.ascontiguousarray(array).view(np.uint8)


class DriftRecorder(keras.callbacks.Callback):
    """A Keras callback that records per-layer weight and state drift during `fit`.

    It keeps exactly one copy of the starting weights (taken at the first `fit` it sees, so the
    memory does not grow with epochs or with later fits) and appends a few scalars per layer and
    kind at each record point: the start, every epoch end, and every `every_n_batches` batches
    when that is set. Norms are computed with `keras.ops` on the backend's device; only the
    scalars come back to NumPy.

    Args:
        tree: The `LayerTree` of the model being trained (it names the layers).
        every_n_batches: Also record every this many batches; None records at epoch ends only.

    Example:
    >>> recorder = DriftRecorder(LayerTree(model))
    >>> model.fit(x, y, epochs=2, callbacks=[recorder], verbose=0)
    >>> recorder.frame().head()
    >>> recorder.verify().message()
    """

    def __init__(self, tree: LayerTree, every_n_batches: int | None = None) -> None:
        super().__init__()
        if every_n_batches is not None and (
            isinstance(every_n_batches, bool)
            or not isinstance(every_n_batches, int)
            or every_n_batches < 1
        ):
            raise ValueError(
                f"`every_n_batches` must be None or a whole number >= 1, received "
                f"{every_n_batches!r}."
            )
        self.tree = tree
        self.every_n_batches = every_n_batches
        self._groups: list[_Group] | None = None
        self._frozen_throughout: set[str] | None = None
        self._frozen_now: set[str] = set()
        self._rows: list[tuple] = []
        self._step = 0
        self._epoch = 0

    # ------------------------------------------------------------------ snapshot and measure
    def _snapshot(self) -> list[_Group]:
        groups: list[_Group] = []
        for node in self.tree.nodes():
            variables = self.tree.own_variables(node.path)
            for kind in (WEIGHTS_KIND, STATE_KIND):
                chosen = tuple(v for v, k in variables if k == kind)
                if not chosen:
                    continue
                starts = tuple(np.array(v.numpy(), copy=True) for v in chosen)
                start_norm = float(
                    np.sqrt(sum(np.sum(np.square(s, dtype=np.float64)) for s in starts))
                )
                groups.append(
                    _Group(
                        path=node.path,
                        name=node.name,
                        class_name=node.class_name,
                        kind=kind,
                        variables=chosen,
                        start_values=tuple(ops.convert_to_tensor(s) for s in starts),
                        start_norm=start_norm,
                        num_params=int(sum(s.size for s in starts)),
                    )
                )
        return groups

    def _measure(self) -> np.ndarray:
        """Returns an array of shape (num_groups, 3): squared L2 change, max |change|, equal."""
        scalars = []
        for group in self._groups or []:
            squared = ops.convert_to_tensor(0.0, dtype="float32")
            maximum = ops.convert_to_tensor(0.0, dtype="float32")
            equal = ops.convert_to_tensor(True)
            for variable, start in zip(group.variables, group.start_values, strict=True):
                current = variable.value
                delta = ops.cast(current, "float32") - ops.cast(start, "float32")
                squared = squared + ops.sum(ops.square(delta))
                maximum = ops.maximum(maximum, ops.max(ops.abs(delta)))
                equal = ops.logical_and(equal, ops.all(ops.equal(current, start)))
            scalars.append(ops.stack([squared, maximum, ops.cast(equal, "float32")]))
        if not scalars:
            return np.zeros((0, 3))
        return np.asarray(ops.convert_to_numpy(ops.stack(scalars)), dtype=np.float64)

    def record(self) -> None:
        """Appends one row per layer and kind for the current step (called by the hooks)."""
        if self._groups is None:
            return
        values = self._measure()
        for group, (squared, maximum, equal) in zip(self._groups, values, strict=True):
            change = float(np.sqrt(squared))
            relative = change / group.start_norm if group.start_norm > 0 else change
            self._rows.append(
                (
                    self._step,
                    self._epoch,
                    group.path,
                    group.name,
                    group.class_name,
                    group.kind,
                    relative,
                    float(maximum),
                    bool(equal),
                    group.path in self._frozen_now,
                    group.num_params,
                )
            )

    # ------------------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None) -> None:
        frozen = {node.path for node in self.tree.nodes() if not node.effectively_trainable}
        self._frozen_now = frozen
        if self._groups is None:
            self._groups = self._snapshot()
            self._frozen_throughout = set(frozen)
            self.record()
        else:
            self._frozen_throughout &= frozen

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._step += 1
        if self.every_n_batches and self._step % self.every_n_batches == 0:
            self.record()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch += 1
        if self._groups and self._rows and self._rows[-1][0] == self._step:
            # A batch record was taken at this very step: replace it by the epoch-end record.
            del self._rows[-len(self._groups) :]
        self.record()

    # ------------------------------------------------------------------------------ results
    @property
    def started(self) -> bool:
        """Whether the starting snapshot has been taken."""
        return self._groups is not None

    @property
    def steps_recorded(self) -> int:
        """Number of record points so far (the start included)."""
        return len({row[0] for row in self._rows})

    def frame(self) -> pd.DataFrame:
        """Returns the drift records as a tidy DataFrame, one row per layer per step per kind.

        Returns:
            Columns: step (batches seen), epoch (epochs finished), layer_path, layer_name,
            class_name, kind ("weights" or "state"), relative_change, max_abs_change, unchanged,
            frozen (effectively frozen during that fit), num_params.
        """
        return pd.DataFrame(self._rows, columns=list(DRIFT_COLUMNS))

    def final_frame(self) -> pd.DataFrame:
        """Returns the last record of every layer and kind (the drift at the end)."""
        frame = self.frame()
        if frame.empty:
            return frame
        return frame.groupby(["layer_path", "kind"], sort=False).tail(1).reset_index(drop=True)

    def frozen_paths_throughout(self) -> tuple[str, ...]:
        """Paths of layers with variables that were effectively frozen in every fit recorded."""
        frozen = self._frozen_throughout or set()
        seen: list[str] = []
        for group in self._groups or []:
            if group.path in frozen and group.path not in seen:
                seen.append(group.path)
        return tuple(seen)

    def verify(self) -> VerificationResult:
        """Checks bitwise that every layer frozen throughout training kept weights and state.

        Returns:
            A `VerificationResult` naming any frozen layer whose weights or state changed.

        Raises:
            ValueError: When called before training started.
        """
        if self._groups is None:
            raise ValueError(
                "Nothing to verify yet: the recorder has not seen training start. Pass it to "
                "`model.fit(..., callbacks=[recorder])` first."
            )
        frozen = self._frozen_throughout or set()
        results: dict[str, dict[str, bool]] = {}
        for group in self._groups:
            if group.path not in frozen:
                continue
            same = all(
                np.array_equal(
                    _as_bits(np.asarray(variable.numpy())),
                    _as_bits(np.asarray(ops.convert_to_numpy(start))),
                )
                for variable, start in zip(group.variables, group.start_values, strict=True)
            )
            results.setdefault(group.path, {})[group.kind] = same
        checks = tuple(
            LayerCheck(
                path=path,
                weights_unchanged=kinds.get(WEIGHTS_KIND, True),
                state_unchanged=kinds.get(STATE_KIND, True),
            )
            for path, kinds in results.items()
        )
        return VerificationResult(checks=checks)


def verify_frozen_unchanged(recorder: DriftRecorder) -> VerificationResult:
    """Returns the bitwise verification of every layer frozen throughout `recorder`'s training.

    Args:
        recorder: A `DriftRecorder` that was passed to `fit`.

    Returns:
        A `VerificationResult`; `.all_unchanged` is the proof, `.message()` says it in words.

    Example:
    >>> verify_frozen_unchanged(recorder).all_unchanged
    True
    """
    return recorder.verify()
