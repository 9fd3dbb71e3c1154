"""The Job protocol: what every training job (one run, a phased schedule) offers its readers.

A job trains in the calling thread (`run`) or a background thread (`start`), can be cancelled
from any thread, and can be read from any thread while it runs: its progress, its drift records
and, once recording started, the bitwise proof that its frozen layers stayed unchanged. The
dashboard, the run store and the notebook API read jobs only through this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from models.drift import VerificationResult
    from models.prefix_cache import ExecutionPlan
    from models.training import TrainingConfig, TrainingProgress
    from models.tree import ParameterCounts


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
