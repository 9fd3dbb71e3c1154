"""Record how far every layer's weights and state move during training, and prove frozen ones don't.

Definitions used throughout FreezeLab, per layer and per kind ("weights": variables created
trainable such as kernel, bias, gamma, beta; "state": variables that never train, such as
BatchNormalization's moving mean and variance), with W_0 the values at the start of training and
W_t the values at step t, all of a kind's variables taken together as one vector:

- relative_change = ||W_t - W_0|| / ||W_0|| (L2 norms); when ||W_0|| = 0 (e.g. a bias that
  starts at zero) the absolute change ||W_t - W_0|| is reported instead, so 0 still means "did
  not move" and any movement is visible.
- max_abs_change = max |W_t - W_0| over every element.
- unchanged = W_t == W_0 elementwise at that step (max |W_t - W_0| is exactly 0 and the change
  is finite); `verify_frozen_unchanged` then checks the frozen layers bitwise (byte for byte) at
  the end.

A LoRA layer (`models.lora`) has a third kind, "effective_kernel": the kernel the layer computes
with, `kernel + (alpha / rank) * a @ b` (an Embedding's embeddings), measured the same way. Its
own kernel stays frozen, so its "weights" rows mostly show the adapters' motion (`a` starts
random); the effective kernel's drift is how far the layer's function really moved.

When drift is recorded every few batches, those batch records measure the layers that train
(effectively trainable ones: the only ones the optimizer or a training-mode BatchNormalization
can move); every layer, frozen ones included, is measured at the start and at every epoch end,
and the frozen ones are proven bitwise unchanged at the end. Re-measuring a frozen base at every
batch would tell nothing the epoch-end records and the proof do not, at a price (about 3 ms a
record for MobileNetV2 0.35) above a whole training step of a head on cached features.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from models.lora import (
    ADAPTED_VARIABLE_NAMES,
    adapted_variable,
    adapter_variables,
    lora_setting,
)
from models.tree import STATE_KIND, WEIGHTS_KIND, LayerTree
from models.validation import check_whole_number

EFFECTIVE_KERNEL_KIND = "effective_kernel"
"""The drift kind of a LoRA layer's effective kernel, `kernel + (alpha / rank) * a @ b`."""

DRIFT_KINDS = (WEIGHTS_KIND, STATE_KIND, EFFECTIVE_KERNEL_KIND)
"""Every value of the drift frame's "kind" column."""

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
_DRIFT_DTYPES = (
    "int64",
    "int64",
    "object",
    "object",
    "object",
    "object",
    "float64",
    "float64",
    "bool",
    "bool",
    "int64",
)


@dataclass(frozen=True)
class _Group:
    """The variables of one layer and one kind, with their starting values.

    A group of the effective-kernel kind measures ONE value computed from its three variables
    (kernel, a, b): `kernel + lora_scale * a @ b`; its `start_values` holds that one value.
    """

    path: str
    name: str
    class_name: str
    kind: str
    variables: tuple[keras.Variable, ...]
    start_values: tuple  # backend tensors, one copy of W_0
    start_norm: float
    num_params: int
    lora_scale: float | None = None

    @property
    def items(self) -> list[tuple[Any, Any, float | None]]:
        """What one record measures: (current, start, LoRA scale or None) per measured value."""
        if self.lora_scale is not None:
            return [(self.variables, self.start_values[0], self.lora_scale)]
        return [(variable, start, None) for variable, start in zip(
            self.variables, self.start_values, strict=True
        )]  # fmt: skip


@dataclass(frozen=True)
class _Record:
    """The scalars of one record point, one entry per group (layer and kind)."""

    step: int
    epoch: int
    scalars: np.ndarray  # (2, num_items): squared change, max |change|; NaN: not measured
    frozen: np.ndarray  # (num_groups,) bool
    measured: np.ndarray  # (num_groups,) bool: False for groups a batch record skipped


@dataclass(frozen=True)
class LayerCheck:
    """The outcome of the bitwise check of one frozen layer, or of a LoRA layer's kernel.

    Attributes:
        path: The layer's path.
        weights_unchanged: Whether its weights are bitwise equal to the start (True when it has
            none); for a LoRA kernel, whether the kernel is.
        state_unchanged: Whether its non-trainable state is bitwise equal to the start (True
            when it has none).
        lora_kernel: True for the check of a trainable LoRA layer's frozen kernel (its adapters
            and bias train, so only the kernel must stay bitwise the same).
    """

    path: str
    weights_unchanged: bool
    state_unchanged: bool
    lora_kernel: bool = False

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
            kernels = sum(1 for check in self.checks if check.lora_kernel)
            layers = self.num_checked - kernels
            if not kernels:
                noun = "layer is" if layers == 1 else "layers are"
                return f"All {layers} frozen {noun} bitwise unchanged."
            kernel_noun = "kernel" if kernels == 1 else "kernels"
            if not layers:
                if kernels == 1:
                    return "The LoRA layer's frozen kernel is bitwise unchanged."
                return f"All {kernels} LoRA layers' frozen kernels are bitwise unchanged."
            layer_noun = "layer" if layers == 1 else "layers"
            return (
                f"All {layers} frozen {layer_noun} and {kernels} LoRA {kernel_noun} are bitwise "
                "unchanged."
            )
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
            if check.lora_kernel:
                what = ["kernel under LoRA"]
            parts.append(f"{check.path} ({' and '.join(what)})")
        return (
            f"{len(parts)} of {self.num_checked} frozen layers changed during training: "
            + ", ".join(parts)
            + "."
        )


def _bitwise_equal(variable: keras.Variable, start: Any) -> bool:
    """Whether a variable holds bitwise the value it started with."""
    return np.array_equal(
        _as_bits(np.asarray(variable.numpy())), _as_bits(np.asarray(ops.convert_to_numpy(start)))
    )


def _as_bits(array: np.ndarray) -> np.ndarray:
    """Views an array's bytes so that equality is bitwise (NaN == NaN, -0.0 != 0.0)."""
    return np.ascontiguousarray(array).view(np.uint8)


def _drift_scalars(
    current_values: Sequence[Any],
    start_values: Sequence[Any],
    lora_scales: Sequence[float | None] | None = None,
) -> Any:
    """Computes each measured value's drift scalars with `keras.ops` (traceable, backend-neutral).

    Whether a value is unchanged follows from these two exactly (see `_unchanged`), so no
    third, elementwise comparison is computed: each record point stays as small a device call
    as it can be.

    Args:
        current_values: The variables' current values (backend tensors or variables); for a
            LoRA effective kernel, the tuple (kernel, a, b).
        start_values: Their starting values, in the same order.
        lora_scales: Per value, None, or the LoRA scale (alpha / rank) of an effective kernel
            (static: part of the compiled function, not an argument of it).

    Returns:
        A float32 tensor of shape (2, num_values): the squared L2 change and the max |change|.
    """
    scales = lora_scales or [None] * len(current_values)
    squared, maximum = [], []
    for current, start, scale in zip(current_values, start_values, scales, strict=True):
        if scale is not None:  # Keras's own formula (e.g. keras.layers.Dense.kernel)
            kernel, lora_a, lora_b = current
            current = kernel + scale * ops.matmul(lora_a, lora_b)
        if math.prod(current.shape) == 0:  # an empty weight never changes
            squared.append(ops.zeros((), "float32"))
            maximum.append(ops.zeros((), "float32"))
            continue
        if keras.backend.standardize_dtype(current.dtype) != "float32":
            current, start = ops.cast(current, "float32"), ops.cast(start, "float32")
        delta = current - start
        squared.append(ops.sum(delta * delta))
        maximum.append(ops.max(ops.abs(delta)))
    return ops.stack([ops.stack(squared), ops.stack(maximum)])


def _unchanged(squared: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    """Whether every element equals its start, from the squared change and the max |change|.

    For finite floats a - b == 0 exactly when a == b, so max |change| == 0 says every element
    is equal; a NaN anywhere makes the sum NaN (a maximum may drop NaN on some backends), and
    counts as a change. The squared sum alone would not do: a tiny change can underflow to 0
    when squared.
    """
    return (maximum == 0) & np.isfinite(squared)


def _value(current: Any) -> Any:
    """The current value of a variable, or of each variable of a (kernel, a, b) tuple."""
    if isinstance(current, tuple):
        return tuple(variable.value for variable in current)
    return current.value


def _compiled_measure(
    items: Sequence[tuple[Any, Any, float | None]],
) -> Callable[[], Any]:
    """Returns a zero-argument function computing `_drift_scalars` in ONE compiled call.

    This is the only backend-specific code of the recorder: `tf.function` on TensorFlow (the
    variables are captured, so each call reads their current values on their device) and
    `jax.jit` on JAX; any other backend (PyTorch, NumPy) runs the same `keras.ops` code
    eagerly. The values never leave the device; only the returned scalars do.

    AutoGraph is off: the code branches on static shapes and dtypes only, and AutoGraph would
    parse this module's source with `ast` in the training thread. CPython 3.11's AST
    construction is not thread-safe (python/cpython#106905): a parse in another thread at the
    same moment, such as Streamlit compiling a page script, can fail with "SystemError: AST
    constructor recursion depth mismatch". Tracing is faster without it, too.

    Args:
        items: (current, start, LoRA scale or None) per measured value (`_Group.items`).
    """
    currents = [current for current, _, _ in items]
    starts = [start for _, start, _ in items]
    scales = tuple(scale for _, _, scale in items)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(
            lambda: _drift_scalars([_value(current) for current in currents], starts, scales),
            autograph=False,
        )
        return function.get_concrete_function()  # calling it skips the trace-cache lookup
    if backend == "jax":
        import jax

        compiled = jax.jit(functools.partial(_drift_scalars, lora_scales=scales))
        return lambda: compiled([_value(current) for current in currents], starts)
    return lambda: _drift_scalars([_value(current) for current in currents], starts, scales)


class DriftRecorder(keras.callbacks.Callback):
    """A Keras callback that records per-layer weight and state drift during `fit`.

    It keeps exactly one copy of the starting weights (taken at the first `fit` it sees, so the
    memory does not grow with epochs or with later fits) and appends a few scalars per layer and
    kind at each record point: the start, every epoch end, and every `every_n_batches` batches
    when that is set. All norms of one record are computed on the backend's device in ONE
    compiled call (`tf.function` on TensorFlow, `jax.jit` on JAX, plain `keras.ops` elsewhere),
    and only the stacked scalars, two per variable, come back to NumPy. Batch records measure
    the layers that train; the start and epoch-end records measure every layer (see the module
    docstring), so `frame()` has frozen layers at those steps only.

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
        every_n_batches = check_whole_number("every_n_batches", every_n_batches, 1, allow_none=True)
        self.tree = tree
        self.every_n_batches = every_n_batches
        self._groups: list[_Group] | None = None
        self._frozen_throughout: set[str] | None = None
        # Trainable LoRA layers whose kernel was frozen in every fit: their kernels are checked.
        self._lora_throughout: set[str] | None = None
        self._frozen_now: set[str] = set()
        self._records: list[_Record] = []
        self._step = 0
        self._epoch = 0
        self._epoch_first_step = 0
        self._step_lock = threading.Lock()
        self._frozen_mask = np.zeros(0, dtype=bool)
        self._measure_all: Callable[[], Any] | None = None
        self._measure_live: Callable[[], Any] | None = None
        self._live_variables = np.zeros(0, dtype=bool)  # per measured item: its layer trains

    @property
    def async_safe(self) -> bool:
        """Whether Keras may run the batch hook in a worker thread (True at epoch ends only).

        Recording every epoch only counts steps per batch, so `fit` need not wait for the
        hook after each batch (Keras's asynchronous callback dispatch). Batch records must
        read the weights between two steps, so they run synchronously.
        """
        return self.every_n_batches is None

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
            if node.lora_rank is not None:  # a LoRA layer, training or frozen
                groups.append(self._effective_kernel_group(node))
        return groups

    def _effective_kernel_group(self, node: Any) -> _Group:
        """The effective-kernel group of a LoRA layer: `kernel + scale * a @ b` at the start."""
        layer = self.tree.layer(node.path)
        variables = (adapted_variable(layer), *adapter_variables(layer))
        scale = lora_setting(layer).scale
        kernel, lora_a, lora_b = (np.asarray(v.numpy(), dtype=np.float32) for v in variables)
        start = kernel + np.float32(scale) * np.matmul(lora_a, lora_b)
        return _Group(
            path=node.path,
            name=node.name,
            class_name=node.class_name,
            kind=EFFECTIVE_KERNEL_KIND,
            variables=variables,
            start_values=(ops.convert_to_tensor(start),),
            start_norm=float(np.sqrt(np.sum(np.square(start, dtype=np.float64)))),
            num_params=int(start.size),
            lora_scale=scale,
        )

    def record(self, every_layer: bool = True) -> None:
        """Records the drift at the current step (called by the hooks).

        The cost per record is one compiled device call and one host transfer of two scalars
        per variable; combining them per layer waits until `frame()` is asked for.

        Args:
            every_layer: True measures every layer (the start and epoch ends); False only the
                layers that train in the current fit (batch records). A batch record with no
                layer training is skipped.
        """
        if not self._groups:
            return
        if every_layer:
            scalars = np.asarray(ops.convert_to_numpy(self._measure(live_only=False)()))
            measured = np.ones(len(self._groups), dtype=bool)
        else:
            if not self._live_variables.any():
                return
            scalars = np.full((2, self._live_variables.size), np.nan, dtype=np.float32)
            scalars[:, self._live_variables] = ops.convert_to_numpy(self._measure(live_only=True)())
            measured = ~self._frozen_mask
        self._records.append(_Record(self._step, self._epoch, scalars, self._frozen_mask, measured))

    def _measure(self, live_only: bool) -> Callable[[], Any]:
        """The compiled measure of every variable, or of those of the layers that train.

        Built (traced) on first use and kept; the live one is rebuilt when another set of
        layers trains (`on_train_begin` drops it).
        """
        if live_only and self._measure_live is not None:
            return self._measure_live
        if not live_only and self._measure_all is not None:
            return self._measure_all
        items = [item for group in self._groups or [] for item in group.items]
        if live_only:
            items = [item for item, keep in zip(items, self._live_variables, strict=True) if keep]
        function = _compiled_measure(items)
        if live_only:
            self._measure_live = function
        else:
            self._measure_all = function
        return function

    def _group_values(self, records: list[_Record]) -> tuple[np.ndarray, ...]:
        """Combines per-variable scalars into per-group drift figures, all records at once.

        Returns:
            relative_change, max_abs_change and unchanged, each of shape
            (num_records, num_groups).
        """
        groups = self._groups or []
        sizes = [len(group.items) for group in groups]
        offsets = np.cumsum([0, *sizes[:-1]])
        scalars = np.stack([record.scalars for record in records]).astype(np.float64)
        squared = np.add.reduceat(scalars[:, 0, :], offsets, axis=1)
        maximum = np.maximum.reduceat(scalars[:, 1, :], offsets, axis=1)
        change = np.sqrt(squared)
        unchanged = _unchanged(squared, maximum)
        norms = np.array([group.start_norm for group in groups])
        relative = np.where(norms > 0, change / np.where(norms > 0, norms, 1.0), change)
        return relative, maximum, unchanged

    # ------------------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None) -> None:
        nodes = self.tree.nodes()
        frozen = {node.path for node in nodes if not node.effectively_trainable}
        lora = {
            node.path
            for node in nodes
            if node.state == "lora"
            and not any(v.trains for v in node.variables if v.name in ADAPTED_VARIABLE_NAMES)
        }
        self._frozen_now = frozen
        if self._groups is None:
            self._groups = self._snapshot()
            self._frozen_throughout = set(frozen)
            self._lora_throughout = lora
        else:
            self._frozen_throughout &= frozen
            self._lora_throughout &= lora
        mask = np.array([group.path in frozen for group in self._groups], bool)
        if not np.array_equal(mask, self._frozen_mask):
            self._frozen_mask = mask
            self._live_variables = np.repeat(~mask, [len(g.items) for g in self._groups])
            self._measure_live = None  # another set of layers trains in this fit
        if not self._records:
            self.record()
        if self.every_n_batches and self._live_variables.any() and self._measure_live is None:
            # Traced (and run once) here, before the first epoch, so that tracing never slows
            # a batch down.
            self._measure(live_only=True)()

    def _sync_model_state(self) -> None:
        """Makes the variables current (JAX's trainer keeps them in its own state mid-epoch)."""
        if self._model is not None:
            _ = self.model  # Keras's `Callback.model` writes JAX's training state back.

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_first_step = self._step

    def on_train_batch_end(self, batch, logs=None) -> None:
        # `batch` is the index of the last step done in this epoch; counting from it (rather
        # than adding 1 per call) stays right when Keras runs this hook in worker threads.
        step = self._epoch_first_step + batch + 1
        with self._step_lock:
            self._step = max(self._step, step)
        if self.every_n_batches and step % self.every_n_batches == 0:
            self._sync_model_state()
            self.record(every_layer=False)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._epoch += 1
        self._sync_model_state()
        if self._records and self._records[-1].step == self._step and self._step > 0:
            # A batch record was taken at this very step: replace it by the epoch-end record.
            self._records.pop()
        self.record()

    # ------------------------------------------------------------------------------ results
    @property
    def started(self) -> bool:
        """Whether the starting snapshot has been taken."""
        return self._groups is not None

    @property
    def steps_recorded(self) -> int:
        """Number of record points so far (the start included)."""
        return len(self._records)

    def frame(self) -> pd.DataFrame:
        """Returns the drift records as a tidy DataFrame, one row per layer per step per kind.

        Frozen layers have rows at the start and at epoch ends only; layers that train have a
        row at every record point (batch records included).

        Returns:
            Columns: step (batches seen), epoch (epochs finished), layer_path, layer_name,
            class_name, kind ("weights", "state", or "effective_kernel" for a LoRA layer),
            relative_change, max_abs_change, unchanged, frozen (effectively frozen during that
            fit), num_params.
        """
        records = list(self._records)  # a snapshot: training may append meanwhile
        groups = self._groups or []
        if not records or not groups:
            return pd.DataFrame(
                {
                    column: pd.Series(dtype=dtype)
                    for column, dtype in zip(DRIFT_COLUMNS, _DRIFT_DTYPES, strict=True)
                }
            )
        num_groups, num_records = len(groups), len(records)
        relative, maximum, unchanged = self._group_values(records)

        def per_group(values: list) -> np.ndarray:
            return np.tile(np.array(values, dtype=object), num_records)

        frame = pd.DataFrame(
            {
                "step": np.repeat([r.step for r in records], num_groups).astype(np.int64),
                "epoch": np.repeat([r.epoch for r in records], num_groups).astype(np.int64),
                "layer_path": per_group([g.path for g in groups]),
                "layer_name": per_group([g.name for g in groups]),
                "class_name": per_group([g.class_name for g in groups]),
                "kind": per_group([g.kind for g in groups]),
                "relative_change": relative.ravel(),
                "max_abs_change": maximum.ravel(),
                "unchanged": unchanged.ravel(),
                "frozen": np.concatenate([r.frozen for r in records]),
                "num_params": np.tile(
                    np.array([g.num_params for g in groups], dtype=np.int64), num_records
                ),
            },
            columns=list(DRIFT_COLUMNS),
        )
        measured = np.concatenate([r.measured for r in records])
        return frame if measured.all() else frame[measured].reset_index(drop=True)

    def final_frame(self) -> pd.DataFrame:
        """Returns the last record of every layer and kind (the drift at the end)."""
        frame = self.frame()
        if frame.empty:
            return frame
        return frame.groupby(["layer_path", "kind"], sort=False).tail(1).reset_index(drop=True)

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
        lora = (self._lora_throughout or set()) - frozen
        results: dict[str, dict[str, bool]] = {}
        kernels: dict[str, bool] = {}
        for group in self._groups:
            if group.kind == EFFECTIVE_KERNEL_KIND:
                continue  # computed from the kernel and adapters, each checked on its own
            pairs = zip(group.variables, group.start_values, strict=True)
            if group.path in frozen:
                results.setdefault(group.path, {})[group.kind] = all(
                    _bitwise_equal(variable, start) for variable, start in pairs
                )
            elif group.path in lora and group.kind == WEIGHTS_KIND:
                kernels[group.path] = all(
                    _bitwise_equal(variable, start)
                    for variable, start in pairs
                    if variable.name in ADAPTED_VARIABLE_NAMES
                )
        checks = tuple(
            LayerCheck(
                path=path,
                weights_unchanged=kinds.get(WEIGHTS_KIND, True),
                state_unchanged=kinds.get(STATE_KIND, True),
            )
            for path, kinds in results.items()
        ) + tuple(
            LayerCheck(path=path, weights_unchanged=same, state_unchanged=True, lora_kernel=True)
            for path, same in kernels.items()
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
