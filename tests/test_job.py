"""The Job protocol and RunSnapshot: one run and a phased schedule read the same way."""

import pandas as pd
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.job import Job, PhaseBoundary
from models.schedule import ScheduledJob, two_phase_schedule
from models.snapshot import RunSnapshot, VerificationSummary
from models.training import JobState, TrainingConfig, TrainingJob
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def workspace() -> Workspace:
    return Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))


def test_a_run_and_a_schedule_both_implement_the_protocol(workspace):
    single = TrainingJob(
        workspace.model, workspace.dataset.x, workspace.dataset.y, tree=workspace.tree
    )
    phases = two_phase_schedule(1, 1e-2, 1, 1e-4)
    scheduled = ScheduledJob(
        workspace.model,
        workspace.dataset.x,
        workspace.dataset.y,
        workspace.tree,
        BASE,
        phases,
        TrainingConfig(),
    )
    for job in (single, scheduled):
        assert isinstance(job, Job)
        assert job.proof() is None  # nothing recorded before the first step
    assert single.phase_boundaries() == [PhaseBoundary("Training", 0, 0)]
    assert scheduled.phase_boundaries() == []  # no phase started yet


def test_snapshots_of_a_schedule_carry_its_phases_and_proof(workspace):
    workspace.bulk_action("unfreeze_all")
    config = TrainingConfig(epochs=1, batch_size=64)
    run = workspace.start_schedule(two_phase_schedule(1, 1e-2, 1, 1e-4), config, background=False)
    snapshot = RunSnapshot.of(run)
    assert snapshot.state is JobState.FINISHED and snapshot.done
    assert [boundary.name for boundary in snapshot.phase_boundaries] == [
        phase.name for phase in run.job.phases
    ]
    assert snapshot.phase_boundaries[1].first_epoch == 1
    assert snapshot.phase_boundaries[1].first_step > 0
    assert snapshot.verification == VerificationSummary.from_result(run.job.verification())
    assert snapshot.verification.all_unchanged
    pd.testing.assert_frame_equal(snapshot.drift, run.job.drift_frame())
    assert snapshot.settings.epochs == 2 and snapshot.history == run.job.progress().history
    assert RunSnapshot.of(run, include_drift=False).drift.empty


def test_a_snapshot_of_a_single_run_names_its_training_path(workspace):
    workspace.bulk_action("freeze_base")
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    run.name = "frozen base"
    snapshot = RunSnapshot.of(run)
    assert snapshot.display_name == "frozen base"
    assert snapshot.execution_note == run.job.execution_plan.message()
    assert snapshot.execution_cached is bool(run.job.execution_plan.cached)
    assert snapshot.phase_boundaries == (PhaseBoundary("Training", 0, 0),)
    assert snapshot.verification.num_checked == run.job.verification().num_checked > 0
