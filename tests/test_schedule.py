"""Tests for models.schedule: phases recompiled, one drift recorder, the proof across phases."""

import numpy as np
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.schedule import Phase, two_phase_schedule
from models.training import JobState, TrainingConfig
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def workspace_parts():
    return bundled_template(), load_bundled_dataset("digits_5_9")


def test_two_phase_schedule_trains_the_head_then_fine_tunes_the_top_of_the_base(workspace_parts):
    workspace = Workspace(*workspace_parts)
    first_conv = [w.numpy().copy() for w in workspace.tree.layer(f"{BASE}/conv1").weights]
    phases = two_phase_schedule(2, 1e-2, 1, 1e-4, num_layers=4)  # conv3 and after
    run = workspace.start_schedule(phases, TrainingConfig(drift_every_batches=10), background=False)
    progress = run.job.progress()
    assert progress.state is JobState.FINISHED, progress.message
    assert progress.epoch == 3 and len(progress.history["loss"]) == 3
    names = [name for name, _, _ in run.job.phase_plans]
    assert names == ["feature extraction", "fine-tuning"]
    phase_one, phase_two = (plan for _, plan, _ in run.job.phase_plans)
    assert BASE in phase_one and BASE not in phase_two
    counts = [counts.trainable for _, _, counts in run.job.phase_plans]
    assert counts[0] == 165 and counts[1] > counts[0]
    drift = run.job.drift_frame()
    conv3 = drift[(drift.layer_path == f"{BASE}/conv3") & (drift.kind == "weights")]
    phase_two_start = run.job.phase_boundaries()[1][2]
    assert (conv3[conv3.step <= phase_two_start].relative_change == 0).all()
    assert conv3.relative_change.iloc[-1] > 0
    # conv1 stayed frozen in both phases: it is in the proof and bitwise unchanged.
    result = run.job.verification()
    assert f"{BASE}/conv1" in [check.path for check in result.checks] and result.all_unchanged
    for old, new in zip(first_conv, workspace.tree.layer(f"{BASE}/conv1").weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    steps = run.job.progress().batch_history["step"]
    assert steps == sorted(steps)


def test_cancelling_a_schedule_skips_the_remaining_phases(workspace_parts):
    workspace = Workspace(*workspace_parts)
    phases = (Phase("head", "freeze_base", 100, 1e-2), Phase("all", "unfreeze_all", 5, 1e-4))
    run = workspace.start_schedule(phases, TrainingConfig(batch_size=8))
    while not run.job._jobs or run.job._jobs[0].progress().epoch < 1:
        pass
    workspace.stop()
    progress = run.job.wait(60)
    assert progress.state is JobState.CANCELLED
    assert len(run.job.phase_plans) == 1


def test_phase_arguments_are_checked():
    with pytest.raises(ValueError, match="Unknown phase plan 'melt'"):
        Phase("x", "melt", 1, 1e-3)
    with pytest.raises(ValueError, match="learning_rate"):
        Phase("x", "keep", 1, 0)


def test_gradual_unfreezing_trains_more_of_the_base_at_every_step(workspace_parts):
    from models.schedule import gradual_schedule

    workspace = Workspace(*workspace_parts)
    phases = gradual_schedule(1, 1e-2, 2, 4, 1, 1e-4)
    run = workspace.start_schedule(phases, TrainingConfig(), background=False)
    assert run.job.progress().state is JobState.FINISHED, run.job.progress().message
    trainable = [counts.trainable for _, _, counts in run.job.phase_plans]
    assert trainable[0] == 165 and trainable[0] < trainable[1] < trainable[2]
    assert [name for name, _, _ in run.job.phase_boundaries()] == [
        "feature extraction", "unfreeze top 4", "unfreeze top 8",
    ]  # fmt: skip
    assert run.job.verification().all_unchanged  # conv1 stayed frozen throughout
    with pytest.raises(ValueError, match="num_steps"):
        gradual_schedule(1, 1e-2, 0, 4, 1, 1e-4)
