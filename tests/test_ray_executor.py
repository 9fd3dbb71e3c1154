"""The Ray executor on a real local Ray instance: same results as a local run, faults handled.

Ray starts once for this module (a local instance with 2 CPUs, as `FREEZELAB_EXECUTOR=ray`
without `RAY_ADDRESS` does); each test trains the bundled model on its digits.
"""

import os
import signal
import socket
import time

import keras
import numpy as np
import pytest

from models import build_default_transfer_model
from models.catalogue import DEFAULT_MODEL, load_template
from models.datasets import load_bundled_dataset
from models.drift import LayerCheck, VerificationResult
from models.executor import LocalExecutor, executor_from_environment
from models.job import Job, JobState
from models.schedule import two_phase_schedule
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree
from models.workspace import Workspace

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")

from models.ray_executor import POLL_SECONDS, WORKER_LOST, RayExecutor, RayJob  # noqa: E402

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def executor():
    return RayExecutor.connect()


@pytest.fixture(scope="module")
def digits():
    data = load_bundled_dataset("digits_5_9")
    return data.x[:400], data.y[:400]


def fresh_model():
    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(f"{BASE}/conv1", True)
    tree.set_frozen(f"{BASE}/batch_norm1", True)
    return model, tree


def values(model):
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in model.variables]


def wait_for_batches(job, batches=2, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.progress()
        if progress.state is JobState.RUNNING and (progress.epoch or progress.batch >= batches):
            return progress
        assert not progress.done, progress.message
        time.sleep(0.05)
    raise AssertionError(f"no progress in {timeout} s: {job.progress().message}")


def test_a_run_on_ray_equals_a_local_run_bitwise(executor, digits):
    x, y = digits
    config = TrainingConfig(epochs=2, learning_rate=1e-2)
    model, tree = fresh_model()
    job = executor.training_job(model, x, y, config=config, tree=tree)
    assert isinstance(job, Job)
    assert job.run().state is JobState.FINISHED
    reference, reference_tree = fresh_model()
    local = TrainingJob(reference, x, y, config=config, tree=reference_tree)
    local.run()
    # The same seed, plan and starting values: the worker trained exactly what a local run does.
    for ray_value, local_value in zip(values(model), values(reference), strict=True):
        assert np.array_equal(ray_value, local_value)
    assert job.proof().all_unchanged and job.proof().message() == local.proof().message()
    assert job.progress().history == local.progress().history
    assert len(job.drift_frame()) == len(local.drift_frame())
    assert job.step_statistics_frame().shape == local.step_statistics_frame().shape
    frame = job.representation().frame
    assert frame.loc[frame.frozen_through, "cka"].eq(1.0).all()
    assert job.worker_pid != os.getpid() and "Ray worker" in job.execution_plan.message()


def test_the_session_checks_the_proof_again_on_the_values_that_came_back(executor, digits):
    x, y = digits
    model, tree = fresh_model()
    job = executor.training_job(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
    conv1 = tree.layer(f"{BASE}/conv1")
    index = next(i for i, v in enumerate(model.variables) if v is conv1.kernel)
    returned = values(model)
    returned[index] = returned[index] + 1.0  # a frozen kernel that "came back" changed
    # The worker says conv1 is unchanged; the session sees otherwise and says so.
    worker_proof = VerificationResult((LayerCheck(f"{BASE}/conv1", True, True),))
    proof = job._finish_with(returned, worker_proof)
    assert not proof.all_unchanged and proof.changed_paths == (f"{BASE}/conv1",)


def test_stop_cancels_the_worker_between_batches(executor, digits):
    x, y = digits
    model, tree = fresh_model()
    job = executor.training_job(model, x, y, config=TrainingConfig(epochs=200), tree=tree)
    job.start()
    wait_for_batches(job)
    job.cancel()
    progress = job.wait(120)
    assert progress.state is JobState.CANCELLED and progress.epoch < 200
    assert "Stopped by request" in progress.message
    assert job.proof().all_unchanged  # the frozen layers, checked on both sides


def test_a_killed_worker_fails_the_run_and_leaves_the_model_unchanged(executor, digits):
    x, y = digits
    model, tree = fresh_model()
    before = values(model)
    job = executor.training_job(model, x, y, config=TrainingConfig(epochs=200), tree=tree)
    job.start()
    wait_for_batches(job)
    deadline = time.monotonic() + 60
    while job.drift_frame().empty:  # the records come back about once a second
        assert time.monotonic() < deadline, "no drift records came back"
        time.sleep(0.05)
    os.kill(job.worker_pid, signal.SIGKILL)
    progress = job.wait(120)
    assert progress.state is JobState.FAILED and progress.message.startswith(WORKER_LOST)
    assert progress.batch_history["loss"]  # what it reported before it died is kept
    assert not job.drift_frame().empty
    assert all(np.array_equal(a, b) for a, b in zip(values(model), before, strict=True))
    assert job.proof() is None


def test_a_run_whose_values_cannot_be_set_fails_and_the_dispatcher_goes_on(executor, digits):
    x, y = digits
    model, tree = fresh_model()
    before = values(model)
    job = executor.training_job(model, x, y, config=TrainingConfig(epochs=1), tree=tree)

    def refuse(returned, worker_proof):
        raise RuntimeError("the session's model was replaced meanwhile")

    job._finish_with = refuse  # a fault on the session's side, after the worker finished
    job.start()
    progress = job.wait(120)
    assert progress.state is JobState.FAILED
    assert "the session's model was replaced meanwhile" in progress.message
    assert all(np.array_equal(a, b) for a, b in zip(values(model), before, strict=True))
    # The next job is served as usual.
    model, tree = fresh_model()
    following = executor.training_job(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
    assert following.run().state is JobState.FINISHED


def test_with_no_warm_workers_a_run_starts_its_own_and_none_stays_idle(executor, digits):
    x, y = digits
    assert "1 idle worker kept ready" in executor.description
    executor.warm_workers = 0
    try:
        assert "0 idle workers kept ready" in executor.description
        executor.dispatcher.wake()
        deadline = time.monotonic() + 30
        while executor.dispatcher._warm:  # the idle one is let go
            assert time.monotonic() < deadline, "the idle worker was kept"
            time.sleep(0.05)
        model, tree = fresh_model()
        job = executor.training_job(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
        assert job.run().state is JobState.FINISHED and job.proof().all_unchanged
        time.sleep(4 * POLL_SECONDS)
        assert not executor.dispatcher._warm
    finally:
        executor.warm_workers = 1
        executor.dispatcher.wake()
    environment = {"FREEZELAB_EXECUTOR": "ray", "FREEZELAB_RAY_WARM_WORKERS": "some"}
    fallback = executor_from_environment(environment=environment)
    assert isinstance(fallback, LocalExecutor)
    assert "FREEZELAB_RAY_WARM_WORKERS must be a whole number" in fallback.description


def test_sessions_train_at_once_on_different_workers_and_the_third_queues(executor):
    template = load_template(DEFAULT_MODEL)
    data = load_bundled_dataset("digits_5_9")
    workspaces = [Workspace(template, data, executor=executor) for _ in range(3)]
    for workspace in workspaces:
        workspace.bulk_action("freeze_base")
    runs = [w.start_run(TrainingConfig(epochs=3)) for w in workspaces]
    # The local instance has 2 CPUs and each worker asks for 1: the third run waits, and says so.
    queued = set()
    deadline = time.monotonic() + 120
    while not runs[2].job.progress().done and time.monotonic() < deadline:
        progress = runs[2].job.progress()
        if progress.state is JobState.PENDING:
            queued.add(progress.message)
        time.sleep(0.05)
    assert any(message.startswith("Queued on the Ray cluster") for message in queued), queued
    # Ray's own scheduling state of the waiting worker, as Ray reports it right now.
    states = {m.split("Ray: ")[1].split(";")[0] for m in queued if "Ray: " in m}
    assert "PENDING_CREATION" in states, queued
    for run in runs:
        assert run.job.wait(240).state is JobState.FINISHED, run.job.progress().message
        assert run.job.proof().all_unchanged
        assert run.pretraining_accuracy == 1.0  # the frozen base still knows digits 0-4
    assert runs[0].job.worker_pid != runs[1].job.worker_pid


def test_a_schedule_runs_its_phases_on_the_worker(executor):
    template = load_template(DEFAULT_MODEL)
    workspace = Workspace(template, load_bundled_dataset("digits_5_9"), executor=executor)
    run = workspace.start_schedule(two_phase_schedule(1, 1e-2, 1, 1e-4), TrainingConfig())
    assert isinstance(run.job, RayJob)
    assert run.job.wait(240).state is JobState.FINISHED, run.job.progress().message
    phases = [phase.name for phase in two_phase_schedule(1, 1e-2, 1, 1e-4)]
    assert [boundary.name for boundary in run.job.phase_boundaries()] == phases
    assert run.job.progress().epoch == 2


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ray_unreachable_falls_back_to_local_training_and_says_why():
    address = f"127.0.0.1:{unused_port()}"
    environment = {"FREEZELAB_EXECUTOR": "ray", "RAY_ADDRESS": address}
    started = time.monotonic()
    executor = executor_from_environment(environment=environment)
    assert time.monotonic() - started < 10
    assert isinstance(executor, LocalExecutor)
    assert address in executor.description and "does not answer" in executor.description
    with pytest.raises(RuntimeError, match="FREEZELAB_RAY_FALLBACK=local"):
        executor_from_environment(environment={**environment, "FREEZELAB_RAY_FALLBACK": "fail"})
    with pytest.raises(ValueError, match="FREEZELAB_EXECUTOR"):
        executor_from_environment(environment={"FREEZELAB_EXECUTOR": "dask"})


def test_the_dashboard_trains_through_ray_with_the_same_page_and_proof(executor, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from components.resources import training_executor
    from tests.app_helpers import open_tab
    from tests.test_app import APP, button, wait_for_run

    monkeypatch.setenv("FREEZELAB_EXECUTOR", "ray")
    training_executor.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=120).run()
        assert any("Training runs on a local Ray instance" in c.value for c in at.sidebar.caption)
        open_tab(at, "2 · Freeze")
        button(at, "Freeze base (feature_extractor)").click().run()
        button(at, "▶ Train").click().run()
        workspace = at.session_state["workspace"]
        assert isinstance(workspace.latest_run.job, RayJob)
        wait_for_run(at, timeout=240)
        assert not at.exception, [e.value for e in at.exception]
        proof = workspace.latest_run.job.proof()
        assert proof.all_unchanged and proof.num_checked > 0
        open_tab(at, "5 · Drift")
        assert any(proof.message() in s.value for s in at.success)
    finally:
        training_executor.clear()
