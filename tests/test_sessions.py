"""URL sessions on one server (models.sessions): done callbacks, saving every ended run from the
job's own completion, the orphan reaper, the memory budget and the session record."""

import json
import math
import threading
import time

import numpy as np
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.job import JobState, RunEnding
from models.lora import LoraSetting
from models.run_store import RunStore, new_session_id
from models.schedule import two_phase_schedule
from models.session_record import DataSource, SessionRecord
from models.sessions import (
    MemoryBudgetError,
    SessionRegistry,
    dataset_bytes,
    keep_ended_runs,
    memory_budget_bytes,
    model_bytes,
    orphan_grace_seconds,
    parse_size,
)
from models.slots import TrainingSlots
from models.training import TrainingConfig, TrainingJob
from models.workspace import Workspace

LONG = TrainingConfig(epochs=1000, batch_size=8)  # runs until something stops it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def template():
    return bundled_template()


@pytest.fixture(scope="module")
def digits():
    return load_bundled_dataset("digits_5_9")


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ------------------------------------------------------------------------ done callbacks
def test_a_done_callback_runs_once_after_the_job_ended_and_late_ones_run_at_once(template, digits):
    workspace = Workspace(template, digits)
    job = TrainingJob(workspace.model, digits.x, digits.y, config=TrainingConfig(epochs=1))
    seen = []
    job.add_done_callback(lambda ended: seen.append(ended.progress().state))
    job.add_done_callback(lambda ended: 1 / 0)  # a failing listener changes nothing
    job.run()
    assert seen == [JobState.FINISHED]
    job.add_done_callback(lambda ended: seen.append("late"))
    assert seen == [JobState.FINISHED, "late"]
    assert job.progress().state is JobState.FINISHED


def test_a_schedule_is_done_for_its_callbacks_and_reports_finished_from_them(template, digits):
    workspace = Workspace(template, digits)
    job = workspace.start_schedule(
        two_phase_schedule(1, 1e-2, 1, 1e-4), TrainingConfig(batch_size=32), background=False
    ).job
    states = []
    job.add_done_callback(lambda ended: states.append(ended.progress().state))
    assert states == [JobState.FINISHED]

    started = workspace.start_schedule(
        two_phase_schedule(500, 1e-2, 1, 1e-4), TrainingConfig(batch_size=8)
    )
    seen = []
    started.job.add_done_callback(lambda ended: seen.append(ended.progress()))
    wait_until(lambda: started.job.progress().batch > 0)
    started.job.cancel("Stopped for the test")
    started.job.wait(60)
    assert len(seen) == 1 and seen[0].state is JobState.CANCELLED
    assert "Stopped for the test" in seen[0].message


def test_every_ended_run_is_saved_from_its_own_completion_with_how_it_ended(
    template, digits, tmp_path
):
    store = RunStore(tmp_path)
    session_id = new_session_id()
    workspace = Workspace(template, digits)
    keep_ended_runs(workspace, store, session_id)
    workspace.start_run(TrainingConfig(epochs=1, batch_size=32), background=False)
    stopped = workspace.start_run(LONG)
    wait_until(lambda: stopped.job.progress().batch > 0)
    workspace.stop()
    stopped.job.wait(60)
    failing = workspace.start_run(TrainingConfig(epochs=1, learning_rate=10.0, batch_size=8))
    failing.job.wait(60)
    runs, notices = store.load(session_id)  # nobody called save: the jobs did
    assert not notices
    endings = {run.run_id: run.ending for run in runs}
    assert endings[1] is RunEnding.FINISHED and endings[2] is RunEnding.STOPPED
    assert endings[3] in (RunEnding.FAILED, RunEnding.FINISHED)  # lr 10 diverges, or not
    assert endings[3] is RunEnding.of(failing.job.progress().state)
    assert runs[0].config["training"]["epochs"] == 1  # the run config is kept with it


# ------------------------------------------------------------------------- the reaper
def test_the_reaper_spares_a_page_within_the_grace_period_and_stops_an_orphan(
    template, digits, tmp_path
):
    clock = FakeClock()
    registry = SessionRegistry(grace_seconds=120, memory_budget=10**12, clock=clock)
    store = RunStore(tmp_path)
    slots = TrainingSlots(limit=1)
    session = registry.open("session-a1")
    session.workspace = Workspace(template, digits, slots=slots)
    keep_ended_runs(session.workspace, store, session.session_id)
    run = session.workspace.start_run(LONG)
    wait_until(lambda: run.job.progress().batch > 0)

    clock.now += 100  # a refresh takes a few seconds: the page comes back within the grace
    assert registry.reap() == []
    registry.open("session-a1")  # the refreshed page
    clock.now += 100
    assert registry.reap() == [] and not run.job.progress().done

    clock.now += 21  # gone 121 s
    orphans = registry.reap()
    assert [(orphan.session_id, orphan.run_id) for orphan in orphans] == [("session-a1", 1)]
    assert orphans[0].seconds_gone == pytest.approx(121)
    run.job.wait(60)
    assert run.ending is RunEnding.ORPHANED
    assert "page was closed for 121 s" in run.job.progress().message
    assert slots.running == 0  # its slot is free again
    stored, _ = store.load("session-a1")
    assert [snapshot.ending for snapshot in stored] == [RunEnding.ORPHANED]
    assert stored[0].progress.state is JobState.CANCELLED


def test_an_orphan_waiting_for_a_slot_never_takes_it(template, digits):
    clock = FakeClock()
    registry = SessionRegistry(grace_seconds=5, memory_budget=10**12, clock=clock)
    slots = TrainingSlots(limit=1)
    first, second = registry.open("session-b1"), registry.open("session-b2")
    first.workspace = Workspace(template, digits, slots=slots)
    second.workspace = Workspace(template, digits, slots=slots)
    running = first.workspace.start_run(LONG)
    wait_until(lambda: running.job.progress().batch > 0)
    waiting = second.workspace.start_run(LONG)
    wait_until(lambda: slots.waiting == 1)
    registry.touch("session-b1")
    clock.now += 6
    registry.touch("session-b1")
    assert [orphan.session_id for orphan in registry.reap()] == ["session-b2"]
    waiting.job.wait(60)
    assert waiting.ending is RunEnding.ORPHANED
    assert "waiting for a training slot" in waiting.job.progress().message
    assert waiting.job.progress().epoch == 0 and slots.running == 1
    first.workspace.stop()
    running.job.wait(60)
    assert running.ending is RunEnding.STOPPED and slots.running == 0


def test_an_open_connection_keeps_a_page_alive_without_heartbeats_and_a_closed_one_does_not(
    template, digits
):
    clock = FakeClock()
    open_connections = {"socket-1", "socket-2"}
    registry = SessionRegistry(
        grace_seconds=10, memory_budget=10**12, clock=clock,
        connection_open=open_connections.__contains__,
    )  # fmt: skip
    slots = TrainingSlots(limit=2)
    quiet = registry.open("session-f1", connection="socket-1")  # no heartbeat ever after
    closing = registry.open("session-f2", connection="socket-2")
    runs = {}
    for session in (quiet, closing):
        session.workspace = Workspace(template, digits, slots=slots)
        runs[session.session_id] = session.workspace.start_run(LONG)
    wait_until(lambda: all(run.job.progress().batch > 0 for run in runs.values()))

    clock.now += 60  # a starved server ran neither page's script for a minute
    assert registry.reap() == []  # both sockets are open: both pages are there
    open_connections.discard("socket-2")  # the second tab is closed
    clock.now += 9
    assert registry.reap() == []  # within the grace, counted from when it was last open
    assert closing.connections == set() and quiet.connections == {"socket-1"}
    clock.now += 2
    orphans = registry.reap()
    assert [orphan.session_id for orphan in orphans] == ["session-f2"]
    assert orphans[0].seconds_gone == pytest.approx(11)
    runs["session-f2"].job.wait(60)
    assert runs["session-f2"].ending is RunEnding.ORPHANED
    assert not runs["session-f1"].job.progress().done
    # A refresh of the quiet page opens a new socket; the old one closes: still alive.
    registry.open("session-f1", connection="socket-3")
    open_connections.symmetric_difference_update({"socket-1", "socket-3"})
    clock.now += 60
    assert registry.reap() == [] and quiet.connections == {"socket-3"}
    quiet.workspace.stop()
    runs["session-f1"].job.wait(60)
    assert runs["session-f1"].ending is RunEnding.STOPPED


def test_without_a_connection_probe_connections_are_not_kept(template, digits):
    registry = SessionRegistry(grace_seconds=10, memory_budget=10**12, clock=FakeClock())
    assert registry.open("session-g1", connection="socket-1").connections == set()


def test_the_reaper_thread_frees_an_orphans_slot_within_the_grace_period_and_its_interval(
    template, digits
):
    orphaned = threading.Event()
    registry = SessionRegistry(
        grace_seconds=1.0, memory_budget=10**12, on_orphan=lambda orphan: orphaned.set()
    )
    slots = TrainingSlots(limit=1)
    session = registry.open("session-c1")
    session.workspace = Workspace(template, digits, slots=slots)
    run = session.workspace.start_run(LONG)
    wait_until(lambda: run.job.progress().batch > 0)
    registry.touch("session-c1")
    left = time.monotonic()  # the page is gone from now on
    registry.start_reaper()
    try:
        assert orphaned.wait(30)
        run.job.wait(60)
        freed_after = time.monotonic() - left
    finally:
        registry.stop_reaper()
    assert run.ending is RunEnding.ORPHANED and slots.running == 0
    # Not asserted as a time (shared machines are noisy): the reaper's own bound is reported.
    assert registry.reap_interval == 0.25
    assert freed_after > registry.grace_seconds


def test_grace_and_budget_settings_are_read_and_bad_ones_fall_back():
    assert orphan_grace_seconds({}) == 120.0
    assert orphan_grace_seconds({"FREEZELAB_ORPHAN_GRACE_S": "3.5"}) == 3.5
    assert orphan_grace_seconds({"FREEZELAB_ORPHAN_GRACE_S": "-1"}) == 120.0
    assert orphan_grace_seconds({"FREEZELAB_ORPHAN_GRACE_S": "soon"}) == 120.0
    assert parse_size("512M") == 512 * 1024**2 and parse_size("2GiB") == 2 * 1024**3
    assert parse_size("1.5g") == int(1.5 * 1024**3) and parse_size("1000") == 1000
    with pytest.raises(ValueError, match="received 'lots'"):
        parse_size("lots")
    assert memory_budget_bytes({"FREEZELAB_MEMORY_BUDGET": "2G"}) == 2 * 1024**3
    default = memory_budget_bytes({})
    assert memory_budget_bytes({"FREEZELAB_MEMORY_BUDGET": "-"}) == default > 0
    with pytest.raises(ValueError, match="grace_seconds"):
        SessionRegistry(grace_seconds=0)


# ---------------------------------------------------------------------------- memory
def test_memory_accounting_matches_keras_and_numpy(template, digits):
    workspace = Workspace(template, digits)
    expected = sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in workspace.model.weights)
    assert model_bytes(workspace.model) == expected
    assert dataset_bytes(digits) == digits.x.nbytes + digits.y.nbytes
    registry = SessionRegistry(grace_seconds=60, memory_budget=10**12)
    for name in ("session-d1", "session-d2"):
        registry.open(name).workspace = Workspace(template, digits)
    # Both hold their own model, and share one dataset (counted once).
    assert registry.memory_in_use() == 2 * expected + dataset_bytes(digits)


def test_make_room_releases_least_recently_used_idle_sessions_and_never_a_training_one(
    template, digits
):
    clock = FakeClock()
    one_model = model_bytes(Workspace(template, digits).model)
    registry = SessionRegistry(
        grace_seconds=60, memory_budget=3 * one_model + dataset_bytes(digits), clock=clock
    )
    sessions = {}
    for name in ("session-e1", "session-e2", "session-e3"):
        clock.now += 1
        sessions[name] = registry.open(name)
        sessions[name].workspace = Workspace(template, digits)
    training = sessions["session-e1"].workspace.start_run(LONG)  # the oldest, but training
    wait_until(lambda: training.job.progress().batch > 0)
    clock.now += 1
    registry.open("session-e3")  # the newest, asking for room
    released = registry.make_room("session-e3", one_model)
    assert released == ["session-e2"]  # the least recently used idle one, and only it
    assert sessions["session-e2"].workspace is None and sessions["session-e2"].released == 1
    assert sessions["session-e1"].workspace is not None
    with pytest.raises(MemoryBudgetError, match="memory budget") as raised:
        registry.make_room("session-e3", 10 * one_model)
    assert "training now" in str(raised.value)
    assert registry.allowance("session-e3") < 10 * one_model
    sessions["session-e1"].workspace.stop()
    training.job.wait(60)


# --------------------------------------------------------------------- session record
def test_the_session_record_round_trips_through_the_run_store(tmp_path):
    store = RunStore(tmp_path)
    record = SessionRecord(
        "bundled_digits_cnn",
        DataSource("zip", filename="pets.zip", image_size=32),
        frozen_paths=("transfer_model/feature_extractor",),
        settings={"validation_fraction": 0.3, "schedule_mode": "Two phases", "odd": object()},
        training=TrainingConfig(epochs=4),
        adapters={"transfer_model/classifier": LoraSetting(4, alpha=8)},
    )
    assert record.settings == {"validation_fraction": 0.3, "schedule_mode": "Two phases"}
    assert store.load_record("session-f1") is None
    store.save_record("session-f1", record)
    assert store.load_record("session-f1") == record
    assert store.save_upload("session-f1", "data", b"zip bytes")
    assert store.load_upload("session-f1", "data") == b"zip bytes"
    with pytest.raises(ValueError, match="Upload it again"):
        store.load_upload("session-f1", "model")
    with pytest.raises(ValueError, match="role"):
        store.save_upload("session-f1", "secrets", b"")
    (tmp_path / "session-f1" / "session.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        store.load_record("session-f1")
    with pytest.raises(ValueError, match="must be a model key"):
        SessionRecord("no such model", DataSource("bundled", key="shapes"))
    with pytest.raises(ValueError, match="kind"):
        DataSource("ftp")
    with pytest.raises(TypeError, match="LoraSetting"):
        SessionRecord("bundled_digits_cnn", DataSource("bundled", key="shapes"), adapters={"x": 4})
    # A record written before adapters existed reads as one without adapters.
    old = json.loads(record.to_json())
    del old["adapters"]
    assert SessionRecord.from_json(json.dumps(old)).adapters == {}


def test_over_budget_the_reaper_releases_only_pages_gone_longer_than_the_grace(template, digits):
    clock = FakeClock()
    one_model = model_bytes(Workspace(template, digits).model)
    registry = SessionRegistry(
        grace_seconds=60, memory_budget=2 * one_model + dataset_bytes(digits), clock=clock
    )
    for name in ("session-g1", "session-g2", "session-g3"):
        registry.open(name).workspace = Workspace(template, digits)
        clock.now += 30
    assert registry.memory_in_use() > registry.memory_budget
    # g1 was seen 90 s ago, g2 60 s ago (not longer than the grace), g3 30 s ago.
    assert registry.release_over_budget() == ["session-g1"]
    assert registry.memory_in_use() <= registry.memory_budget
    assert registry.release_over_budget() == []
