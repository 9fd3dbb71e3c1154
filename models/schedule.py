"""Training in phases: feature extraction, then fine-tuning, or gradual unfreezing.

Each phase sets its freeze plan, is compiled afresh (a `TrainingJob` always recompiles) and
continues the same `DriftRecorder`, so drift stays relative to the very start and shows which
layers started moving when. The verification then covers the layers frozen in every phase.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from models.diagnostics import StepStatisticsRecorder
from models.drift import DriftRecorder, VerificationResult
from models.job import DoneCallbacks, JobState, PhaseBoundary, TrainingProgress
from models.limits import (
    EPOCHS_RANGE,
    LAYERS_PER_STEP_RANGE,
    LEARNING_RATE_RANGE,
    UNFREEZE_STEPS_RANGE,
)
from models.plans import FreezePlan
from models.prefix_cache import ExecutionPlan
from models.representation import RepresentationReport
from models.slots import TrainingSlots
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree, ParameterCounts
from models.validation import check_choice, check_number, check_whole_number

PHASE_PLANS = ("freeze_base", "unfreeze_all", "unfreeze_top", "keep")


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule.

    Attributes:
        name: Shown in charts, e.g. "feature extraction".
        plan: The action name of its freeze plan (`models.plans`): "freeze_base",
            "unfreeze_all", "unfreeze_top" (with `num_layers`) or "keep".
        epochs: Epochs of this phase.
        learning_rate: Learning rate of this phase (a fresh optimizer each phase).
        num_layers: For "unfreeze_top": how many of the base's last layers train.
    """

    name: str
    plan: str
    epochs: int
    learning_rate: float
    num_layers: int = 0

    def __post_init__(self) -> None:
        check_choice("phase plan", self.plan, PHASE_PLANS)
        FreezePlan.from_action(self.plan, self.num_layers)  # checks num_layers of "unfreeze_top"
        check_whole_number("epochs", self.epochs, *EPOCHS_RANGE)
        check_number("learning_rate", self.learning_rate, *LEARNING_RATE_RANGE)

    @property
    def freeze_plan(self) -> FreezePlan:
        """The phase's plan as a `FreezePlan` (e.g. "unfreeze_top" with `num_layers`)."""
        return FreezePlan.from_action(self.plan, self.num_layers)

    def apply(self, tree: LayerTree, base_path: str) -> None:
        """Sets this phase's freeze plan on the model."""
        self.freeze_plan.apply(tree, base_path)


def two_phase_schedule(
    head_epochs: int,
    head_learning_rate: float,
    fine_tune_epochs: int,
    fine_tune_learning_rate: float,
    num_layers: int = 0,
) -> tuple[Phase, ...]:
    """The Keras transfer-learning recipe: train the head on a frozen base, then fine-tune.

    Args:
        head_epochs: Epochs with the base frozen.
        head_learning_rate: Learning rate for the new head (e.g. 1e-2).
        fine_tune_epochs: Epochs of fine-tuning.
        fine_tune_learning_rate: A low learning rate (e.g. 1e-4).
        num_layers: Base layers unfrozen for fine-tuning (0 unfreezes the whole base).

    Returns:
        Two `Phase`s.

    Example:
    >>> two_phase_schedule(3, 1e-2, 2, 1e-4, num_layers=4)[1].plan
    'unfreeze_top'
    """
    second = (
        Phase("fine-tuning", "unfreeze_top", fine_tune_epochs, fine_tune_learning_rate, num_layers)
        if num_layers > 0
        else Phase("fine-tuning", "unfreeze_all", fine_tune_epochs, fine_tune_learning_rate)
    )
    return (Phase("feature extraction", "freeze_base", head_epochs, head_learning_rate), second)


def gradual_schedule(
    head_epochs: int,
    head_learning_rate: float,
    num_steps: int,
    layers_per_step: int,
    epochs_per_step: int,
    fine_tune_learning_rate: float,
) -> tuple[Phase, ...]:
    """Gradual unfreezing: train the head, then unfreeze the base from the top, block by block.

    Args:
        head_epochs: Epochs with the base frozen.
        head_learning_rate: Learning rate for the new head.
        num_steps: Unfreezing steps after the head phase (1 to 20).
        layers_per_step: Base layers added at each step (the top ones first).
        epochs_per_step: Epochs of each unfreezing step.
        fine_tune_learning_rate: A low learning rate for the unfreezing steps.

    Returns:
        `1 + num_steps` phases; step i trains the top `i * layers_per_step` base layers.

    Example:
    >>> [p.num_layers for p in gradual_schedule(2, 1e-2, 3, 2, 1, 1e-4)]
    [0, 2, 4, 6]
    """
    check_whole_number("num_steps", num_steps, *UNFREEZE_STEPS_RANGE)
    check_whole_number("layers_per_step", layers_per_step, *LAYERS_PER_STEP_RANGE)
    phases = [Phase("feature extraction", "freeze_base", head_epochs, head_learning_rate)]
    for step in range(1, num_steps + 1):
        count = step * layers_per_step
        phases.append(
            Phase(
                f"unfreeze top {count}",
                "unfreeze_top",
                epochs_per_step,
                fine_tune_learning_rate,
                count,
            )
        )
    return tuple(phases)


class ScheduledJob:
    """Runs phases one after the other on one model, with one drift recorder.

    It implements the `models.job.Job` protocol like `TrainingJob`, so the dashboard shows it
    like any run.

    Args:
        model: The model to train.
        x: Inputs.
        y: Integer labels.
        tree: The model's `LayerTree`.
        base_path: Path of the base model node (what the phases freeze and unfreeze).
        phases: The `Phase`s, in order.
        config: Settings shared by every phase (batch size, optimizer, split, seed, drift
            resolution); each phase sets its own epochs and learning rate.
        slots: The server's `TrainingSlots`, taken once for the whole schedule.

    Example:
    >>> job = ScheduledJob(model, x, y, tree, "transfer_model/feature_extractor",
    ...                    two_phase_schedule(2, 1e-2, 2, 1e-4), TrainingConfig())
    >>> job.run().state
    <JobState.FINISHED: 'finished'>
    """

    def __init__(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        tree: LayerTree,
        base_path: str,
        phases: tuple[Phase, ...] | list[Phase],
        config: TrainingConfig,
        slots: TrainingSlots | None = None,
    ) -> None:
        if not phases:
            raise ValueError("A schedule needs at least one phase.")
        self.model, self.x, self.y, self.tree = model, x, y, tree
        self.base_path = base_path
        self.phases = tuple(phases)
        self.config = replace(config, epochs=sum(phase.epochs for phase in self.phases))
        self.slots = slots
        self.recorder = DriftRecorder(tree, every_n_batches=config.drift_every_batches)
        self.step_recorder = StepStatisticsRecorder(
            tree, every_n_batches=config.drift_every_batches
        )
        self._base_config = config
        self._jobs: list[TrainingJob] = []
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self.frozen_paths: frozenset[str] = tree.frozen_paths()
        self.parameter_counts: ParameterCounts = tree.totals()
        self.phase_plans: list[tuple[str, frozenset[str], ParameterCounts]] = []
        self._final_verification: VerificationResult | None = None
        self._cancel_reason = ""
        self._ended = False
        self._done_callbacks = DoneCallbacks()

    # --------------------------------------------------------------------------- running
    @property
    def execution_plan(self) -> ExecutionPlan | None:
        """The current (or last) phase's training path."""
        return self._jobs[-1].execution_plan if self._jobs else None

    def run(self) -> TrainingProgress:
        """Runs every phase in the calling thread; errors end the schedule as failed."""
        try:
            return self._run_phases()
        finally:
            self._ended = True
            self._done_callbacks.fire(self)

    def _run_phases(self) -> TrainingProgress:
        if self.slots is not None and not self.slots.acquire(self, self._cancel):
            self._failure = (
                f"{self._cancel_reason or 'Stopped by request'} while waiting for a training slot."
            )
            return self.progress()
        try:
            for phase in self.phases:
                if self._cancel.is_set():
                    break
                phase.apply(self.tree, self.base_path)
                self.phase_plans.append((phase.name, self.tree.frozen_paths(), self.tree.totals()))
                job = TrainingJob(
                    self.model,
                    self.x,
                    self.y,
                    config=replace(
                        self._base_config, epochs=phase.epochs, learning_rate=phase.learning_rate
                    ),
                    tree=self.tree,
                    recorder=self.recorder,
                    step_recorder=self.step_recorder,
                    representation_recorder=(
                        self._jobs[0].representation_recorder if self._jobs else None
                    ),
                )
                self._jobs.append(job)
                if self._cancel.is_set():  # a Stop that came while this phase was set up
                    job.cancel(self._cancel_reason)
                progress = job.run()
                if progress.state is not JobState.FINISHED:
                    break
        except (ValueError, TypeError, RuntimeError) as error:
            self._failure = f"The schedule could not continue: {error}"
        finally:
            if self.slots is not None:
                self.slots.release()
            if self.recorder.started:
                self._final_verification = self.recorder.verify()
        return self.progress()

    def start(self) -> None:
        """Runs the schedule in a background thread."""
        self._thread = threading.Thread(target=self.run, name="freezelab-schedule", daemon=True)
        self._thread.start()

    def cancel(self, reason: str = "") -> None:
        """Stops the current phase after its batch and skips the rest.

        Args:
            reason: Why, in words, for the final message (default "Stopped by request").
        """
        if reason and not self._cancel.is_set():
            self._cancel_reason = str(reason)
        self._cancel.set()
        for job in list(self._jobs):
            job.cancel(self._cancel_reason)

    def add_done_callback(self, callback) -> None:
        """Calls `callback(job)` once the whole schedule has ended (see `models.job.Job`)."""
        self._done_callbacks.add(self, callback)

    def wait(self, timeout: float | None = None) -> TrainingProgress:
        """Waits for a started schedule to end."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress()

    # --------------------------------------------------------------------------- reading
    def phase_boundaries(self) -> list[PhaseBoundary]:
        """Where every phase that started begins (its first epoch and first training step)."""
        boundaries, epochs, steps = [], 0, 0
        for phase, job in zip(self.phases, self._jobs, strict=False):
            boundaries.append(PhaseBoundary(phase.name, epochs, steps))
            progress = job.progress()
            epochs += progress.epoch
            steps += progress.epoch * (progress.batches_per_epoch or 0)
        return boundaries

    def progress(self) -> TrainingProgress:
        """Merged progress of the phases so far (epochs counted over the whole schedule)."""
        history: dict[str, list[float]] = {}
        batch_history: dict[str, list[float]] = {}
        epochs_done, elapsed, steps_before = 0, 0.0, 0
        current = None
        for job in self._jobs:
            current = job.progress()
            for key, values in current.history.items():
                history.setdefault(key, []).extend(values)
            for key, values in current.batch_history.items():
                shifted = [value + steps_before for value in values] if key == "step" else values
                batch_history.setdefault(key, []).extend(shifted)
            epochs_done += current.epoch
            elapsed += current.elapsed_seconds
            steps_before += current.epoch * (current.batches_per_epoch or 0)
        phase_index = len(self._jobs)
        all_done = self._ended or self._thread is None
        if current is None:
            state, message = JobState.PENDING, "Waiting to start the first phase."
        elif self._failure:
            state, message = JobState.FAILED, self._failure
        elif current.state in (JobState.FAILED, JobState.CANCELLED):
            state, message = current.state, f"Phase {phase_index}: {current.message}"
        elif current.done and phase_index == len(self.phases) and all_done:
            state = JobState.FINISHED
            message = f"Finished {len(self.phases)} phases, {epochs_done} epochs."
        else:
            state = JobState.RUNNING
            name = self.phases[phase_index - 1].name
            message = f"Phase {phase_index} of {len(self.phases)} ({name}): {current.message}"
        if self._failure and current is None:
            state = JobState.CANCELLED if self._cancel.is_set() else JobState.FAILED
        return TrainingProgress(
            state=state,
            epoch=epochs_done,
            epochs=self.config.epochs,
            batch=current.batch if current else 0,
            batches_per_epoch=current.batches_per_epoch if current else None,
            history=history,
            batch_history=batch_history,
            message=message,
            elapsed_seconds=elapsed,
            eta_seconds=current.eta_seconds if current else None,
        )

    def drift_frame(self) -> pd.DataFrame:
        """Drift since the very start, across all phases."""
        return self.recorder.frame()

    def representation(self) -> RepresentationReport:
        """How much each block's features changed since the schedule began."""
        if not self._jobs:
            return RepresentationReport.empty()
        return self._jobs[0].representation_recorder.report()

    def step_statistics_frame(self) -> pd.DataFrame:
        """Gradient and update records across all phases (steps counted from the start)."""
        return self.step_recorder.frame()

    def verification(self) -> VerificationResult:
        """Bitwise check of the layers frozen in every phase (taken when the schedule ended)."""
        if self._final_verification is not None and self.progress().done:
            return self._final_verification
        return self.recorder.verify()

    def proof(self) -> VerificationResult | None:
        """The bitwise check of the frozen layers (`verification`), or None before recording."""
        return self.verification() if self.recorder.started else None
