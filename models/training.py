"""Train a Keras model in a background thread, with live progress, cancel, and drift recording.

A `TrainingJob` always compiles the model afresh right before `fit`: Keras keeps the set of
trainable variables from the last compile, so training after a freeze change without
recompiling would still update the "frozen" layers. Here a stale compile never trains.

The job's neighbours each have their own module, re-exported here so that
`from models.training import TrainingConfig, TrainingJob, TrainingSlots, JobState,
TrainingProgress, OPTIMIZERS` keeps working: the settings (`models.training_config`), the
progress snapshot (`models.job`), the server's queue of training slots (`models.slots`) and the
failure message a user sees (`models.failures`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np
import pandas as pd

from models.diagnostics import (
    StepStatisticsOptimizer,
    StepStatisticsRecorder,
    plain_state,
    step_statistics_optimizer_class,
)
from models.drift import DriftRecorder, VerificationResult
from models.failures import describe_training_error
from models.job import DoneCallbacks, JobState, PhaseBoundary, TrainingProgress
from models.layer_rates import (
    LayerRateOptimizer,
    layer_rate_optimizer_class,
    variable_multipliers,
)
from models.prefix_cache import (
    ExecutionPlan,
    build_head_model,
    build_prefix_model,
    plan_prefix_cache,
)
from models.representation import RepresentationRecorder, RepresentationReport
from models.slots import TrainingSlots
from models.splits import train_validation_split
from models.training_config import OPTIMIZERS, TrainingConfig
from models.tree import LayerTree, ParameterCounts

__all__ = [
    "OPTIMIZERS",
    "JobState",
    "TrainingConfig",
    "TrainingJob",
    "TrainingProgress",
    "TrainingSlots",
]


@dataclass
class _Data:
    """Inputs for `fit`: arrays or tf.data datasets."""

    train: Any
    train_labels: np.ndarray | None
    validation: Any
    num_train: int | None
    num_validation: int | None

    def probe_examples(self) -> np.ndarray | None:
        """Examples for the representation probe: the validation split, else the training
        examples; None for a tf.data input."""
        if self.train_labels is None:
            return None
        return self.validation[0] if self.num_validation else self.train


class _StopPredictingOnCancel(keras.callbacks.Callback):
    """Stops `predict` between batches once the job's cancel event is set."""

    def __init__(self, cancel_event: threading.Event) -> None:
        super().__init__()
        self.cancel_event = cancel_event

    def on_predict_batch_end(self, batch, logs=None) -> None:
        if self.cancel_event.is_set():
            self.model.stop_predicting = True


class _ProgressCallback(keras.callbacks.Callback):
    """Reports progress to its job and stops training on cancel or a non-finite loss."""

    def __init__(self, job: TrainingJob) -> None:
        super().__init__()
        self.job = job

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.job._update(batch=0)

    def on_train_batch_end(self, batch, logs=None) -> None:
        logs = logs or {}
        loss = logs.get("loss")
        self.job._record_batch(batch + 1, logs)
        if loss is not None and not math.isfinite(float(loss)):
            self.job._fail_soon(
                f"The loss became {float(loss)} at epoch {self.job._epoch + 1}, batch "
                f"{batch + 1}: training diverged. Lower the learning rate (e.g. divide it by 10), "
                "check the data for NaN or infinite values, and start again."
            )
            self.model.stop_training = True
        if self.job._cancel_event.is_set():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.job._record_epoch(logs or {})
        if self.job._cancel_event.is_set():
            self.model.stop_training = True


@dataclass
class _Status:
    state: JobState = JobState.PENDING
    message: str = "Waiting to start."
    started_at: float | None = None
    ended_at: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    batch_history: dict[str, list[float]] = field(default_factory=dict)


class TrainingJob:
    """One training run of a model on arrays or a tf.data pipeline, observable while it runs.

    The job compiles the model (fresh optimizer, loss, accuracy) right before fitting, records
    drift with a `DriftRecorder`, and publishes progress through `progress()`, which any thread
    may call. `start()` trains in a background thread; `run()` trains in the calling thread (for
    tests and notebooks). `cancel()` stops it between batches; the model stays usable and the
    history and drift keep everything up to the last finished step.

    With `config.layer_rates` set, the optimizer scales each layer's updates by its multiplier
    (`models.layer_rates`), on the plain path and on the cached one alike (the head model holds
    the original model's variables, so they keep their multipliers). Once `fit` returns, the
    model is left compiled with the plain optimizer, so `model.save` writes a file any Keras
    loads.

    Args:
        model: The Keras model to train (its freeze flags are read at the start).
        x: Input array, shape (num_samples, ...) matching the model's input.
        y: Integer class labels, shape (num_samples,).
        config: A `TrainingConfig`.
        train_dataset: Instead of x/y, a batched tf.data.Dataset of (inputs, labels).
        validation_dataset: With `train_dataset`, an optional batched validation dataset.
        tree: The model's `LayerTree` (built from `model` when omitted).
        loss: Keras loss; defaults to sparse categorical cross-entropy on probabilities.
        use_prefix_cache: None (default) caches the frozen prefix's outputs whenever that is
            valid and trains only the layers after it (same result, much faster when a large
            frozen base precedes a small head); False always trains with plain `fit`; True
            requires the cached path and raises `ValueError` when it is not valid.
            `execution_plan` says which path runs and why (see `models.prefix_cache`).
        slots: The server's `TrainingSlots`; the job waits for a free slot first.
        recorder: A `DriftRecorder` to continue (a schedule's later phases); a new one when
            omitted.

    Example:
    >>> job = TrainingJob(model, x, y, config=TrainingConfig(epochs=2))
    >>> job.run()
    >>> job.progress().state
    <JobState.FINISHED: 'finished'>
    >>> job.drift_frame().head()
    >>> job.verification().message()
    >>> job.execution_plan.message()  # which path ran (cached frozen prefix or plain fit), why
    """

    def __init__(
        self,
        model: keras.Model,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        *,
        config: TrainingConfig | None = None,
        train_dataset: Any = None,
        validation_dataset: Any = None,
        tree: LayerTree | None = None,
        loss: Any = "sparse_categorical_crossentropy",
        use_prefix_cache: bool | None = None,
        slots: TrainingSlots | None = None,
        recorder: DriftRecorder | None = None,
        step_recorder: StepStatisticsRecorder | None = None,
        representation_recorder: RepresentationRecorder | None = None,
    ) -> None:
        if use_prefix_cache not in (None, True, False):
            raise TypeError(
                f"`use_prefix_cache` must be None (automatic), True or False, received "
                f"{use_prefix_cache!r}."
            )
        self.model = model
        self.config = config or TrainingConfig()
        self.tree = tree or LayerTree(model)
        self.loss = loss
        self.use_prefix_cache = use_prefix_cache
        self._variable_multipliers()  # a layer path the model lacks is refused here, clearly
        self._data = self._prepare_data(x, y, train_dataset, validation_dataset)
        self.execution_plan: ExecutionPlan = self._plan()
        if use_prefix_cache and not self.execution_plan.cached:
            raise ValueError(
                "`use_prefix_cache=True` but the frozen prefix cannot be cached: "
                f"{self.execution_plan.reason} Pass None to fall back to plain fit "
                "automatically."
            )
        # A recorder passed in (a later phase of a schedule) keeps the first phase's start.
        self.recorder = recorder or DriftRecorder(
            self.tree, every_n_batches=self.config.drift_every_batches
        )
        # Gradient and update norms per layer, at the drift's record points.
        self.step_recorder = step_recorder or StepStatisticsRecorder(
            self.tree, every_n_batches=self.config.drift_every_batches
        )
        # How much each block's features change, on the validation split (or the training
        # examples when there is none), against the start of the run (or of the schedule).
        self.representation_recorder = representation_recorder or RepresentationRecorder(
            self.tree,
            self._data.probe_examples(),
            held_out=bool(self._data.num_validation),
        )
        self.frozen_paths: frozenset[str] = self.tree.frozen_paths()
        self.parameter_counts: ParameterCounts = self.tree.totals()
        self._lock = threading.Lock()
        self._cancel_event = threading.Event()
        self._status = _Status()
        self._thread: threading.Thread | None = None
        self._epoch = 0
        self._batch = 0
        self._pending_failure: str | None = None
        self._claimed = False
        self._cancel_reason = ""
        self._done_callbacks = DoneCallbacks()
        self.slots = slots

    # ----------------------------------------------------------------------------- input
    def _prepare_data(self, x, y, train_dataset, validation_dataset) -> _Data:
        if train_dataset is not None:
            if x is not None or y is not None:
                raise ValueError("Give either arrays (x, y) or `train_dataset`, not both.")
            return self._prepare_tf_data(train_dataset, validation_dataset)
        if x is None or y is None:
            raise ValueError(
                "No training data: pass arrays `x` and `y`, or a tf.data `train_dataset`."
            )
        x = np.asarray(x)
        y = np.asarray(y)
        self._check_arrays(x, y)
        if self.config.validation_fraction > 0:
            x_train, y_train, x_validation, y_validation = train_validation_split(
                x, y, self.config.validation_fraction, self.config.seed
            )
            validation = (x_validation, y_validation)
            num_validation = len(x_validation)
        else:
            x_train, y_train, validation, num_validation = x, y, None, 0
        return _Data(x_train, y_train, validation, len(x_train), num_validation)

    def _check_arrays(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(
                f"`x` must hold at least one sample with features, received shape {x.shape}."
            )
        if y.shape != (len(x),):
            raise ValueError(
                f"`y` must hold one integer label per sample, shape ({len(x)},); received shape "
                f"{y.shape}."
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"Labels must be integers 0..K-1, received dtype {y.dtype}.")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"Inputs must be numeric, received dtype {x.dtype}.")
        if not np.all(np.isfinite(x)):
            raise ValueError(
                f"The inputs contain {int(np.size(x) - np.isfinite(x).sum())} NaN or infinite "
                "values. Clean or impute them before training."
            )
        expected = tuple(self.model.input_shape[1:])
        received = tuple(x.shape[1:])
        if len(expected) != len(received) or any(
            e is not None and e != r for e, r in zip(expected, received, strict=False)
        ):
            raise ValueError(
                f"The model expects inputs of shape {expected} per sample but the data has "
                f"{received}. Adapt the data (or build the model for it with "
                "build_transfer_model, which adds resizing and channel conversion)."
            )
        num_outputs = self.model.output_shape[-1]
        if y.min() < 0 or (num_outputs is not None and y.max() >= num_outputs):
            raise ValueError(
                f"Labels range from {int(y.min())} to {int(y.max())} but the model has "
                f"{num_outputs} outputs, so labels must lie in 0..{num_outputs - 1}. Give the "
                "model a head with one output per class."
            )

    def _prepare_tf_data(self, train_dataset, validation_dataset) -> _Data:
        import tensorflow as tf  # TensorFlow-only input path, imported on use.

        if not isinstance(train_dataset, tf.data.Dataset):
            raise TypeError(
                f"`train_dataset` must be a batched tf.data.Dataset, received "
                f"{type(train_dataset).__name__}."
            )
        return _Data(train_dataset, None, validation_dataset, None, None)

    @property
    def num_train_samples(self) -> int | None:
        """Training samples (None for a tf.data input)."""
        return self._data.num_train

    @property
    def num_validation_samples(self) -> int | None:
        """Validation samples (None for a tf.data input)."""
        return self._data.num_validation

    @property
    def batches_per_epoch(self) -> int | None:
        """Batches in one epoch (None when a tf.data input does not know its length)."""
        if self._data.num_train is not None:
            return math.ceil(self._data.num_train / self.config.batch_size)
        cardinality = int(self._data.train.cardinality())
        return cardinality if cardinality > 0 else None

    # ------------------------------------------------------------------------- lifecycle
    def compile(self) -> None:
        """Compiles the model with a fresh optimizer, so the current freeze flags take effect."""
        optimizer = self.build_optimizer(step_statistics=True)
        self.model.compile(optimizer=optimizer, loss=self.loss, metrics=["accuracy"])

    def build_optimizer(self, *, step_statistics: bool = False) -> keras.optimizers.Optimizer:
        """Returns a fresh optimizer for this run, with the config's per-layer rates if any.

        Args:
            step_statistics: Also keep each step's gradient, update and weight norms
                (`models.diagnostics`; the updates are bitwise the same), as a run does.

        Returns:
            The config's optimizer at its learning rate; when `config.layer_rates` gives some
            variable of the model a multiplier other than 1, the `models.layer_rates` subclass
            that scales each variable's update (else the plain class, bitwise as without
            per-layer rates).

        Example:
        >>> job.build_optimizer().learning_rate
        """
        optimizer_class = OPTIMIZERS[self.config.optimizer]
        arguments: dict[str, Any] = {"learning_rate": self.config.learning_rate}
        multipliers = self._variable_multipliers()
        if any(multiplier != 1.0 for _, multiplier in multipliers):
            optimizer_class = layer_rate_optimizer_class(optimizer_class)
            arguments["variable_multipliers"] = multipliers
        if step_statistics:
            optimizer_class = step_statistics_optimizer_class(optimizer_class)
        return optimizer_class(**arguments)

    def _variable_multipliers(self) -> list[tuple[keras.Variable, float]]:
        """The config's per-layer rates resolved on the current tree (empty without them)."""
        if self.config.layer_rates is None:
            return []
        return variable_multipliers(self.config.layer_rates, self.tree)

    def _compile_plain(self, trained: keras.optimizers.Optimizer | None = None) -> None:
        """Compiles the model with the config's plain optimizer (no per-layer rates).

        A model ends a run compiled so: `model.save` writes the optimizer's class into the
        file's compile config, and Keras outside FreezeLab, not knowing the layer-rate classes,
        would refuse to load the file.

        Args:
            trained: The FreezeLab optimizer that trained the model (layer rates, step
                statistics), whose state (moments, iterations) the plain one takes over, as the
                saved file would have held it.
        """
        optimizer = OPTIMIZERS[self.config.optimizer](learning_rate=self.config.learning_rate)
        self.model.compile(optimizer=optimizer, loss=self.loss, metrics=["accuracy"])
        if trained is not None and trained.built:
            optimizer.build(self.model.trainable_variables)
            # The layer-rate class adds no variables and the statistics are the last one: the
            # plain state is the same, in order.
            state = plain_state(trained)
            if [v.shape for v in optimizer.variables] == [v.shape for v in state]:
                optimizer.set_weights([variable.numpy() for variable in state])

    def run(self) -> TrainingProgress:
        """Trains in the calling thread until done, cancelled or failed.

        Returns:
            The final `TrainingProgress`. Errors never escape: a failed job reports them in
            `progress().message`.
        """
        with self._lock:
            if self._status.state is not JobState.PENDING or self._claimed:
                raise RuntimeError("A TrainingJob runs once; create a new job to train again.")
            self._claimed = True
        try:
            if self.slots is not None and not self.slots.acquire(
                self, self._cancel_event, self._report_queue_position
            ):
                self._finish(
                    JobState.CANCELLED,
                    f"{self._cancel_reason or 'Stopped by request'} while waiting for a "
                    "training slot.",
                )
                return self.progress()
            try:
                return self._run_with_slot()
            finally:
                if self.slots is not None:
                    self.slots.release()
        finally:
            self._done_callbacks.fire(self)

    def _report_queue_position(self, position: int) -> None:
        with self._lock:
            self._status.message = (
                f"Waiting for a free training slot: {position} job(s) ahead of yours on this "
                "server. Training starts by itself."
            )

    def _run_with_slot(self) -> TrainingProgress:
        with self._lock:
            self._status.state = JobState.RUNNING
            self._status.message = (
                "Compiling the training step with the current freeze plan: the first batch "
                "waits for it (seconds), then training starts."
            )
            self._status.started_at = time.monotonic()
        try:
            self.execution_plan = self._plan()
            if self.use_prefix_cache and not self.execution_plan.cached:
                raise ValueError(
                    "`use_prefix_cache=True` but the frozen prefix can no longer be cached: "
                    f"{self.execution_plan.reason}"
                )
            if self.execution_plan.cached:
                self._fit_cached()
            else:
                self._fit_plain()
            self.representation_recorder.finish()
        except Exception as error:  # every error becomes the job's message
            self._finish(JobState.FAILED, describe_training_error(error))
        else:
            if self._pending_failure:
                self._finish(JobState.FAILED, self._pending_failure)
            elif self._cancel_event.is_set():
                self._finish(
                    JobState.CANCELLED,
                    f"{self._cancel_reason or 'Stopped by request'} after {self._epoch} "
                    f"epoch(s) and {self._batch} batch(es) of the next; results so far are kept.",
                )
            else:
                self._finish(JobState.FINISHED, f"Finished {self._epoch} epoch(s).")
        return self.progress()

    def _plan(self) -> ExecutionPlan:
        """Decides, with the current freeze flags, between the cached and the plain path."""
        in_memory = self._data.train_labels is not None
        num_samples = None
        if in_memory:
            num_samples = (self._data.num_train or 0) + (self._data.num_validation or 0)
        return plan_prefix_cache(
            self.model,
            self.tree,
            num_samples=num_samples,
            in_memory=in_memory,
            enabled=self.use_prefix_cache,
        )

    def _callbacks(self) -> list[keras.callbacks.Callback]:
        return [
            self.recorder,
            self.step_recorder,
            self.representation_recorder,
            _ProgressCallback(self),
        ]

    def _fit_plain(self) -> None:
        """Compiles the whole model afresh and fits it (arrays or tf.data)."""
        keras.utils.set_random_seed(self.config.seed)
        self.compile()
        fit_arguments: dict[str, Any] = {
            "epochs": self.config.epochs,
            "verbose": 0,
            "callbacks": self._callbacks(),
        }
        if self._data.train_labels is not None:
            fit_arguments.update(
                x=self._data.train,
                y=self._data.train_labels,
                batch_size=self.config.batch_size,
                shuffle=True,
            )
        else:
            fit_arguments["x"] = self._data.train
        if self._data.validation is not None:
            fit_arguments["validation_data"] = self._data.validation
        try:
            self.model.fit(**fit_arguments)
        finally:
            if isinstance(self.model.optimizer, (LayerRateOptimizer, StepStatisticsOptimizer)):
                self._compile_plain(trained=self.model.optimizer)

    def _fit_cached(self) -> None:
        """Computes the frozen prefix's outputs once, then fits only the layers after it.

        The head model is made of the original model's own layer objects, so its training
        updates the original model. Seeding, compiling, batch size, shuffling, the drift
        recorder (which reads the original model's tree, frozen prefix included) and the
        progress callback are the same as on the plain path.
        """
        plan = self.execution_plan
        with self._lock:
            self._status.message = (
                "Computing the frozen layers' outputs once (frozen-prefix cache); then only "
                "the layers after them train."
            )
        started = time.perf_counter()
        prefix_model = build_prefix_model(self.model, plan)
        stop = _StopPredictingOnCancel(self._cancel_event)
        batch_size = max(self.config.batch_size, 256)
        train_features = prefix_model.predict(
            self._data.train, batch_size=batch_size, verbose=0, callbacks=[stop]
        )
        validation = None
        if self._data.validation is not None and not self._cancel_event.is_set():
            x_validation, y_validation = self._data.validation
            validation_features = prefix_model.predict(
                x_validation, batch_size=batch_size, verbose=0, callbacks=[stop]
            )
            validation = (validation_features, y_validation)
        self.execution_plan = plan = replace(
            plan,
            feature_shape=tuple(int(size) for size in train_features.shape[1:]),
            precompute_seconds=time.perf_counter() - started,
        )
        if self._cancel_event.is_set():
            return
        keras.utils.set_random_seed(self.config.seed)
        head_model = build_head_model(self.model, plan, plan.feature_shape)
        # The head's variables are the original model's, so per-layer rates resolved on the
        # whole model's tree apply to them unchanged.
        head_model.compile(
            optimizer=self.build_optimizer(step_statistics=True),
            loss=self.loss,
            metrics=["accuracy"],
        )
        self._compile_plain()  # the whole model ends compiled too, as on the plain path
        fit_arguments: dict[str, Any] = {
            "x": train_features,
            "y": self._data.train_labels,
            "batch_size": self.config.batch_size,
            "shuffle": True,
            "epochs": self.config.epochs,
            "verbose": 0,
            "callbacks": self._callbacks(),
        }
        if validation is not None:
            fit_arguments["validation_data"] = validation
        head_model.fit(**fit_arguments)

    def start(self) -> None:
        """Starts training in a background daemon thread and returns at once."""
        if self._thread is not None:
            raise RuntimeError("This job was already started; create a new job to train again.")
        self._thread = threading.Thread(target=self.run, name="freezelab-training", daemon=True)
        self._thread.start()

    def cancel(self, reason: str = "") -> None:
        """Asks the job to stop after the current batch (safe from any thread).

        Args:
            reason: Why, in words, for the final message (default "Stopped by request").
        """
        if reason and not self._cancel_event.is_set():
            self._cancel_reason = str(reason)
        self._cancel_event.set()

    def add_done_callback(self, callback) -> None:
        """Calls `callback(job)` once the job has ended (see `models.job.Job`)."""
        self._done_callbacks.add(self, callback)

    def wait(self, timeout: float | None = None) -> TrainingProgress:
        """Waits for a started job to end (or for `timeout` seconds) and returns its progress."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress()

    # ------------------------------------------------------------------ progress (thread-safe)
    def _update(self, batch: int) -> None:
        with self._lock:
            self._batch = batch

    def _record_batch(self, batch: int, logs: dict) -> None:
        with self._lock:
            self._batch = batch
            self._status.message = "Training."
            history = self._status.batch_history
            history.setdefault("step", []).append(
                float(self._epoch * (self.batches_per_epoch or 0) + batch)
            )
            for key in ("loss", "accuracy"):
                if key in logs:
                    history.setdefault(key, []).append(float(logs[key]))

    def _record_epoch(self, logs: dict) -> None:
        with self._lock:
            self._epoch += 1
            for key, value in logs.items():
                self._status.history.setdefault(key, []).append(float(value))

    def _fail_soon(self, message: str) -> None:
        self._pending_failure = message

    def _finish(self, state: JobState, message: str) -> None:
        # The proof is taken when the run ends: later runs may train these layers again.
        self._final_verification = self.recorder.verify() if self.recorder.started else None
        with self._lock:
            self._status.state = state
            self._status.message = message
            self._status.ended_at = time.monotonic()

    def progress(self) -> TrainingProgress:
        """Returns a consistent snapshot of the job's progress (thread-safe)."""
        with self._lock:
            status = self._status
            now = status.ended_at or time.monotonic()
            elapsed = now - status.started_at if status.started_at else 0.0
            per_epoch = self.batches_per_epoch
            eta = None
            if status.state is JobState.RUNNING and per_epoch:
                done = self._epoch * per_epoch + self._batch
                total = self.config.epochs * per_epoch
                if done:
                    eta = elapsed / done * (total - done)
            return TrainingProgress(
                state=status.state,
                epoch=self._epoch,
                epochs=self.config.epochs,
                batch=self._batch,
                batches_per_epoch=per_epoch,
                history={k: list(v) for k, v in status.history.items()},
                batch_history={k: list(v) for k, v in status.batch_history.items()},
                message=status.message,
                elapsed_seconds=elapsed,
                eta_seconds=eta,
            )

    # ------------------------------------------------------------------------------ results
    def history_frame(self) -> pd.DataFrame:
        """Returns per-epoch metrics as a DataFrame with an `epoch` column starting at 1."""
        history = self.progress().history
        frame = pd.DataFrame(history)
        frame.insert(0, "epoch", range(1, len(frame) + 1))
        return frame

    def drift_frame(self) -> pd.DataFrame:
        """Returns the drift records (see `DriftRecorder.frame`)."""
        return self.recorder.frame()

    def representation(self) -> RepresentationReport:
        """How much each block's features changed so far (`models.representation`)."""
        return self.representation_recorder.report()

    def step_statistics_frame(self) -> pd.DataFrame:
        """Returns the gradient and update records (see `StepStatisticsRecorder.frame`)."""
        return self.step_recorder.frame()

    def verification(self) -> VerificationResult:
        """Returns the bitwise check that every frozen layer kept its weights and state.

        Once the job has ended this is the check taken at its end, so training the same model
        again later (a new run) does not rewrite an earlier run's proof.
        """
        final = getattr(self, "_final_verification", None)
        if final is not None and self.progress().done:
            return final
        return self.recorder.verify()

    def proof(self) -> VerificationResult | None:
        """The bitwise check of the frozen layers (`verification`), or None before recording.

        A job that failed or was stopped before its first step recorded nothing to check.
        """
        return self.verification() if self.recorder.started else None

    def phase_boundaries(self) -> list[PhaseBoundary]:
        """One phase, from the start (see `models.job.Job`)."""
        return [PhaseBoundary("Training", 0, 0)]
