"""The Job protocol: what every training job (one run, a phased schedule) offers its readers.

A job trains in the calling thread (`run`) or a background thread (`start`), can be cancelled
from any thread, and can be read from any thread while it runs: its progress (a
`TrainingProgress` snapshot with its `JobState`), its drift records and, once recording started,
the bitwise proof that its frozen layers stayed unchanged. The dashboard, the run store and the
notebook API read jobs only through this protocol.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from models.drift import VerificationResult
    from models.prefix_cache import ExecutionPlan
    from models.representation import RepresentationReport
    from models.training_config import TrainingConfig
    from models.tree import ParameterCounts


LOGGER = logging.getLogger("freezelab")


class JobState(enum.StrEnum):
    """Where a training job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


class RunEnding(enum.StrEnum):
    """How a run ended, as the run store and the dashboard name it.

    `JobState.CANCELLED` is either a user's Stop (`STOPPED`) or the server cancelling a job
    whose page was gone longer than the grace period (`ORPHANED`, see `models.sessions`).
    """

    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    ORPHANED = "orphaned"

    @classmethod
    def of(cls, state: JobState, orphaned: bool = False) -> RunEnding | None:
        """The ending of a job in `state` (None while it is pending or running).

        Example:
        >>> RunEnding.of(JobState.CANCELLED, orphaned=True)
        <RunEnding.ORPHANED: 'orphaned'>
        """
        if state is JobState.FINISHED:
            return cls.FINISHED
        if state is JobState.FAILED:
            return cls.FAILED
        if state is JobState.CANCELLED:
            return cls.ORPHANED if orphaned else cls.STOPPED
        return None


@dataclass(frozen=True)
class TrainingProgress:
    """A consistent snapshot of a job's progress, safe to read from any thread.

    Attributes:
        state: The job's `JobState`.
        epoch: Epochs finished.
        epochs: Epochs planned.
        batch: Batches finished in the current epoch.
        batches_per_epoch: Batches in one epoch (None when unknown, e.g. some tf.data inputs).
        history: Per-epoch metrics, e.g. {"loss": [...], "val_accuracy": [...]}.
        batch_history: Per-batch training metrics: {"step": [...], "loss": [...], ...}.
        message: What happened, in words (the error when the job failed).
        elapsed_seconds: Time since the job started running.
        eta_seconds: Estimated time left (None before the first batch).

    Example:
    >>> progress = job.progress()
    >>> progress.state, f"{progress.fraction_done:.0%}"
    (<JobState.RUNNING: 'running'>, '40%')
    """

    state: JobState
    epoch: int
    epochs: int
    batch: int
    batches_per_epoch: int | None
    history: dict[str, list[float]]
    batch_history: dict[str, list[float]]
    message: str
    elapsed_seconds: float
    eta_seconds: float | None

    @property
    def done(self) -> bool:
        """Whether the job has ended (finished, cancelled or failed)."""
        return self.state in (JobState.FINISHED, JobState.CANCELLED, JobState.FAILED)

    @property
    def fraction_done(self) -> float:
        """Share of the planned batches done, in [0, 1]."""
        if self.state is JobState.FINISHED:
            return 1.0
        if not self.batches_per_epoch:
            return self.epoch / self.epochs
        total = self.epochs * self.batches_per_epoch
        return min((self.epoch * self.batches_per_epoch + self.batch) / total, 1.0)


class PhaseBoundary(NamedTuple):
    """Where one phase of a job begins, for marking charts.

    Attributes:
        name: The phase's name, e.g. "Fine-tune".
        first_epoch: Epochs finished before the phase (0 for the first phase).
        first_step: Training steps (batches) finished before the phase.
    """

    name: str
    first_epoch: int
    first_step: int


@runtime_checkable
class Job(Protocol):
    """A training job, as the rest of FreezeLab reads it.

    Attributes:
        config: The settings of the whole job (a schedule's epochs summed over its phases).
        frozen_paths: The freeze plan when the job was created.
        parameter_counts: Trainable / non-trainable parameters when the job was created.

    Example:
    >>> job: Job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1))
    >>> job.run().state
    <JobState.FINISHED: 'finished'>
    >>> job.proof().all_unchanged
    True
    """

    config: TrainingConfig
    frozen_paths: frozenset[str]
    parameter_counts: ParameterCounts

    @property
    def execution_plan(self) -> ExecutionPlan | None:
        """Which training path runs (cached frozen prefix or plain fit) and why; None before."""

    def run(self) -> TrainingProgress:
        """Trains in the calling thread until the job ends; returns the final progress."""

    def start(self) -> None:
        """Trains in a background thread and returns at once."""

    def cancel(self, reason: str = "") -> None:
        """Asks the job to stop after the current batch (safe from any thread).

        Args:
            reason: Why, in words, for the job's final message ("" = the user's Stop).
        """

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Calls `callback(job)` once the job has ended (at once when it already has).

        The callback runs in the thread that ended the job, after its slot was freed; an
        exception it raises is logged, never raised into the job.
        """

    def wait(self, timeout: float | None = None) -> TrainingProgress:
        """Waits for a started job to end (or `timeout` seconds); returns its progress."""

    def progress(self) -> TrainingProgress:
        """A consistent snapshot of the job's progress (thread-safe)."""

    def drift_frame(self) -> pd.DataFrame:
        """Every drift record so far, one row per layer, step and kind."""

    def step_statistics_frame(self) -> pd.DataFrame:
        """Every gradient and update record so far, one row per training layer and record
        point (`models.diagnostics.StepStatisticsRecorder.frame`)."""

    def representation(self) -> RepresentationReport:
        """How much each block's features changed so far: linear CKA per block on a probe
        batch, against the start of the job (`models.representation.RepresentationRecorder`)."""

    def proof(self) -> VerificationResult | None:
        """The bitwise check of the frozen layers; None while no drift was recorded yet."""

    def phase_boundaries(self) -> list[PhaseBoundary]:
        """Where each phase that started begins (one entry for a single run)."""


class DoneCallbacks:
    """The callbacks of one job, called once when it ends (see `Job.add_done_callback`).

    Example:
    >>> callbacks = DoneCallbacks()
    >>> callbacks.add(job, lambda ended: print(ended.progress().state))
    >>> callbacks.fire(job)  # once, from the job's own thread when it ends
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Any], None]] = []
        self._fired = False

    def add(self, job: Any, callback: Callable[[Any], None]) -> None:
        """Keeps `callback` for the end of `job`, or calls it now when the job has ended."""
        if not callable(callback):
            raise TypeError(f"`callback` must be callable; received {type(callback).__name__}.")
        with self._lock:
            if not self._fired:
                self._callbacks.append(callback)
                return
        _call(callback, job)

    def fire(self, job: Any) -> None:
        """Calls every kept callback once (later calls do nothing)."""
        with self._lock:
            if self._fired:
                return
            self._fired = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, job)


def _call(callback: Callable[[Any], None], job: Any) -> None:
    try:
        callback(job)
    except Exception:  # a listener's failure never ends a job differently
        LOGGER.exception("A job's done callback failed")
