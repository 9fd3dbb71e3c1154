"""Tests for models.run_store: finished runs kept on disk per session, pruned by size."""

import json
import os
import threading

import numpy as np
import pandas as pd
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.export import run_config
from models.lora import LoraSetting
from models.run_store import (
    RunStore,
    default_runs_folder,
    is_valid_session_id,
    new_session_id,
)
from models.snapshot import RunSnapshot, VerificationSummary
from models.training import JobState, TrainingConfig, TrainingProgress
from models.tree import ParameterCounts
from models.workspace import Workspace


@pytest.fixture(scope="module")
def finished_run():
    workspace = Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
    workspace.bulk_action("freeze_base")
    workspace.set_lora({"transfer_model/classifier": LoraSetting(2, alpha=4)})
    run = workspace.start_run(TrainingConfig(epochs=2, batch_size=64), background=False)
    config = run_config(
        workspace.template,
        workspace.dataset.name,
        workspace.dataset.title,
        run.frozen_paths,
        run.config,
        run.counts,
        run_id=run.run_id,
    )
    return run, config


def _record(run_id: int = 1, rows: int = 3, label: str = "Run") -> RunSnapshot:
    drift = pd.DataFrame(
        {
            "step": np.arange(rows, dtype="int64"),
            "layer_path": [f"model/layer{i}" for i in range(rows)],
            "relative_change": np.linspace(0, 1, rows) / 3,
            "unchanged": [i % 2 == 0 for i in range(rows)],
        }
    )
    progress = TrainingProgress(
        state=JobState.FINISHED,
        epoch=2,
        epochs=2,
        batch=0,
        batches_per_epoch=None,
        history={"loss": [1.5, float("nan")], "accuracy": [0.1, float("inf")]},
        batch_history={},
        message="Finished 2 epoch(s).",
        elapsed_seconds=1.5,
        eta_seconds=None,
    )
    return RunSnapshot(
        run_id=run_id,
        label=f"{label} {run_id}",
        settings=TrainingConfig(epochs=2),
        config={"training": TrainingConfig().to_dict()},
        frozen_paths=("model/layer0",),
        counts=ParameterCounts(10, 5),
        progress=progress,
        drift=drift,
        verification=VerificationSummary(True, 1, (), "All 1 frozen layer is bitwise unchanged."),
        created_at="2025-01-01T00:00:00+00:00",
    )


def test_round_trip_of_a_real_run_keeps_every_value(tmp_path, finished_run):
    run, config = finished_run
    store = RunStore(tmp_path)
    session_id = new_session_id()
    record = RunSnapshot.of(run, config)
    path = store.save(session_id, record)
    assert path == tmp_path / session_id / "run-000001.json"
    assert (tmp_path / session_id / "run-000001.csv").is_file()
    assert not [name for name in os.listdir(tmp_path / session_id) if name.startswith(".tmp")]

    (loaded,), notices = store.load(session_id)
    assert notices == []
    assert loaded.run_id == run.run_id and loaded.label == run.label
    assert loaded.config == config
    assert set(loaded.frozen_paths) == run.frozen_paths
    assert loaded.counts == run.counts
    assert loaded.history == run.job.progress().history
    assert loaded.progress.batch_history == run.job.progress().batch_history
    assert loaded.progress.epoch == run.job.progress().epoch == 2
    assert loaded.settings == run.config and loaded.display_name == run.display_name
    assert loaded.phase_boundaries == tuple(run.job.phase_boundaries())
    assert loaded.execution_note == run.job.execution_plan.message()
    pd.testing.assert_frame_equal(loaded.drift, run.job.drift_frame(), check_exact=True)
    verification = run.job.verification()
    assert loaded.verification == VerificationSummary.from_result(verification)
    assert loaded.verification.all_unchanged and loaded.verification.num_checked > 0
    assert loaded.state is JobState.FINISHED
    assert loaded.progress.message == run.job.progress().message
    assert loaded.layer_order == tuple(run.layer_order) and loaded.depths == run.depths
    assert loaded.model_title == run.model_title
    assert loaded.adapters == {"transfer_model/classifier": LoraSetting(2, alpha=4)}
    assert loaded.adapter_parameters == {"transfer_model/classifier": 32 * 2 + 2 * 5}
    assert set(loaded.drift.kind) == {"weights", "state", "effective_kernel"}
    assert loaded.pretraining_accuracy == run.pretraining_accuracy == 1.0  # the base was frozen
    statistics = run.job.step_statistics_frame()
    assert not statistics.empty
    pd.testing.assert_frame_equal(loaded.step_statistics, statistics, check_exact=True)
    representation = run.job.representation()
    assert len(representation.frame) == 6 and representation.frame.cka.eq(1.0).all()
    pd.testing.assert_frame_equal(loaded.representation.frame, representation.frame)
    for field in ("note", "epoch", "num_examples", "held_out"):
        assert getattr(loaded.representation, field) == getattr(representation, field), field


def test_round_trip_keeps_nan_infinity_and_dtypes(tmp_path):
    store = RunStore(tmp_path)
    record = _record(rows=5)
    store.save("session-abc", record)
    (loaded,), _ = store.load("session-abc")
    assert np.isnan(loaded.history["loss"][1]) and loaded.history["accuracy"][1] == np.inf
    pd.testing.assert_frame_equal(loaded.drift, record.drift, check_exact=True)
    assert loaded.drift["unchanged"].dtype == bool


def test_runs_are_sorted_and_a_session_keeps_at_most_n(tmp_path):
    store = RunStore(tmp_path, max_runs_per_session=3)
    for run_id in (5, 1, 3, 2, 4):
        store.save("session-abc", _record(run_id))
    runs, _ = store.load("session-abc")
    assert [run.run_id for run in runs] == [3, 4, 5]
    assert store.load("session-new")[0] == []


def test_saving_the_same_run_again_replaces_it(tmp_path):
    store = RunStore(tmp_path)
    store.save("session-abc", _record(1, label="First"))
    store.save("session-abc", _record(1, label="Second"))
    (run,), _ = store.load("session-abc")
    assert run.label == "Second 1"


@pytest.mark.parametrize(
    "session_id", ["../x", "..", "", "a" * 65, "short", "abc/defgh", "abc.defgh", None, 12345678]
)
def test_invalid_session_ids_are_refused(tmp_path, session_id):
    store = RunStore(tmp_path)
    assert not is_valid_session_id(session_id)
    with pytest.raises(ValueError, match="Invalid session id"):
        store.save(session_id, _record())
    with pytest.raises(ValueError, match="Invalid session id"):
        store.load(session_id)
    assert list(tmp_path.iterdir()) == []


def test_new_session_ids_are_valid_and_distinct():
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(is_valid_session_id(i) and len(i) == 12 for i in ids)


def test_prune_by_size_keeps_the_newest_and_the_one_just_saved(tmp_path):
    store = RunStore(tmp_path, max_bytes=10**9)
    for index, session_id in enumerate(["session-01", "session-02", "session-03"]):
        store.save(session_id, _record(rows=200))
        os.utime(tmp_path / session_id, (1_000_000 + index, 1_000_000 + index))
    one_session = store.total_bytes() // 3
    store.max_bytes = 2 * one_session + one_session // 2
    assert store.prune() == ["session-01"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session-02", "session-03"]

    # Saving into the oldest session makes it the newest; a tiny limit never removes it.
    small = RunStore(tmp_path, max_bytes=1)
    small.save("session-02", _record(2, rows=200))
    assert [p.name for p in tmp_path.iterdir()] == ["session-02"]
    assert [run.run_id for run in small.load("session-02")[0]] == [1, 2]


def test_corrupt_or_incomplete_files_are_skipped_with_a_notice(tmp_path):
    store = RunStore(tmp_path)
    for run_id in (1, 2, 3, 4):
        store.save("session-abc", _record(run_id))
    folder = tmp_path / "session-abc"
    (folder / "run-000001.json").write_text("{not json")
    (folder / "run-000002.csv").unlink()
    data = json.loads((folder / "run-000003.json").read_text())
    data["drift_rows"] = 99
    (folder / "run-000003.json").write_text(json.dumps(data))
    (folder / ".tmp-leftover").write_text("partial")
    runs, notices = store.load("session-abc")
    assert [run.run_id for run in runs] == [4]
    assert len(notices) == 3
    assert all("could not be read and was skipped" in notice for notice in notices)
    assert "Stored run 1" in notices[0]


def test_concurrent_saves_from_many_threads(tmp_path):
    store = RunStore(tmp_path)
    errors = []

    def work(index: int) -> None:
        try:
            session_id = f"session-{index:03d}"
            for run_id in (1, 2):
                RunStore(tmp_path).save(session_id, _record(run_id))
            assert len(store.load(session_id)[0]) == 2
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list(tmp_path.iterdir())) == 12


def test_default_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FREEZELAB_RUNS_DIR", str(tmp_path / "custom"))
    assert default_runs_folder() == tmp_path / "custom"
    assert RunStore().folder == tmp_path / "custom"
    monkeypatch.delenv("FREEZELAB_RUNS_DIR")
    assert default_runs_folder().name == "runs"
    assert (default_runs_folder().parent / "models" / "run_store.py").is_file()


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        RunStore(tmp_path, max_bytes=0)
    store = RunStore(tmp_path)
    with pytest.raises(TypeError, match="RunSnapshot"):
        store.save("session-abc", {"run_id": 1})
    with pytest.raises(ValueError, match="run_id"):
        store.save("session-abc", _record(run_id=0))


def test_a_running_job_cannot_be_stored(tmp_path, finished_run):
    from dataclasses import replace

    run, _ = finished_run
    snapshot = RunSnapshot.of(run)
    running = replace(snapshot, progress=replace(snapshot.progress, state=JobState.RUNNING))
    with pytest.raises(ValueError, match="still running"):
        RunStore(tmp_path).save("session-abc", running)


def test_runs_stored_before_snapshots_still_load(tmp_path, finished_run):
    run, config = finished_run
    store = RunStore(tmp_path)
    path = store.save("session-abc", RunSnapshot.of(run, config))
    record = json.loads(path.read_text())
    for key in ("name", "epoch", "elapsed_seconds", "settings", "phase_boundaries",
                "execution_note", "execution_cached"):  # fmt: skip
        del record[key]
    record["format_version"] = 1
    path.write_text(json.dumps(record))
    (loaded,), notices = store.load("session-abc")
    assert notices == []
    assert loaded.settings == run.config  # read back from the run config's training block
    assert loaded.progress.epoch == 2 and loaded.history == run.job.progress().history
