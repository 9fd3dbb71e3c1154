"""Keep finished runs on disk, per browser session, so a refresh or reconnect does not lose them.

Layout (one folder per session, two files per run, both written atomically):

    <runs folder>/                      FREEZELAB_RUNS_DIR, else <repository>/runs
        <session id>/                   e.g. "Xk3_9aQ-2bZr" (secrets.token_urlsafe(9))
            run-000003.json             everything but the drift records (see `StoredRun`)
            run-000003.csv              the drift DataFrame, CSV with a header row

The drift records are stored as CSV, not Parquet: the same format as the drift download,
readable by any tool, no optional dependency. Floats are written in their shortest exact
form and read back with the same bits; each column's dtype is kept in the JSON and restored.
The CSV is written first and the JSON last, each to a temporary file then `os.replace`d, so
a run is visible only once both files are complete. The session id travels in the page URL;
`is_valid_session_id` accepts only 8 to 64 URL-safe characters, so a URL can never name a
path outside the runs folder. `prune` deletes the least recently used session folders until
the whole folder fits in `max_bytes`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.tree import ParameterCounts

RUNS_DIR_ENVIRONMENT_VARIABLE = "FREEZELAB_RUNS_DIR"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_RUNS_PER_SESSION = 20
SESSION_QUERY_PARAMETER = "session"
STORED_RUN_FORMAT = "freezelab-stored-run"
STORED_RUN_FORMAT_VERSION = 1
MAX_RUN_ID = 999_999
_SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_RUN_FILE_PATTERN = re.compile(r"run-(\d{6})\.json")
_TEMPORARY_PREFIX = ".tmp-"

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _folder_lock(folder: Path) -> threading.RLock:
    """One lock per runs folder, shared by every `RunStore` of this process on it."""
    key = str(folder)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def default_runs_folder() -> Path:
    """The runs folder: `$FREEZELAB_RUNS_DIR` when set, else `<repository>/runs`.

    Example:
    >>> default_runs_folder().name
    'runs'
    """
    configured = os.environ.get(RUNS_DIR_ENVIRONMENT_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    return Path(__file__).resolve().parents[1] / "runs"


def new_session_id() -> str:
    """A new random, URL-safe session id of 12 characters (72 random bits).

    Example:
    >>> is_valid_session_id(new_session_id())
    True
    """
    return secrets.token_urlsafe(9)


def is_valid_session_id(text: object) -> bool:
    """Whether `text` can be a session id: 8 to 64 characters from A-Z, a-z, 0-9, "_" and "-".

    Anything else (paths like "../x", dots, slashes, empty or overlong text, non-strings) is
    refused, so a session id taken from a URL always names a folder inside the runs folder.

    Example:
    >>> is_valid_session_id("../etc"), is_valid_session_id("Xk3_9aQ-2bZr")
    (False, True)
    """
    return isinstance(text, str) and _SESSION_ID_PATTERN.fullmatch(text) is not None


def _check_session_id(session_id: object) -> str:
    if not is_valid_session_id(session_id):
        shown = repr(session_id)[:80]
        raise ValueError(
            f"Invalid session id {shown}: expected 8 to 64 characters from A-Z, a-z, 0-9, '_' "
            "and '-', as made by new_session_id(). Start a new session instead."
        )
    return str(session_id)


@dataclass(frozen=True)
class VerificationSummary:
    """The outcome of the bitwise check of frozen layers, as plain data.

    Attributes:
        all_unchanged: Whether every frozen layer kept its weights and state bitwise.
        num_checked: Number of frozen layers checked.
        changed_paths: Paths of frozen layers that changed.
        message: The one-line summary shown to users.
    """

    all_unchanged: bool
    num_checked: int
    changed_paths: tuple[str, ...]
    message: str

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
            message=str(result.message()),
        )


@dataclass(frozen=True, eq=False)
class StoredRun:
    """A finished run as kept on disk: everything needed to show and compare it later.

    Attributes:
        run_id: The run's number in its session (1 to 999999).
        label: Short name, e.g. "Run 2 · 3 epochs · lr 0.01".
        config: The run config (`models.export.run_config`), JSON-ready.
        frozen_paths: The freeze plan when the run started, sorted.
        counts: Trainable / non-trainable parameters when the run started.
        history: Per-epoch metrics, e.g. {"loss": [...], "val_accuracy": [...]}.
        drift: The drift DataFrame (`TrainingJob.drift_frame()`).
        verification: The bitwise check of frozen layers, or None when not available.
        state: How the run ended: "finished", "cancelled" or "failed".
        message: What happened, in words.
        created_at: When the run was stored (ISO 8601, UTC).
        model_title: The base model's title.
        dataset_title: The dataset's title.
        layer_order: Node paths in model order, for charts.
        depths: Node depth by path, for indented charts.
        batch_history: Per-batch training metrics ({"step": [...], "loss": [...]}).
    """

    run_id: int
    label: str
    config: dict[str, Any]
    frozen_paths: tuple[str, ...]
    counts: ParameterCounts
    history: dict[str, list[float]]
    drift: pd.DataFrame
    verification: VerificationSummary | None
    state: str
    message: str
    created_at: str
    model_title: str = ""
    dataset_title: str = ""
    layer_order: tuple[str, ...] = ()
    depths: dict[str, int] = field(default_factory=dict)
    batch_history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: Any, config: Mapping[str, Any] | None = None) -> StoredRun:
        """Captures a `models.workspace.Run` whose job has ended.

        Args:
            run: The run (`workspace.latest_run`).
            config: Its run config (`models.export.run_config(...)`); None stores the
                training settings only.

        Returns:
            The `StoredRun`.

        Raises:
            ValueError: When the run is still pending or running.

        Example:
        >>> store.save(session_id, StoredRun.from_run(workspace.latest_run))
        """
        progress = run.job.progress()
        if not progress.done:
            raise ValueError(
                f"Run {run.run_id} is still {progress.state.value}; store it once it has "
                "finished, been cancelled or failed."
            )
        try:
            verification = VerificationSummary.from_result(run.job.verification())
        except Exception:  # a failed run may have no drift snapshot to verify against
            verification = None
        return cls(
            run_id=int(run.run_id),
            label=str(run.label),
            config=dict(config) if config is not None else {"training": run.config.to_dict()},
            frozen_paths=tuple(sorted(run.frozen_paths)),
            counts=run.counts,
            history={key: [float(v) for v in values] for key, values in progress.history.items()},
            drift=run.job.drift_frame(),
            verification=verification,
            state=str(progress.state.value),
            message=str(progress.message),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            model_title=str(run.model_title),
            dataset_title=str(run.dataset_title),
            layer_order=tuple(run.layer_order),
            depths={str(path): int(depth) for path, depth in run.depths.items()},
            batch_history={
                key: [float(v) for v in values] for key, values in progress.batch_history.items()
            },
        )


# ------------------------------------------------------------------------- (de)coding
def _float_or_text(value: float) -> float | str:
    """JSON has no NaN or infinity: write those as text, read them back as floats."""
    return value if math.isfinite(value) else repr(value)


def _metrics_to_json(metrics: Mapping[str, list[float]]) -> dict[str, list[float | str]]:
    return {str(k): [_float_or_text(float(v)) for v in values] for k, values in metrics.items()}


def _metrics_from_json(data: Any, what: str) -> dict[str, list[float]]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object of metric lists; received {type(data)}.")
    return {str(k): [float(v) for v in values] for k, values in data.items()}


def _record_json(run: StoredRun, csv_name: str) -> dict[str, Any]:
    verification = run.verification
    return {
        "format": STORED_RUN_FORMAT,
        "format_version": STORED_RUN_FORMAT_VERSION,
        "run_id": run.run_id,
        "label": run.label,
        "model_title": run.model_title,
        "dataset_title": run.dataset_title,
        "created_at": run.created_at,
        "state": run.state,
        "message": run.message,
        "config": run.config,
        "frozen_paths": sorted(run.frozen_paths),
        "counts": {"trainable": run.counts.trainable, "non_trainable": run.counts.non_trainable},
        "history": _metrics_to_json(run.history),
        "batch_history": _metrics_to_json(run.batch_history),
        "verification": None
        if verification is None
        else {
            "all_unchanged": verification.all_unchanged,
            "num_checked": verification.num_checked,
            "changed_paths": list(verification.changed_paths),
            "message": verification.message,
        },
        "layer_order": list(run.layer_order),
        "depths": dict(run.depths),
        "drift_file": csv_name,
        "drift_columns": [str(column) for column in run.drift.columns],
        "drift_dtypes": [str(dtype) for dtype in run.drift.dtypes],
        "drift_rows": len(run.drift),
    }


def _drift_from_csv(text: str, columns: list[str], dtypes: list[str], rows: int) -> pd.DataFrame:
    if len(columns) != len(dtypes):
        raise ValueError("drift_columns and drift_dtypes differ in length")
    if not columns:
        return pd.DataFrame(index=pd.RangeIndex(rows))
    raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if list(raw.columns) != columns or len(raw) != rows:
        raise ValueError(
            f"the drift CSV has columns {list(raw.columns)[:5]}... and {len(raw)} rows; the "
            f"record expects {columns[:5]}... and {rows} rows"
        )
    restored = {}
    for column, dtype in zip(columns, dtypes, strict=True):
        values = raw[column]
        if dtype == "bool":
            unknown = set(values) - {"True", "False"}
            if unknown:
                raise ValueError(
                    f"column {column!r} holds non-boolean values {sorted(unknown)[:3]}"
                )
            restored[column] = values.eq("True").astype("bool")
        elif dtype.startswith(("int", "uint")):
            restored[column] = values.astype("int64").astype(dtype)
        elif dtype.startswith("float"):
            restored[column] = values.replace("", "nan").astype("float64").astype(dtype)
        elif dtype == "object":
            restored[column] = values.astype(object)
        else:  # text dtypes such as pandas 3's "str"; anything unknown stays text
            try:
                restored[column] = values.astype(dtype)
            except (TypeError, ValueError):
                restored[column] = values.astype(object)
    return pd.DataFrame(restored, columns=columns)


def _stored_run_from_json(data: Any, csv_text: str) -> StoredRun:
    if not isinstance(data, dict) or data.get("format") != STORED_RUN_FORMAT:
        raise ValueError("not a FreezeLab stored run")
    if data.get("format_version") != STORED_RUN_FORMAT_VERSION:
        raise ValueError(f"format_version {data.get('format_version')!r} is not supported")
    counts = data["counts"]
    verification = data["verification"]
    return StoredRun(
        run_id=int(data["run_id"]),
        label=str(data["label"]),
        config=dict(data["config"]),
        frozen_paths=tuple(str(path) for path in data["frozen_paths"]),
        counts=ParameterCounts(int(counts["trainable"]), int(counts["non_trainable"])),
        history=_metrics_from_json(data["history"], "history"),
        drift=_drift_from_csv(
            csv_text,
            [str(column) for column in data["drift_columns"]],
            [str(dtype) for dtype in data["drift_dtypes"]],
            int(data["drift_rows"]),
        ),
        verification=None
        if verification is None
        else VerificationSummary(
            all_unchanged=bool(verification["all_unchanged"]),
            num_checked=int(verification["num_checked"]),
            changed_paths=tuple(str(path) for path in verification["changed_paths"]),
            message=str(verification["message"]),
        ),
        state=str(data["state"]),
        message=str(data["message"]),
        created_at=str(data["created_at"]),
        model_title=str(data.get("model_title", "")),
        dataset_title=str(data.get("dataset_title", "")),
        layer_order=tuple(str(path) for path in data.get("layer_order", [])),
        depths={str(path): int(depth) for path, depth in data.get("depths", {}).items()},
        batch_history=_metrics_from_json(data.get("batch_history", {}), "batch_history"),
    )


def _write_atomically(path: Path, content: bytes) -> None:
    """Writes to a temporary file in the same folder, then renames it over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _folder_size(folder: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


# ------------------------------------------------------------------------------ store
class RunStore:
    """Finished runs on disk, one folder per browser session, pruned by total size.

    Thread-safe: every store on the same folder in this process shares one lock, and files
    are replaced atomically, so 30 sessions can save and load at once.

    Args:
        folder: The runs folder (created on first save); see `default_runs_folder`.
        max_bytes: Largest total size of the folder; `prune` deletes the least recently
            used sessions beyond it (never the one just saved).
        max_runs_per_session: Runs kept per session; saving more deletes the oldest.

    Example:
    >>> store = RunStore(default_runs_folder())
    >>> session_id = new_session_id()
    >>> store.save(session_id, StoredRun.from_run(run, config))
    >>> runs, notices = store.load(session_id)
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        max_runs_per_session: int = DEFAULT_MAX_RUNS_PER_SESSION,
    ) -> None:
        for name, value in (
            ("max_bytes", max_bytes),
            ("max_runs_per_session", max_runs_per_session),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1; received {value!r}.")
        self.folder = Path(folder if folder is not None else default_runs_folder()).absolute()
        self.max_bytes = max_bytes
        self.max_runs_per_session = max_runs_per_session
        self._lock = _folder_lock(self.folder)

    def session_folder(self, session_id: str) -> Path:
        """The folder of a session (it may not exist).

        Raises:
            ValueError: For an invalid session id.
        """
        return self.folder / _check_session_id(session_id)

    def save(self, session_id: str, record: StoredRun) -> Path:
        """Stores a run (replacing a stored run with the same id) and prunes the folder.

        Args:
            session_id: A valid session id (`new_session_id()`).
            record: The run.

        Returns:
            The path of the run's JSON file.

        Raises:
            ValueError: For an invalid session id or run id.
            TypeError: When `record` is not a `StoredRun`.
            OSError: When the disk refuses the write (full, read-only).

        Example:
        >>> store.save(session_id, StoredRun.from_run(run))
        PosixPath('.../runs/Xk3_9aQ-2bZr/run-000001.json')
        """
        folder = self.session_folder(session_id)
        if not isinstance(record, StoredRun):
            raise TypeError(
                f"save expects a StoredRun (e.g. StoredRun.from_run(run)); received "
                f"{type(record).__name__}."
            )
        run_id = record.run_id
        if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_RUN_ID:
            raise ValueError(
                f"run_id must be a whole number from 1 to {MAX_RUN_ID}; received {run_id!r}."
            )
        stem = f"run-{run_id:06d}"
        csv_content = record.drift.to_csv(index=False).encode("utf-8")
        json_content = json.dumps(
            _record_json(record, f"{stem}.csv"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(folder / f"{stem}.csv", csv_content)
            _write_atomically(folder / f"{stem}.json", json_content)
            self._drop_old_runs(folder)
            os.utime(folder)
            self.prune(keep=session_id)
        return folder / f"{stem}.json"

    def _run_ids(self, folder: Path) -> list[int]:
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            return []
        return sorted(
            int(match.group(1)) for name in names if (match := _RUN_FILE_PATTERN.fullmatch(name))
        )

    def _drop_old_runs(self, folder: Path) -> None:
        run_ids = self._run_ids(folder)
        for run_id in run_ids[: max(len(run_ids) - self.max_runs_per_session, 0)]:
            for suffix in (".json", ".csv"):
                (folder / f"run-{run_id:06d}{suffix}").unlink(missing_ok=True)

    def load(self, session_id: str) -> tuple[list[StoredRun], list[str]]:
        """Reads a session's stored runs, skipping unreadable ones with a notice.

        Loading marks the session as recently used, so `prune` keeps it longer.

        Args:
            session_id: A valid session id (e.g. from the page URL).

        Returns:
            `(runs, notices)`: the runs sorted by run id (empty for an unknown session), and
            one notice per run file that could not be read (damaged, incomplete, or written
            by another version), which was skipped.

        Raises:
            ValueError: For an invalid session id (check with `is_valid_session_id` first).

        Example:
        >>> runs, notices = store.load(st.query_params["session"])
        """
        folder = self.session_folder(session_id)
        runs: list[StoredRun] = []
        notices: list[str] = []
        with self._lock:
            if not folder.is_dir():
                return [], []
            for run_id in self._run_ids(folder):
                json_path = folder / f"run-{run_id:06d}.json"
                try:
                    data = json.loads(json_path.read_text(encoding="utf-8"))
                    csv_name = data.get("drift_file") if isinstance(data, dict) else None
                    if csv_name != f"run-{run_id:06d}.csv":
                        raise ValueError(f"it names the drift file {csv_name!r}")
                    csv_text = (folder / csv_name).read_text(encoding="utf-8")
                    run = _stored_run_from_json(data, csv_text)
                    if run.run_id != run_id:
                        raise ValueError(f"it holds run {run.run_id}")
                    runs.append(run)
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                    text = str(error).splitlines()[0][:200] if str(error) else ""
                    notices.append(
                        f"Stored run {run_id} could not be read and was skipped "
                        f"({type(error).__name__}: {text}). Its file {json_path.name} may be "
                        "damaged or from another FreezeLab version."
                    )
            with contextlib.suppress(OSError):
                os.utime(folder)
        return runs, notices

    def delete(self, session_id: str) -> bool:
        """Deletes a session's stored runs; returns whether there were any."""
        folder = self.session_folder(session_id)
        with self._lock:
            if not folder.is_dir():
                return False
            shutil.rmtree(folder, ignore_errors=True)
            return True

    def total_bytes(self) -> int:
        """The size of every session folder together, in bytes."""
        with self._lock:
            return sum(size for _, _, size in self._sessions())

    def _sessions(self) -> list[tuple[float, Path, int]]:
        """(modification time, folder, size) of every session folder, oldest first."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        sessions = []
        for entry in entries:
            if not is_valid_session_id(entry.name):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                modified = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            path = Path(entry.path)
            sessions.append((modified, path, _folder_size(path)))
        return sorted(sessions, key=lambda item: (item[0], item[1].name))

    def prune(self, keep: str | None = None) -> list[str]:
        """Deletes the least recently used sessions until the folder fits in `max_bytes`.

        Args:
            keep: A session never deleted (the one just saved), even if it alone is larger.

        Returns:
            The ids of the deleted sessions, oldest first.

        Example:
        >>> store.prune(keep=session_id)
        []
        """
        removed: list[str] = []
        with self._lock:
            sessions = self._sessions()
            total = sum(size for _, _, size in sessions)
            for _, path, size in sessions:
                if total <= self.max_bytes:
                    break
                if path.name == keep:
                    continue
                shutil.rmtree(path, ignore_errors=True)
                total -= size
                removed.append(path.name)
        return removed


__all__ = [
    "DEFAULT_MAX_BYTES",
    "SESSION_QUERY_PARAMETER",
    "RunStore",
    "StoredRun",
    "VerificationSummary",
    "default_runs_folder",
    "is_valid_session_id",
    "new_session_id",
]
