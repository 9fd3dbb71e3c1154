"""RunSnapshot: one run as plain, immutable data, the same for live runs and runs read from disk.

The dashboard draws runs only from snapshots (summary, progress, drift, proof, comparison), so
a run that is training, one that just ended and one restored after a refresh look alike. The
run store writes and reads snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from models.job import JobState, PhaseBoundary, RunEnding, TrainingProgress
from models.lora import LoraSetting
from models.representation import RepresentationReport
from models.training_config import TrainingConfig
from models.tree import ParameterCounts


@dataclass(frozen=True)
class VerificationSummary:
    """The outcome of the bitwise check of frozen layers, as plain data.

    Attributes:
        all_unchanged: Whether every frozen layer kept its weights and state bitwise.
        num_checked: Number of frozen layers checked.
        changed_paths: Paths of frozen layers that changed.
        text: The one-line summary shown to users.
    """

    all_unchanged: bool
    num_checked: int
    changed_paths: tuple[str, ...]
    text: str

    @classmethod
    def from_result(cls, result: Any) -> VerificationSummary:
        """Summarises a `models.drift.VerificationResult`.

        Example:
        >>> VerificationSummary.from_result(run.job.verification()).all_unchanged
        True
        """
        return cls(
            all_unchanged=bool(result.all_unchanged),
            num_checked=int(result.num_checked),
            changed_paths=tuple(str(path) for path in result.changed_paths),
            text=str(result.message()),
        )

    def message(self) -> str:
        """The one-line summary, as `VerificationResult.message()` words it."""
        return self.text


@dataclass(frozen=True, eq=False)
class RunSnapshot:
    """A run at one moment: what it was (settings, plan, counts) and what it did so far.

    Attributes:
        run_id: The run's number in its session (1 to 999999).
        label: Short name, e.g. "Run 2 · 3 epochs · lr 0.01".
        settings: The run's `TrainingConfig` (a schedule's epochs summed over its phases).
        frozen_paths: The freeze plan when the run started, sorted.
        counts: Trainable / non-trainable parameters when the run started.
        progress: Its `TrainingProgress`: state, epochs, metrics per epoch and per batch.
        drift: The drift records (`Job.drift_frame()`).
        verification: The bitwise proof for frozen layers; None while the run trains or when
            nothing was recorded.
        model_title: The base model's title.
        dataset_title: The dataset's title.
        name: The name the user gave the run ("" when none).
        config: The run config (`models.run_config.run_config`), JSON-ready; {} when unknown.
        phase_boundaries: Where each phase began (one entry for a single run).
        execution_note: Which training path ran (cached frozen prefix or plain fit), and why.
        execution_cached: Whether that path was the cached frozen prefix.
        layer_order: Node paths in model order, for charts.
        depths: Node depth by path, for indented charts.
        created_at: When the snapshot was taken (ISO 8601, UTC).
        ending: How the run ended (`RunEnding`: finished, stopped, failed, orphaned); None
            while it trains.
        adapters: The LoRA adapters when it started, path -> `LoraSetting`.
        adapter_parameters: Each adapter's parameters (`a` plus `b`), path -> count.
        layer_multipliers: With per-layer learning rates, each layer's multiplier (path ->
            multiplier, the layers with weights); empty without them.
        pretraining_accuracy: A bundled base's accuracy on its pretraining task (digits 0-4)
            after the run (`models.forgetting`); None for other bases or while it trains.
        step_statistics: The gradient and update records (`Job.step_statistics_frame()`,
            `models.diagnostics`); empty when left out or for a run stored before them.
        representation: How much each block's features changed (`Job.representation()`,
            `models.representation`); an empty report when left out or stored before it.
    """

    run_id: int
    label: str
    settings: TrainingConfig
    frozen_paths: tuple[str, ...]
    counts: ParameterCounts
    progress: TrainingProgress
    drift: pd.DataFrame
    verification: VerificationSummary | None
    model_title: str = ""
    dataset_title: str = ""
    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    phase_boundaries: tuple[PhaseBoundary, ...] = ()
    execution_note: str = ""
    execution_cached: bool = False
    layer_order: tuple[str, ...] = ()
    depths: Mapping[str, int] = field(default_factory=dict)
    created_at: str = ""
    ending: RunEnding | None = None
    adapters: Mapping[str, LoraSetting] = field(default_factory=dict)
    adapter_parameters: Mapping[str, int] = field(default_factory=dict)
    layer_multipliers: Mapping[str, float] = field(default_factory=dict)
    pretraining_accuracy: float | None = None
    step_statistics: pd.DataFrame = field(default_factory=pd.DataFrame)
    representation: RepresentationReport = field(default_factory=RepresentationReport.empty)

    @property
    def display_name(self) -> str:
        """The name the user gave the run, else "Run N"."""
        return self.name.strip() or f"Run {self.run_id}"

    @property
    def done(self) -> bool:
        """Whether the run has ended (finished, cancelled or failed)."""
        return self.progress.done

    @property
    def seconds_per_epoch(self) -> float | None:
        """Training time per finished epoch (None before the first one ends)."""
        epochs = self.progress.epoch
        return self.progress.elapsed_seconds / epochs if epochs else None

    @property
    def state(self) -> JobState:
        """The run's `JobState`."""
        return self.progress.state

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch metrics, e.g. {"loss": [...], "val_accuracy": [...]}."""
        return self.progress.history

    @classmethod
    def of(
        cls, run: Any, config: Mapping[str, Any] | None = None, *, include_drift: bool = True
    ) -> RunSnapshot:
        """Takes a snapshot of a `models.workspace.Run` (training or ended).

        Args:
            run: The run; its job is read through the `models.job.Job` protocol.
            config: The run config to keep with it (for export and restore), if known.
            include_drift: False leaves the drift and step-statistics records out (empty
                frames): cheaper for views that refresh every second and show neither.

        Returns:
            The `RunSnapshot`; its proof is set once the run has ended.

        Example:
        >>> snapshot = RunSnapshot.of(workspace.latest_run)
        >>> snapshot.verification.all_unchanged
        True
        """
        job = run.job
        progress = job.progress()
        proof = job.proof() if progress.done else None
        plan = job.execution_plan
        return cls(
            run_id=int(run.run_id),
            label=str(run.label),
            settings=run.config,
            frozen_paths=tuple(sorted(run.frozen_paths)),
            counts=run.counts,
            progress=progress,
            drift=job.drift_frame() if include_drift else pd.DataFrame(),
            verification=None if proof is None else VerificationSummary.from_result(proof),
            model_title=str(run.model_title),
            dataset_title=str(run.dataset_title),
            name=str(run.name),
            config=dict(config) if config is not None else {"training": run.config.to_dict()},
            phase_boundaries=tuple(job.phase_boundaries()),
            execution_note="" if plan is None else plan.message(),
            execution_cached=plan is not None and bool(plan.cached),
            layer_order=tuple(run.layer_order),
            depths={str(path): int(depth) for path, depth in run.depths.items()},
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            ending=RunEnding.of(progress.state, bool(getattr(run, "orphaned", False))),
            adapters=dict(getattr(run, "adapters", {})),
            adapter_parameters=dict(getattr(run, "adapter_parameters", {})),
            layer_multipliers=dict(getattr(run, "layer_multipliers", {})),
            pretraining_accuracy=getattr(run, "pretraining_accuracy", None),
            step_statistics=job.step_statistics_frame() if include_drift else pd.DataFrame(),
            representation=job.representation() if include_drift else RepresentationReport.empty(),
        )
