"""The server's sessions, keyed by the `session` id in the page URL, not by the browser socket.

A refresh or a reconnect opens a new socket but keeps the URL, so the page finds its session
here again: the same `Workspace` (model, plan, dataset), its running job (live progress, Stop
works) and the values the page keeps across reloads (its settings). A page is alive while one
of its connections (the browser sockets its script runs came from) is open, which the server
knows without the page doing anything, so a busy server that delays a page's reruns never
mistakes it for gone; every script run (and a heartbeat while a job trains) also touches the
session, which is all a registry without a connection probe goes by. A session whose page has
been gone longer than the grace period has its job cancelled by the reaper, which frees the
job's training slot; the run then ends as `RunEnding.ORPHANED`.

Memory is bounded server-wide: `memory_budget_bytes()` (`FREEZELAB_MEMORY_BUDGET`, default
half the machine's memory) is shared by every session's workspace (its model's weights and its
dataset's arrays, a dataset shared by several sessions counted once). When a new dataset would
not fit, the workspaces of the least recently used idle sessions are released (their pages
rebuild them from what the session recorded on disk when they come back).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.checks import human_size
from models.run_store import RunStore
from models.snapshot import RunSnapshot
from models.workspace import Run, Workspace

LOGGER = logging.getLogger("freezelab")
ORPHAN_GRACE_ENVIRONMENT_VARIABLE = "FREEZELAB_ORPHAN_GRACE_S"
DEFAULT_ORPHAN_GRACE_SECONDS = 120.0
MEMORY_BUDGET_ENVIRONMENT_VARIABLE = "FREEZELAB_MEMORY_BUDGET"
DEFAULT_MEMORY_SHARE = 0.5  # of the machine's memory, when no budget is set
MAX_REAP_INTERVAL_SECONDS = 1.0  # a check is a few dictionary lookups
_SIZE_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class MemoryBudgetError(ValueError):
    """A dataset that would not fit in the server's memory budget, even after releasing."""


# --------------------------------------------------------------------------- settings
def orphan_grace_seconds(environ: dict[str, str] | None = None) -> float:
    """Seconds a page may be gone before its training job is cancelled.

    Reads `FREEZELAB_ORPHAN_GRACE_S` (a number of seconds > 0); default 120. An invalid value
    is logged and the default used, so a typo never stops the server.

    Example:
    >>> orphan_grace_seconds({"FREEZELAB_ORPHAN_GRACE_S": "5"})
    5.0
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ORPHAN_GRACE_ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_ORPHAN_GRACE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        LOGGER.warning(
            "%s=%r is not a number of seconds > 0; using %s s.",
            ORPHAN_GRACE_ENVIRONMENT_VARIABLE, text, DEFAULT_ORPHAN_GRACE_SECONDS,
        )  # fmt: skip
        return DEFAULT_ORPHAN_GRACE_SECONDS
    return value


def parse_size(text: str) -> int:
    """Reads a memory size: bytes, or a number with K, M, G or T (binary units), e.g. "6G".

    Raises:
        ValueError: For anything else, saying what was received.

    Example:
    >>> parse_size("512M"), parse_size("1.5g"), parse_size("1000")
    (536870912, 1610612736, 1000)
    """
    match = _SIZE_PATTERN.fullmatch(str(text))
    if match is None:
        raise ValueError(
            f"Expected a memory size such as 6G, 512M or 1000000 (bytes); received {text!r}."
        )
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"A memory size must be more than 0 bytes; received {text!r}.")
    return size


def machine_memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def memory_budget_bytes(environ: dict[str, str] | None = None) -> int:
    """The memory all sessions' workspaces may hold together.

    `FREEZELAB_MEMORY_BUDGET` (e.g. "6G"), else half the machine's memory (4 GiB when the
    system does not say). An invalid value is logged and the default used.

    Example:
    >>> memory_budget_bytes({"FREEZELAB_MEMORY_BUDGET": "2G"})
    2147483648
    """
    environ = os.environ if environ is None else environ
    default = int((machine_memory_bytes() or 8 * 1024**3) * DEFAULT_MEMORY_SHARE)
    text = environ.get(MEMORY_BUDGET_ENVIRONMENT_VARIABLE, "").strip()
    if not text:
        return default
    try:
        return parse_size(text)
    except ValueError as error:
        LOGGER.warning("%s: %s Using %s.", MEMORY_BUDGET_ENVIRONMENT_VARIABLE, error, default)
        return default


# --------------------------------------------------------------------- memory accounting
def array_bytes(value: Any) -> int:
    """Bytes of a NumPy array (0 for anything else)."""
    return int(value.nbytes) if isinstance(value, np.ndarray) else 0


def dataset_bytes(dataset: Any) -> int:
    """Bytes a dataset's arrays hold (its `nbytes` when it has one, else x and y)."""
    size = getattr(dataset, "nbytes", None)
    if isinstance(size, int | np.integer):
        return int(size)
    return array_bytes(getattr(dataset, "x", None)) + array_bytes(getattr(dataset, "y", None))


def model_bytes(model: Any) -> int:
    """Bytes of a Keras model's variables (weights and states)."""
    total = 0
    for variable in getattr(model, "weights", []):
        shape = tuple(int(size) for size in variable.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(str(variable.dtype)).itemsize
    return total


# -------------------------------------------------------------------------- ended runs
def keep_ended_runs(workspace: Workspace, store: RunStore, session_id: str) -> None:
    """Saves every run of `workspace` to `store` when it ends, from the job's own thread.

    Finished, stopped, failed and orphaned runs alike are saved with their run config and how
    they ended (`RunSnapshot.ending`), whether or not a page is left to show them. A disk that
    refuses the write is logged; the run stays in memory.

    Example:
    >>> keep_ended_runs(workspace, RunStore(), session_id)
    >>> workspace.start_run(TrainingConfig(epochs=1), background=False)  # saved when it ends
    """

    def keep(run: Run) -> None:
        try:
            store.save(session_id, RunSnapshot.of(run, workspace.run_config(run)))
        except (OSError, ValueError, TypeError) as error:
            LOGGER.warning("Could not keep run %s on disk: %s", run.run_id, error)

    workspace.add_run_listener(keep)


# ---------------------------------------------------------------------------- sessions
@dataclass
class Session:
    """One URL session on this server.

    Attributes:
        session_id: The id in the page URL.
        workspace: Its `Workspace`, or None before it is built or after it was released.
        values: What the page keeps across refreshes (settings, choices), by name.
        last_seen: `clock()` time of the page's last sign of life (a script run, a heartbeat,
            or a connection found open).
        connections: Ids of the connections (browser sockets) its script runs came from; the
            closed ones are dropped when the registry next looks.
        released: How many times its workspace was released to free memory.
    """

    session_id: str
    workspace: Workspace | None = None
    values: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0
    connections: set[str] = field(default_factory=set)
    released: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def training(self) -> bool:
        """Whether its workspace has a run training (or waiting for a slot)."""
        return self.workspace is not None and self.workspace.is_training


@dataclass(frozen=True)
class Orphan:
    """A job the reaper cancelled: whose, which run, and how long its page had been gone."""

    session_id: str
    run_id: int
    seconds_gone: float


class SessionRegistry:
    """Every session of this server process, by URL session id; thread-safe.

    Args:
        grace_seconds: How long a page may be gone before its job is cancelled
            (`orphan_grace_seconds()` when None).
        memory_budget: Bytes all workspaces may hold together (`memory_budget_bytes()` when
            None).
        clock: Seconds, monotonic (tests pass a fake clock).
        connection_open: Tells whether a connection (by the id given to `open` or `touch`) is
            still open; a session with an open connection counts as seen now. The dashboard
            asks Streamlit's runtime; None: only script runs and heartbeats count.
        on_orphan: Called with each `Orphan` the reaper cancels (for logs and the load test).

    Example:
    >>> registry = SessionRegistry(grace_seconds=120)
    >>> session = registry.open("Xk3_9aQ-2bZr")
    >>> session.workspace = session.workspace or Workspace(template, dataset)
    >>> registry.reap()  # cancels the jobs of pages gone longer than the grace period
    []
    """

    def __init__(
        self,
        *,
        grace_seconds: float | None = None,
        memory_budget: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        connection_open: Callable[[str], bool] | None = None,
        on_orphan: Callable[[Orphan], None] | None = None,
    ) -> None:
        grace = orphan_grace_seconds() if grace_seconds is None else float(grace_seconds)
        if not math.isfinite(grace) or grace <= 0:
            raise ValueError(f"`grace_seconds` must be a number > 0; received {grace_seconds!r}.")
        budget = memory_budget_bytes() if memory_budget is None else int(memory_budget)
        if budget <= 0:
            raise ValueError(f"`memory_budget` must be > 0 bytes; received {memory_budget!r}.")
        self.grace_seconds = grace
        self.memory_budget = budget
        self.clock = clock
        self.connection_open = connection_open
        self.on_orphan = on_orphan
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._reaper: threading.Thread | None = None
        self._stop_reaper = threading.Event()

    # ------------------------------------------------------------------------- sessions
    def open(self, session_id: str, connection: str | None = None) -> Session:
        """The session of `session_id` (created empty when new), marked as seen now.

        Args:
            session_id: The id in the page URL.
            connection: The id of the connection (browser socket) this script run came from;
                while it is open, the session counts as alive.
        """
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id)
            session.last_seen = self.clock()
            if connection and self.connection_open is not None:
                session.connections.add(connection)
            return session

    def get(self, session_id: str) -> Session | None:
        """The session of `session_id`, or None when this server has none."""
        with self._lock:
            return self._sessions.get(session_id)

    def touch(self, session_id: str) -> None:
        """Marks a session's page as alive now (a script run or a heartbeat)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_seen = self.clock()

    def sessions(self) -> list[Session]:
        """Every session, least recently seen first (one with an open connection: seen now)."""
        with self._lock:
            self._see_open_connections()
            return sorted(self._sessions.values(), key=lambda session: session.last_seen)

    def _see_open_connections(self) -> None:
        """Marks sessions with an open connection as seen now; forgets closed connections."""
        if self.connection_open is None:
            return
        now = self.clock()
        for session in self._sessions.values():
            if not session.connections:
                continue
            session.connections = {
                connection for connection in session.connections if self.connection_open(connection)
            }
            if session.connections:
                session.last_seen = now

    # ---------------------------------------------------------------------------- reaper
    def reap(self) -> list[Orphan]:
        """Cancels the jobs of sessions whose page has been gone longer than the grace period.

        Returns:
            One `Orphan` per job cancelled now (the job ends after its current batch and frees
            its training slot; its run is saved by the workspace's run listeners).
        """
        now = self.clock()
        orphans = []
        for session in self.sessions():
            gone = now - session.last_seen
            if gone <= self.grace_seconds or not session.training:
                continue
            with session.lock:
                run: Run | None = session.workspace.stop_orphaned(gone)
            if run is None:
                continue
            orphan = Orphan(session.session_id, run.run_id, gone)
            LOGGER.info(
                "Cancelled run %s of session %s: its page was gone for %.0f s.",
                run.run_id, session.session_id, gone,
            )  # fmt: skip
            orphans.append(orphan)
            if self.on_orphan is not None:
                self.on_orphan(orphan)
        return orphans

    def release_over_budget(self) -> list[str]:
        """Releases the workspaces of pages gone longer than the grace period, least recently
        seen first, while the workspaces together hold more than the memory budget.

        New models and datasets call `make_room` first; this catches what grew otherwise (a
        larger base model chosen) once its page is gone. The reaper calls it.

        Returns:
            The ids of the sessions released.
        """
        now = self.clock()
        released = []
        for session in self.sessions():
            if self.memory_in_use() <= self.memory_budget:
                break
            if now - session.last_seen <= self.grace_seconds:
                continue
            if self._release(session):
                released.append(session.session_id)
        return released

    def _release(self, session: Session) -> bool:
        """Drops an idle session's workspace (rebuilt from its record when the page returns)."""
        with session.lock:
            if session.workspace is None or session.training:
                return False
            session.workspace = None
            session.released += 1
        LOGGER.info("Released the idle workspace of session %s.", session.session_id)
        return True

    @property
    def reap_interval(self) -> float:
        """Seconds between the reaper's checks: a quarter of the grace period, at most 1 s."""
        return min(MAX_REAP_INTERVAL_SECONDS, self.grace_seconds / 4)

    def start_reaper(self) -> None:
        """Starts the background thread that calls `reap` every `reap_interval` (once)."""
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(
                target=self._reap_forever, name="freezelab-reaper", daemon=True
            )
            self._reaper.start()

    def stop_reaper(self) -> None:
        """Stops the reaper thread (tests); a later `start_reaper` starts a new one."""
        self._stop_reaper.set()
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.join(timeout=10)
        self._stop_reaper.clear()

    def _reap_forever(self) -> None:
        while not self._stop_reaper.wait(self.reap_interval):
            try:
                self.reap()
                self.release_over_budget()
            except Exception:  # the reaper never dies of one session's trouble
                LOGGER.exception("The orphan reaper failed once; it keeps running.")

    # ---------------------------------------------------------------------------- memory
    def memory_in_use(self, excluding: str | None = None) -> int:
        """Bytes held by every built workspace (shared datasets counted once).

        Args:
            excluding: A session id whose workspace is left out (one about to be replaced).
        """
        datasets: dict[int, int] = {}
        total = 0
        for session in self.sessions():
            workspace = session.workspace
            if workspace is None or session.session_id == excluding:
                continue
            total += model_bytes(workspace.model)
            datasets[id(workspace.dataset)] = dataset_bytes(workspace.dataset)
        return total + sum(datasets.values())

    def _held_with(self, session_id: str, needed_bytes: int) -> int:
        """Bytes held once `session_id` swaps its dataset for one of `needed_bytes`."""
        own = self.get(session_id)
        own_model = 0
        if own is not None and own.workspace is not None:
            own_model = model_bytes(own.workspace.model)
        return self.memory_in_use(excluding=session_id) + own_model + needed_bytes

    def allowance(self, session_id: str) -> int:
        """The largest dataset `session_id` may load now, once idle sessions are released.

        It is the budget minus what cannot be released: the workspaces that are training and
        the model of the asking session itself.
        """
        kept = 0
        for session in self.sessions():
            workspace = session.workspace
            if workspace is None:
                continue
            if session.session_id == session_id:
                kept += model_bytes(workspace.model)
            elif session.training:
                kept += model_bytes(workspace.model) + dataset_bytes(workspace.dataset)
        return max(self.memory_budget - kept, 0)

    def make_room(self, session_id: str, needed_bytes: int) -> list[str]:
        """Releases least recently used idle workspaces until `needed_bytes` more fit.

        Args:
            session_id: The session that needs the room (never released).
            needed_bytes: The bytes it is about to hold (a new dataset).

        Returns:
            The ids of the sessions whose workspaces were released, oldest first.

        Raises:
            MemoryBudgetError: When the bytes do not fit even after releasing every idle one.
        """
        released = []
        for session in self.sessions():
            if self._held_with(session_id, needed_bytes) <= self.memory_budget:
                break
            if session.session_id != session_id and self._release(session):
                released.append(session.session_id)
        in_use = self._held_with(session_id, 0)
        if in_use + needed_bytes > self.memory_budget:
            raise MemoryBudgetError(
                f"This dataset needs {human_size(needed_bytes)} in memory, but the server's "
                f"memory budget is {human_size(self.memory_budget)} and "
                f"{human_size(in_use)} of it is held by runs training now and your own "
                "model. Upload fewer or "
                "smaller images, or try again when the runs have finished."
            )
        return released


__all__ = [
    "DEFAULT_ORPHAN_GRACE_SECONDS",
    "MEMORY_BUDGET_ENVIRONMENT_VARIABLE",
    "ORPHAN_GRACE_ENVIRONMENT_VARIABLE",
    "MemoryBudgetError",
    "Orphan",
    "Session",
    "SessionRegistry",
    "dataset_bytes",
    "keep_ended_runs",
    "machine_memory_bytes",
    "memory_budget_bytes",
    "model_bytes",
    "orphan_grace_seconds",
    "parse_size",
]
