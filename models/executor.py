"""Where training jobs run: in this process (threads and slots) or on Ray workers.

An `Executor` turns a session's model, data, freeze plan and settings into a `models.job.Job`.
Two implementations exist and the rest of FreezeLab cannot tell them apart, since it reads jobs
only through the Job protocol:

- `LocalExecutor` (the default, what `make run` uses): a `TrainingJob` or `ScheduledJob` in a
  background thread of this process, queued for the server's `TrainingSlots`.
- `models.ray_executor.RayExecutor` (`FREEZELAB_EXECUTOR=ray`): the job runs in a Ray actor on a
  worker of a Ray cluster (`RAY_ADDRESS`), or of a local Ray instance started once per server
  process when no address is given. Ray is optional: `requirements-ray.txt` brings it.

`executor_from_environment()` reads the environment once and says, in words, what it chose and
why (`Executor.description`): e.g. Ray unreachable at start falls back to local training with a
message, unless `FREEZELAB_RAY_FALLBACK=fail`.

Example:
>>> executor = LocalExecutor(slots=None)
>>> job = executor.training_job(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
>>> job.run().state
<JobState.FINISHED: 'finished'>
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from models.job import Job
from models.slots import TrainingSlots
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree

__all__ = [
    "EXECUTORS",
    "EXECUTOR_VARIABLE",
    "FALLBACK_VARIABLE",
    "GPUS_VARIABLE",
    "WARM_WORKERS_VARIABLE",
    "Executor",
    "LocalExecutor",
    "executor_from_environment",
]

LOGGER = logging.getLogger("freezelab")

EXECUTOR_VARIABLE = "FREEZELAB_EXECUTOR"
"""Environment variable choosing the executor: "local" (default) or "ray"."""

FALLBACK_VARIABLE = "FREEZELAB_RAY_FALLBACK"
"""What to do when Ray cannot be reached at start: "local" (default: train here, say so) or
"fail" (the server refuses to start training and says why)."""

GPUS_VARIABLE = "FREEZELAB_RAY_GPUS"
"""GPUs a Ray job asks for: "auto" (default: 1 when the cluster has GPUs, else 0), or a number."""

WARM_WORKERS_VARIABLE = "FREEZELAB_RAY_WARM_WORKERS"
"""Idle Ray workers each server process keeps ready (default 1; 0 on a small shared cluster,
where every replica's idle worker would hold a CPU)."""

EXECUTORS = ("local", "ray")
"""The executors `FREEZELAB_EXECUTOR` may name."""


@runtime_checkable
class Executor(Protocol):
    """Makes training jobs; where they run is the executor's business.

    Attributes:
        name: "local" or "ray".
        description: Where jobs run, in words, for the page (e.g. "Ray cluster at
            10.0.0.5:6379: 8 CPUs, 1 GPU").
    """

    name: str
    description: str

    def training_job(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        *,
        config: TrainingConfig,
        tree: LayerTree,
    ) -> Job:
        """A job that trains `model` once on (x, y) with the tree's current freeze plan."""

    def scheduled_job(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        tree: LayerTree,
        base_path: str,
        phases: Sequence[Any],
        config: TrainingConfig,
    ) -> Job:
        """A job that trains in phases (`models.schedule`), each with its own plan and rate."""


class LocalExecutor:
    """Trains in this process: a background thread per job, queued for the training slots.

    Args:
        slots: The server's `TrainingSlots` (None: no limit, as in notebooks and tests).
        description: How the page names it (a Ray fall-back says why it trains here).

    Example:
    >>> LocalExecutor(slots).training_job(model, x, y, config=config, tree=tree).start()
    """

    name = "local"

    def __init__(self, slots: TrainingSlots | None = None, description: str = "") -> None:
        self.slots = slots
        self.description = description or "this server's own CPUs (local executor)."

    def training_job(self, model, x, y, *, config, tree) -> Job:
        """A `TrainingJob` queued for this server's slots."""
        return TrainingJob(model, x, y, config=config, tree=tree, slots=self.slots)

    def scheduled_job(self, model, x, y, tree, base_path, phases, config) -> Job:
        """A `ScheduledJob` queued for this server's slots."""
        from models.schedule import ScheduledJob

        return ScheduledJob(model, x, y, tree, base_path, phases, config, slots=self.slots)


def executor_from_environment(
    slots: TrainingSlots | None = None, environment: Mapping[str, str] | None = None
) -> Executor:
    """The executor the environment asks for (`FREEZELAB_EXECUTOR`), ready to use.

    With "ray", connects to `RAY_ADDRESS` (or starts a local Ray instance once when it is
    unset). When Ray is not installed or cannot be reached, falls back to a `LocalExecutor`
    whose `description` says why, unless `FREEZELAB_RAY_FALLBACK=fail`, which raises instead.

    Args:
        slots: The server's `TrainingSlots`, for the local executor.
        environment: The variables to read (`os.environ` when None).

    Returns:
        An `Executor`.

    Raises:
        ValueError: When `FREEZELAB_EXECUTOR` or `FREEZELAB_RAY_FALLBACK` names no known choice.
        RuntimeError: When Ray is asked for, cannot be used, and the fallback is "fail".

    Example:
    >>> executor_from_environment(environment={"FREEZELAB_EXECUTOR": "local"}).name
    'local'
    """
    environment = os.environ if environment is None else environment
    choice = environment.get(EXECUTOR_VARIABLE, "local").strip().lower() or "local"
    if choice not in EXECUTORS:
        raise ValueError(
            f"{EXECUTOR_VARIABLE} must be one of {list(EXECUTORS)}; received {choice!r}."
        )
    fallback = environment.get(FALLBACK_VARIABLE, "local").strip().lower() or "local"
    if fallback not in ("local", "fail"):
        raise ValueError(f"{FALLBACK_VARIABLE} must be 'local' or 'fail'; received {fallback!r}.")
    if choice == "local":
        return LocalExecutor(slots)
    try:
        from models.ray_executor import RayExecutor

        return RayExecutor.connect(
            address=environment.get("RAY_ADDRESS") or None,
            gpus=environment.get(GPUS_VARIABLE, "auto"),
            warm_workers=environment.get(WARM_WORKERS_VARIABLE, "").strip() or None,
        )
    except (ImportError, ConnectionError, RuntimeError, ValueError) as error:
        reason = (
            "Ray is not installed (pip install -r requirements-ray.txt)"
            if isinstance(error, ImportError)
            else str(error)
        )
        if fallback == "fail":
            raise RuntimeError(
                f"{EXECUTOR_VARIABLE}=ray but Ray cannot be used: {reason}. Set "
                f"{FALLBACK_VARIABLE}=local to train on this server instead."
            ) from error
        LOGGER.warning("Ray executor unavailable, training locally: %s", reason)
        return LocalExecutor(
            slots, description=f"this server's own CPUs: Ray was asked for but {reason}."
        )
