"""Training on Ray workers: the same Job protocol as a local run, the model trained elsewhere.

`RayExecutor` (chosen with `FREEZELAB_EXECUTOR=ray`, see `models.executor`) sends each job to a
Ray actor. The session keeps its model; the worker gets a `JobSpec`: the model's Keras config,
the value of every variable (weights, BatchNormalization statistics, LoRA adapters and dropout
seed states, so a worker trains exactly what a local run would), the freeze plan, the settings
and seed, and the data through Ray's object store. The actor rebuilds the model with the same
`models/` code, checks that its parameter counts equal the session's, and runs the same
`TrainingJob` or `ScheduledJob`. While it trains, the session's `RayJob` shows its progress,
history, drift, step statistics and representation change, polled about twice a second. When
the job ends, the final values of every variable come back and are set on the session's model,
and the proof of the frozen layers is checked twice: on the worker (its drift recorder) and
again here, bitwise, on the values that came back against those the session sent.

One dispatcher thread per server process owns every Ray call (connecting, creating actors,
polling, cancelling, killing): Streamlit reruns and training threads never call Ray, `ray.init`
runs once, away from the main thread (so Ray installs no signal handler over the server's), and
no Ray call comes from a short-lived thread. The dispatcher keeps one idle worker with
TensorFlow and Keras already imported, so the first progress of a run shows within seconds.

Faults: a worker lost mid-run (killed, its node gone) ends the run as failed, "worker lost",
with the progress, history and drift received so far, and the session's model unchanged. A job
that waits for resources says so ("queued") with what the cluster has free.

Example:
>>> executor = RayExecutor.connect()          # a local Ray instance, or RAY_ADDRESS
>>> job = executor.training_job(model, x, y, config=TrainingConfig(epochs=2), tree=tree)
>>> job.run().state, job.proof().all_unchanged
(<JobState.FINISHED: 'finished'>, True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd

from models.drift import ADAPTED_VARIABLE_NAMES, LayerCheck, VerificationResult
from models.executor import GPUS_VARIABLE, WARM_WORKERS_VARIABLE
from models.job import DoneCallbacks, JobState, PhaseBoundary, TrainingProgress
from models.representation import RepresentationReport
from models.training_config import TrainingConfig
from models.tree import LayerTree, ParameterCounts

__all__ = [
    "POLL_SECONDS",
    "WARM_WORKERS",
    "WORKER_LOST",
    "JobSpec",
    "RayExecutor",
    "RayJob",
    "TrainingWorker",
    "job_spec",
]

LOGGER = logging.getLogger("freezelab")

POLL_SECONDS = 0.25
"""How often the dispatcher asks each running worker for its progress."""

RECORDS_EVERY_POLLS = 4
"""The drift, statistics and representation records come back every this many polls (and at
the end): about once a second."""

CONNECT_TIMEOUT_SECONDS = 3.0
"""How long to wait for a Ray cluster's address to answer before calling it unreachable."""

WORKER_LOST = "failed: worker lost"
"""How a run whose Ray worker died ends (its message starts with it)."""

WARM_WORKERS = 1
"""Idle workers each server process keeps ready by default (`FREEZELAB_RAY_WARM_WORKERS`): TF
imported and one tiny step traced, so a run's first progress shows within seconds. Each holds
a CPU (or GPU) of the cluster while it waits."""


# ----------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to train a session's model as a local run would.

    Attributes:
        model_json: `model.to_json()`: the architecture and each layer's flags.
        values: Every variable's value, in `model.variables` order.
        variable_names: Each variable's name and shape, to check the rebuilt model's order.
        frozen_paths: The freeze plan (`LayerTree.frozen_paths()`).
        counts: The session's parameter counts (the worker checks its own against them).
        config: The settings (a schedule's shared settings for `phases`).
        phases: A schedule's phases (None for a single run).
        base_path: A schedule's base path.
        backend: The Keras backend the session runs (the worker says if it runs another).
    """

    model_json: str
    values: tuple[np.ndarray, ...]
    variable_names: tuple[tuple[str, tuple[int, ...]], ...]
    frozen_paths: frozenset[str]
    counts: ParameterCounts
    config: TrainingConfig
    phases: tuple[Any, ...] | None = None
    base_path: str | None = None
    backend: str = field(default_factory=keras.backend.backend)


def _variable_values(model: keras.Model) -> tuple[np.ndarray, ...]:
    return tuple(np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in model.variables)


def job_spec(
    model: keras.Model,
    tree: LayerTree,
    config: TrainingConfig,
    phases: Sequence[Any] | None = None,
    base_path: str | None = None,
) -> JobSpec:
    """The `JobSpec` of a job on `model` with the tree's current plan.

    Raises:
        ValueError: When the model cannot be described as a Keras config (a subclassed model
            without `get_config`), so no worker could rebuild it.
    """
    try:
        model_json = model.to_json()
    except Exception as error:  # Keras raises NotImplementedError and others here
        raise ValueError(
            f"Model '{model.name}' cannot be sent to a Ray worker: Keras cannot describe it as "
            f"a config ({type(error).__name__}: {error}). Train it with the local executor."
        ) from error
    return JobSpec(
        model_json=model_json,
        values=_variable_values(model),
        variable_names=tuple((v.name, tuple(int(s) for s in v.shape)) for v in model.variables),
        frozen_paths=frozenset(tree.frozen_paths()),
        counts=tree.totals(),
        config=config,
        phases=None if phases is None else tuple(phases),
        base_path=base_path,
    )


# ---------------------------------------------------------------------------- the worker
class TrainingWorker:
    """The Ray actor's class: rebuilds a session's model and trains it with `models/` code.

    Created idle (importing TensorFlow and Keras once, before any job needs it); `start`
    begins a job in a background thread of the actor's process; `poll` reports on it, `cancel`
    stops it between batches, `final_values` returns every variable's value once it ended.
    """

    def __init__(self) -> None:
        import models.bundled_attention
        import models.layers  # noqa: F401

        self._job: Any = None
        self._model: keras.Model | None = None
        self._started = threading.Event()
        _warm_up_training()

    def ready(self) -> str:
        """The worker's Keras backend, once the actor is up."""
        return keras.backend.backend()

    def start(self, spec: JobSpec, x: np.ndarray, y: np.ndarray) -> None:
        """Rebuilds the model from `spec`, checks its counts and starts training it."""
        try:
            self._start(spec, x, y)
        finally:
            self._started.set()

    def _start(self, spec: JobSpec, x: np.ndarray, y: np.ndarray) -> None:
        from models.schedule import ScheduledJob
        from models.training import TrainingJob

        model = keras.models.model_from_json(spec.model_json)
        names = tuple((v.name, tuple(int(s) for s in v.shape)) for v in model.variables)
        if names != spec.variable_names:
            raise ValueError(
                "The model rebuilt on the Ray worker has other variables than the session's "
                f"({len(names)} vs {len(spec.variable_names)}); it cannot train it exactly."
            )
        for variable, value in zip(model.variables, spec.values, strict=True):
            variable.assign(value)
        tree = LayerTree(model)
        tree.apply_frozen_paths(set(spec.frozen_paths))
        if tree.totals() != spec.counts:
            raise ValueError(
                f"The model rebuilt on the Ray worker counts {tree.totals()} parameters, the "
                f"session's {spec.counts}; it would not train the same layers."
            )
        if spec.phases is None:
            job = TrainingJob(model, x, y, config=spec.config, tree=tree)
        else:
            job = ScheduledJob(model, x, y, tree, spec.base_path, spec.phases, spec.config)
        self._model, self._job = model, job
        job.start()

    def poll(self, records: bool = True) -> dict[str, Any]:
        """The job's progress, and with `records` (always once it ended) its records so far.

        Args:
            records: Also send the drift, step-statistics and representation records (the
                dispatcher asks for them about once a second; progress alone is cheap).

        Returns:
            Plain, picklable data.
        """
        job = self._job
        progress = job.progress()
        plan = job.execution_plan
        report: dict[str, Any] = {
            "progress": progress,
            "phase_boundaries": job.phase_boundaries(),
            "execution_note": None if plan is None else plan.message(),
            "execution_cached": plan is not None and bool(plan.cached),
            "pid": os.getpid(),
        }
        if records or progress.done:
            report["drift"] = job.drift_frame()
            report["step_statistics"] = job.step_statistics_frame()
            report["representation"] = job.representation()
        if progress.done:
            report["proof"] = job.proof()
        return report

    def wait_done(self) -> bool:
        """Returns once the job has ended (the dispatcher waits on it instead of polling)."""
        self._started.wait()
        if self._job is not None:  # None: `start` failed, and said why
            self._job.wait()
        return True

    def cancel(self, reason: str) -> None:
        """Asks the job to stop after the current batch."""
        if self._job is not None:
            self._job.cancel(reason)

    def final_values(self) -> tuple[np.ndarray, ...]:
        """Every variable's value after the job (call once `poll` says it ended)."""
        return _variable_values(self._model)


def _warm_up_training() -> None:
    """Trains one batch of a tiny model: a fresh process pays TensorFlow's one-time set-up
    here, while the worker waits for a job, not in the first run it trains."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((8, 4), "float32"), np.zeros(8, "int64"), epochs=1, verbose=0)


# ---------------------------------------------------------------------------- the job
class RayJob:
    """A training job on a Ray worker, read through the `models.job.Job` protocol.

    Made by `RayExecutor.training_job` / `scheduled_job`; its `start()` hands it to the
    server's dispatcher and returns at once. See the module docstring for what travels where.

    Attributes:
        config: The settings of the whole job.
        frozen_paths: The freeze plan when the job was created.
        parameter_counts: Trainable / non-trainable parameters when the job was created.
    """

    def __init__(
        self,
        executor: RayExecutor,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        tree: LayerTree,
        config: TrainingConfig,
        *,
        phases: Sequence[Any] | None = None,
        base_path: str | None = None,
        whole_config: TrainingConfig | None = None,
    ) -> None:
        self._executor = executor
        self.model, self.tree = model, tree
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.spec = job_spec(model, tree, config, phases, base_path)
        self.config = whole_config or config
        self.frozen_paths: frozenset[str] = tree.frozen_paths()
        self.parameter_counts: ParameterCounts = tree.totals()
        self._lock = threading.Lock()
        self._state = JobState.PENDING
        self._message = "Waiting to be sent to the Ray cluster."
        self._report: dict[str, Any] = {}
        self._proof: VerificationResult | None = None
        self._started_at: float | None = None
        self._ended = threading.Event()
        self._claimed = False
        self._cancel_reason: str | None = None
        self._done_callbacks = DoneCallbacks()
        self.worker_pid: int | None = None

    # -------------------------------------------------------------------- the protocol
    @property
    def execution_plan(self) -> Any:
        """Which path the worker's job ran, as its message (None before it started)."""
        note = self._report.get("execution_note")
        return None if note is None else _ExecutionNote(note, self._report["execution_cached"])

    def start(self) -> None:
        """Hands the job to the server's dispatcher and returns at once."""
        with self._lock:
            if self._claimed:
                raise RuntimeError("A RayJob runs once; create a new job to train again.")
            self._claimed = True
            self._started_at = time.monotonic()
        self._executor.dispatcher.submit(self)

    def run(self) -> TrainingProgress:
        """Starts the job and waits for it to end (returns its final progress)."""
        self.start()
        return self.wait()

    def wait(self, timeout: float | None = None) -> TrainingProgress:
        """Waits for the job to end (or `timeout` seconds); returns its progress."""
        self._ended.wait(timeout)
        return self.progress()

    def cancel(self, reason: str = "") -> None:
        """Asks the worker to stop after its current batch (safe from any thread)."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason
        self._executor.dispatcher.wake()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Calls `callback(job)` once the job has ended (at once when it already has)."""
        self._done_callbacks.add(self, callback)

    def progress(self) -> TrainingProgress:
        """The latest progress the worker reported, with this job's own state and message."""
        with self._lock:
            reported: TrainingProgress | None = self._report.get("progress")
            elapsed = 0.0 if self._started_at is None else time.monotonic() - self._started_at
            if reported is None:
                return TrainingProgress(
                    state=self._state, epoch=0, epochs=self.config.epochs, batch=0,
                    batches_per_epoch=None, history={}, batch_history={},
                    message=self._message, elapsed_seconds=elapsed, eta_seconds=None,
                )  # fmt: skip
            state = self._state
            message = self._message if state is not JobState.RUNNING else reported.message
            return TrainingProgress(
                state=state,
                epoch=reported.epoch,
                epochs=reported.epochs,
                batch=reported.batch,
                batches_per_epoch=reported.batches_per_epoch,
                history=reported.history,
                batch_history=reported.batch_history,
                message=message,
                elapsed_seconds=reported.elapsed_seconds,
                eta_seconds=reported.eta_seconds if state is JobState.RUNNING else None,
            )

    def drift_frame(self) -> pd.DataFrame:
        """Every drift record the worker reported."""
        return self._report.get("drift", pd.DataFrame())

    def step_statistics_frame(self) -> pd.DataFrame:
        """Every gradient and update record the worker reported."""
        return self._report.get("step_statistics", pd.DataFrame())

    def representation(self) -> RepresentationReport:
        """The representation change the worker reported."""
        return self._report.get("representation") or RepresentationReport.empty()

    def proof(self) -> VerificationResult | None:
        """The bitwise proof: the worker's, checked again here on the values that came back."""
        return self._proof

    def verification(self) -> VerificationResult:
        """The proof (raises while there is none, like `TrainingJob.verification`)."""
        if self._proof is None:
            raise ValueError("Nothing to verify yet: the job has not ended on its worker.")
        return self._proof

    def phase_boundaries(self) -> list[PhaseBoundary]:
        """Where each phase that started begins, as the worker reported."""
        return list(self._report.get("phase_boundaries", [PhaseBoundary("Training", 0, 0)]))

    # --------------------------------------------------------- the dispatcher's side
    def _cancel_requested(self) -> str | None:
        with self._lock:
            return self._cancel_reason

    def _set(self, state: JobState | None = None, message: str | None = None, **report) -> None:
        with self._lock:
            if state is not None:
                self._state = state
            if message is not None:
                self._message = message
            self._report.update(report)

    def _end(self, state: JobState, message: str, proof: VerificationResult | None) -> None:
        """Ends the job; its done callbacks run in a thread of their own, as a local job's
        run in its training thread, so a slow listener (saving the run, measuring forgetting)
        never holds up the dispatcher and the other jobs' progress."""
        with self._lock:
            self._state, self._message, self._proof = state, message, proof

        def fire() -> None:
            try:
                self._done_callbacks.fire(self)
            finally:
                self._ended.set()  # `wait` returns after the callbacks, as for a local job

        threading.Thread(target=fire, name="freezelab-ray-job-ended", daemon=True).start()

    def _finish_with(self, values: Sequence[np.ndarray], worker_proof: Any) -> VerificationResult:
        """Sets the returned values on the session's model; returns the proof checked here."""
        before = self.spec.values
        variables = list(self.model.variables)
        changed = {
            index
            for index, (old, new) in enumerate(zip(before, values, strict=True))
            if not _same_bits(old, new)
        }
        index_of = {id(variable): index for index, variable in enumerate(variables)}
        checks = []
        for check in getattr(worker_proof, "checks", ()):
            own = [
                (variable, kind)
                for current in (check.path, *self.tree.descendants(check.path))
                for variable, kind in self.tree.own_variables(current)
            ]
            if check.lora_kernel:
                own = [(v, k) for v, k in own if v.name in ADAPTED_VARIABLE_NAMES]
            moved = {kind for v, kind in own if index_of.get(id(v)) in changed}
            checks.append(
                LayerCheck(
                    check.path,
                    check.weights_unchanged and "weights" not in moved,
                    check.state_unchanged and "state" not in moved,
                    check.lora_kernel,
                )
            )
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
        return VerificationResult(tuple(checks))


@dataclass(frozen=True)
class _ExecutionNote:
    """What `RayJob.execution_plan` gives: the worker's plan message, as the local plan does."""

    note: str
    cached: bool

    def message(self) -> str:
        return f"On a Ray worker: {self.note}"


def _same_bits(first: np.ndarray, second: np.ndarray) -> bool:
    first, second = np.asarray(first), np.asarray(second)
    return (
        first.dtype == second.dtype
        and first.shape == second.shape
        and np.ascontiguousarray(first).tobytes() == np.ascontiguousarray(second).tobytes()
    )


# ----------------------------------------------------------------------- the dispatcher
@dataclass
class _Running:
    job: RayJob
    actor: Any
    started: Any  # the ObjectRef of `start`
    done: Any = None  # the ObjectRef of `wait_done`, ready when the job has ended
    poll: Any = None  # the outstanding `poll` ObjectRef
    final: Any = None  # the outstanding `final_values` ObjectRef
    last: dict[str, Any] | None = None
    cancel_sent: bool = False
    polls: int = 0
    queued_polls: int = 0  # dispatcher steps spent waiting for the worker to start the job


class _Dispatcher:
    """The one thread of a server process that makes Ray calls (see the module docstring)."""

    def __init__(self, initialise: Callable[[], None]) -> None:
        self._executor: RayExecutor | None = None
        self._inbox: queue.Queue[RayJob] = queue.Queue()
        self._wake = threading.Event()
        self._running: list[_Running] = []
        self._warm: list[tuple[Any, Any]] = []  # (actor, ready ref)
        self._initialised = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._loop, args=(initialise,), name="freezelab-ray", daemon=True
        )
        self._thread.start()

    def wait_initialised(self) -> None:
        """Waits for `ray.init` in the dispatcher's thread; raises what it raised."""
        self._initialised.wait()
        if self._error is not None:
            raise RuntimeError(f"Ray did not start: {self._error}") from self._error

    def serve(self, executor: RayExecutor) -> None:
        """Starts dispatching `executor`'s jobs (after `wait_initialised`)."""
        self._executor = executor
        self._wake.set()

    def submit(self, job: RayJob) -> None:
        job._set(JobState.PENDING, "Queued on the Ray cluster: sending the model and data.")
        self._inbox.put(job)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------------ the loop
    def _loop(self, initialise: Callable[[], None]) -> None:
        # Ray's local processes die with the THREAD that started them (Linux's parent-death
        # signal follows the thread), so `ray.init` runs here, in the thread that lives on.
        try:
            initialise()
        except BaseException as error:  # reported to `connect` by `wait_initialised`
            self._error = error
            return
        finally:
            self._initialised.set()
        while True:
            try:
                if self._executor is not None:
                    self._step()
            except Exception:  # the dispatcher never dies: a broken step is logged
                LOGGER.exception("The Ray dispatcher's step failed")
            self._pause()

    def _pause(self) -> None:
        """Waits POLL_SECONDS, or less: a job that ends, a submit or a Stop wakes it."""
        done = [running.done for running in self._running if running.done is not None]
        if done and self._executor is not None and not self._wake.is_set():
            try:
                self._executor.ray.wait(done, num_returns=1, timeout=POLL_SECONDS)
            except Exception:  # Ray shutting down: fall back to a plain wait
                self._wake.wait(POLL_SECONDS)
        else:
            self._wake.wait(POLL_SECONDS)
        self._wake.clear()

    def _step(self) -> None:
        ray = self._executor.ray
        if not ray.is_initialized():  # shut down (the process is ending): never re-initialise
            return
        self._keep_warm(ray)
        while not self._inbox.empty():
            job = self._inbox.get()
            try:
                self._launch(ray, job)
            except Exception as error:  # never leave a job waiting for a launch that failed
                LOGGER.exception("A Ray job could not be sent to a worker")
                job._end(JobState.FAILED, f"The job could not be sent to Ray: {error}", None)
        for running in list(self._running):
            try:
                self._advance(ray, running)
            except ray.exceptions.RayActorError as error:
                self._lost(running, error)
            except ray.exceptions.RayTaskError as error:
                self._failed(ray, running, error)
            except Exception as error:  # a job that cannot advance ends; it never hangs
                LOGGER.exception("A Ray job could not be advanced")
                self._failed(ray, running, error)

    def _keep_warm(self, ray: Any) -> None:
        """Keeps the executor's `warm_workers` idle workers, started only while it slows no
        running job: with nothing running, or with a CPU to spare besides the next worker's."""
        wanted = self._executor.warm_workers
        while len(self._warm) > wanted:  # fewer asked for: free what they hold
            actor, _ready = self._warm.pop()
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self._running and ray.available_resources().get("CPU", 0) < 2:
            return
        while len(self._warm) < wanted:
            actor = self._executor.actor_class.options(**self._executor.resources()).remote()
            self._warm.append((actor, actor.ready.remote()))

    def _launch(self, ray: Any, job: RayJob) -> None:
        reason = job._cancel_requested()
        if reason is not None:
            job._end(JobState.CANCELLED, f"{reason or 'Stopped by request'} before it began.", None)
            return
        if not self._warm:  # every warm worker is in use: start one for this job
            actor = self._executor.actor_class.options(**self._executor.resources()).remote()
            self._warm.append((actor, actor.ready.remote()))
        actor, _ready = self._warm.pop(0)
        x, y = ray.put(job.x), ray.put(job.y)
        started = actor.start.remote(job.spec, x, y)
        self._running.append(_Running(job, actor, started, done=actor.wait_done.remote()))

    def _advance(self, ray: Any, running: _Running) -> None:
        job = running.job
        reason = job._cancel_requested()
        if reason is not None and not running.cancel_sent:
            running.actor.cancel.remote(reason)
            running.cancel_sent = True
        if running.final is not None:
            ready, _ = ray.wait([running.final], timeout=0)
            if ready:
                self._complete(ray, running, ray.get(running.final))
            return
        ready, _ = ray.wait([running.started], timeout=0)
        if not ready:  # Ray's state of the worker, asked about once a second (a GCS call)
            if running.queued_polls % RECORDS_EVERY_POLLS == 0:
                job._set(JobState.PENDING, _queued_message(ray, running.actor))
            running.queued_polls += 1
            return
        ray.get(running.started)  # raises the worker's error when the model did not build
        if running.poll is None:
            running.polls += 1
            ended, _ = ray.wait([running.done], timeout=0)
            records = bool(ended) or running.polls % RECORDS_EVERY_POLLS == 1
            running.poll = running.actor.poll.remote(records)
        ready, _ = ray.wait([running.poll], timeout=0)
        if not ready:
            return
        report = ray.get(running.poll)
        running.poll, running.last = None, report
        progress: TrainingProgress = report["progress"]
        job.worker_pid = report["pid"]
        fields = {key: value for key, value in report.items() if key not in ("proof", "pid")}
        if progress.done:
            job._set(**fields)
            running.final = running.actor.final_values.remote()
            self._complete(ray, running, ray.get(running.final))  # the values, right away
        else:
            job._set(progress.state, **fields)

    def _complete(self, ray: Any, running: _Running, values: Sequence[np.ndarray]) -> None:
        job, report = running.job, running.last or {}
        progress: TrainingProgress = report["progress"]
        proof = job._finish_with(values, report.get("proof"))
        self._running.remove(running)
        with contextlib.suppress(Exception):  # the worker is done with; it may be gone
            ray.kill(running.actor)
        job._end(progress.state, progress.message, proof)

    def _lost(self, running: _Running, error: Exception) -> None:
        self._running.remove(running)
        LOGGER.warning("A Ray worker was lost: %s", error)
        running.job._end(
            JobState.FAILED,
            f"{WORKER_LOST}: the Ray worker training this run died ({type(error).__name__}). "
            "What it reported so far is kept; your model is unchanged.",
            None,
        )

    def _failed(self, ray: Any, running: _Running, error: Exception) -> None:
        if running in self._running:
            self._running.remove(running)
        with contextlib.suppress(Exception):  # already gone
            ray.kill(running.actor)
        cause = getattr(error, "cause", None) or error
        running.job._end(JobState.FAILED, f"The Ray worker could not train this run: {cause}", None)


def _queued_message(ray: Any, actor: Any) -> str:
    """What a job whose worker has not started it yet shows: Ray's own scheduling state of the
    worker (as `ray list actors` shows it) and the cluster's free CPUs."""
    free = f"{ray.available_resources().get('CPU', 0):g} CPU free now"
    state = ray_actor_state(actor)
    words = "the worker is up, receiving the model" if state == "ALIVE" else "waiting for a worker"
    ray_words = "" if state is None else f"Ray: {state}; "
    return f"Queued on the Ray cluster: {words} ({ray_words}{free})."


def ray_actor_state(actor: Any) -> str | None:
    """Ray's scheduling state of an actor: "PENDING_CREATION" (waiting for resources or still
    starting), "DEPENDENCIES_UNREADY", "ALIVE", "RESTARTING" or "DEAD".

    Read from the cluster's control store (GCS), which needs no Ray dashboard (the public
    `ray.util.state` API does). None where this Ray version does not answer.
    """
    try:
        from ray._private import state

        return str(state.actors(actor._actor_id.hex())["State"]) or None
    except Exception:  # a private API: any Ray version may change it
        return None


# ------------------------------------------------------------------------- the executor
def _reachable(address: str) -> bool:
    """Whether a Ray cluster's GCS address ("host:port") accepts a TCP connection."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"RAY_ADDRESS must be 'host:port' (e.g. 10.0.0.5:6379) or 'auto'; received {address!r}."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


class RayExecutor:
    """Trains each job in a Ray actor; one per server process (`connect`).

    Args:
        ray: The connected `ray` module.
        address: The cluster's address ("" for a local instance started here).
        gpus: GPUs per job (0 or 1).
        dispatcher: The dispatcher whose thread connected to Ray (`connect` makes both).
        warm_workers: Idle workers kept ready (`WARM_WORKERS`; 0: each run starts its own, and
            its first progress waits for TensorFlow to load there). Can be changed later.

    Example:
    >>> executor = RayExecutor.connect(address="10.0.0.5:6379")
    >>> executor.description  # (one line)
    'Ray cluster at 10.0.0.5:6379: 16 CPUs, 2 GPUs (each run asks for 1 GPU; 1 idle worker
    kept ready).'
    """

    name = "ray"
    _lock = threading.Lock()
    _connected: RayExecutor | None = None

    def __init__(
        self,
        ray: Any,
        address: str,
        gpus: int,
        dispatcher: _Dispatcher,
        warm_workers: int = WARM_WORKERS,
    ) -> None:
        self.ray = ray
        self.address = address
        self.gpus = gpus
        self.warm_workers = warm_workers
        # Two calls at once: `wait_done` blocks while `poll`, `cancel` and the others answer.
        self.actor_class = ray.remote(max_concurrency=4)(TrainingWorker)
        resources = ray.cluster_resources()
        where = f"Ray cluster at {address}" if address else "a local Ray instance"
        gpu_words = f", {resources.get('GPU', 0):g} GPUs" if resources.get("GPU") else ""
        self._cluster_words = f"{where}: {resources.get('CPU', 0):g} CPUs{gpu_words}"
        self.dispatcher = dispatcher
        dispatcher.serve(self)

    @property
    def description(self) -> str:
        """Where runs train, in words (the sidebar shows it)."""
        plural = "" if self.warm_workers == 1 else "s"
        return (
            f"{self._cluster_words} (each run asks for {'1 GPU' if self.gpus else '1 CPU'}; "
            f"{self.warm_workers} idle worker{plural} kept ready)."
        )

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        gpus: str | int = "auto",
        warm_workers: str | int | None = None,
    ) -> RayExecutor:
        """Connects to Ray once per process (later calls return the same executor, with the
        settings of the first).

        Args:
            address: A cluster's "host:port" (`RAY_ADDRESS`); None starts a local instance.
            gpus: "auto" (1 when the cluster has GPUs), or 0 / 1.
            warm_workers: Idle workers this process keeps ready (0 or more; None:
                `WARM_WORKERS`).

        Raises:
            ImportError: When Ray is not installed.
            ConnectionError: When `address` does not answer.
            ValueError: For a malformed address, GPU or warm-worker setting.
        """
        import ray

        try:
            warm = WARM_WORKERS if warm_workers is None else int(warm_workers)
        except ValueError:
            warm = -1
        if warm < 0:
            raise ValueError(
                f"{WARM_WORKERS_VARIABLE} must be a whole number, 0 or more; received "
                f"{warm_workers!r}."
            )

        if address and address != "auto" and not _reachable(address):
            raise ConnectionError(
                f"the Ray cluster at {address} does not answer (RAY_ADDRESS). Start it "
                "(`ray start --head`) or unset RAY_ADDRESS for a local Ray instance"
            )
        with cls._lock:
            if cls._connected is not None:
                if cls._connected.address != (address or ""):
                    raise RuntimeError(
                        f"this process is already connected to Ray at "
                        f"{cls._connected.address or 'a local instance'}; one server process "
                        f"uses one Ray cluster (asked for {address or 'a local instance'})"
                    )
                return cls._connected

            def initialise() -> None:  # away from the main thread: no signal handlers
                if not ray.is_initialized():
                    ray.init(
                        address=address or None,
                        include_dashboard=False,
                        log_to_driver=False,
                        runtime_env={"env_vars": _worker_environment()},
                        **({} if address else {"num_cpus": _local_cpus()}),
                    )

            dispatcher = _Dispatcher(initialise)
            dispatcher.wait_initialised()
            available = ray.cluster_resources().get("GPU", 0)
            if str(gpus).strip().lower() == "auto":
                count = 1 if available >= 1 else 0
            else:
                try:
                    count = int(gpus)
                except ValueError as error:
                    raise ValueError(
                        f"{GPUS_VARIABLE} must be 'auto', 0 or 1; received {gpus!r}."
                    ) from error
            cls._connected = cls(ray, address or "", count, dispatcher, warm)
            return cls._connected

    def resources(self) -> dict[str, Any]:
        """What each job's actor asks Ray for."""
        return {"num_cpus": 1, "num_gpus": self.gpus}

    def training_job(self, model, x, y, *, config, tree) -> RayJob:
        """A `RayJob` that trains `model` once."""
        return RayJob(self, model, x, y, tree, config)

    def scheduled_job(self, model, x, y, tree, base_path, phases, config) -> RayJob:
        """A `RayJob` that trains in phases on the worker (`models.schedule.ScheduledJob`)."""
        from dataclasses import replace

        whole = replace(config, epochs=sum(phase.epochs for phase in phases))
        return RayJob(
            self, model, x, y, tree, config, phases=phases, base_path=base_path,
            whole_config=whole,
        )  # fmt: skip


def _local_cpus() -> int:
    """CPUs for a local Ray instance: this machine's, at least 2 (a warm worker and a job)."""
    return max(os.cpu_count() or 1, 2)


def _worker_environment() -> dict[str, str]:
    """What workers need of this process's environment: the code's path, the backend."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH", "")
    environment = {"PYTHONPATH": root + (os.pathsep + path if path else "")}
    for name in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            environment[name] = os.environ[name]
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment
