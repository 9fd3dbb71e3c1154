"""The Job protocol: what every training job (one run, a phased schedule) offers its readers.

A job trains in the calling thread (`run`) or a background thread (`start`), can be cancelled
from any thread, and can be read from any thread while it runs: its progress (a
`TrainingProgress` snapshot with its `JobState`), its drift records and, once recording started,
the bitwise proof that its frozen layers stayed unchanged. The dashboard, the run store and the
notebook API read jobs only through this protocol.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from models.drift import VerificationResult
    from models.prefix_cache import ExecutionPlan
    from models.training_config import TrainingConfig
    from models.tree import ParameterCounts


class JobState(enum.StrEnum):
    """Where a training job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


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

    def cancel(self) -> None:
        """Asks the job to stop after the current batch (safe from any thread)."""

    def wait(self, timeout: float | None = None) -> TrainingProgress:
        """Waits for a started job to end (or `timeout` seconds); returns its progress."""

    def progress(self) -> TrainingProgress:
        """A consistent snapshot of the job's progress (thread-safe)."""

    def drift_frame(self) -> pd.DataFrame:
        """Every drift record so far, one row per layer, step and kind."""

    def proof(self) -> VerificationResult | None:
        """The bitwise check of the frozen layers; None while no drift was recorded yet."""

    def phase_boundaries(self) -> list[PhaseBoundary]:
        """Where each phase that started begins (one entry for a single run)."""
