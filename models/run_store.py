"""Keep ended runs on disk, per browser session, so a refresh or reconnect does not lose them.

Layout (one folder per session, two files per run, both written atomically):

    <runs folder>/                      FREEZELAB_RUNS_DIR, else <repository>/runs
        <session id>/                   e.g. "Xk3_9aQ-2bZr" (secrets.token_urlsafe(9))
            run-000003.json             everything but the drift records (a `RunSnapshot`)
            run-000003.csv              the drift DataFrame, CSV with a header row
            session.json                what the session chose (`SessionRecord`), if kept
            upload-data, upload-model   the session's uploaded dataset and model, if kept

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from models.checks import human_size
from models.job import PhaseBoundary, RunEnding
from models.lora import LoraSetting
from models.representation import RepresentationReport
from models.session_record import SessionRecord
from models.snapshot import RunSnapshot, VerificationSummary
from models.training import JobState, TrainingConfig, TrainingProgress
from models.tree import ParameterCounts
from models.validation import check_whole_number

RUNS_DIR_ENVIRONMENT_VARIABLE = "FREEZELAB_RUNS_DIR"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_RUNS_PER_SESSION = 20
SESSION_QUERY_PARAMETER = "session"
STORED_RUN_FORMAT = "freezelab-stored-run"
STORED_RUN_FORMAT_VERSION = 2
_READABLE_FORMAT_VERSIONS = (1, 2)  # version 1: before names, settings, phases and timing
MAX_RUN_ID = 999_999
_SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_RUN_FILE_PATTERN = re.compile(r"run-(\d{6})\.json")
_TEMPORARY_PREFIX = ".tmp-"
SESSION_RECORD_FILE = "session.json"
UPLOAD_ROLES = ("data", "model")
MAX_KEPT_UPLOAD_BYTES = 64 * 1024 * 1024

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


def _record_json(run: RunSnapshot, csv_name: str) -> dict[str, Any]:
    verification = run.verification
    progress = run.progress
    return {
        "format": STORED_RUN_FORMAT,
        "format_version": STORED_RUN_FORMAT_VERSION,
        "run_id": run.run_id,
        "label": run.label,
        "name": run.name,
        "model_title": run.model_title,
        "dataset_title": run.dataset_title,
        "created_at": run.created_at,
        "state": progress.state.value,
        "ending": None if run.ending is None else run.ending.value,
        "message": progress.message,
        "epoch": progress.epoch,
        "elapsed_seconds": progress.elapsed_seconds,
        "settings": run.settings.to_dict(),
        "config": dict(run.config),
        "frozen_paths": sorted(run.frozen_paths),
        "counts": {"trainable": run.counts.trainable, "non_trainable": run.counts.non_trainable},
        "history": _metrics_to_json(progress.history),
        "batch_history": _metrics_to_json(progress.batch_history),
        "verification": None
        if verification is None
        else {
            "all_unchanged": verification.all_unchanged,
            "num_checked": verification.num_checked,
            "changed_paths": list(verification.changed_paths),
            "message": verification.text,
        },
        "phase_boundaries": [list(boundary) for boundary in run.phase_boundaries],
        "execution_note": run.execution_note,
        "execution_cached": run.execution_cached,
        "layer_order": list(run.layer_order),
        "depths": dict(run.depths),
        "adapters": {
            path: {**setting.to_dict(), "parameters": run.adapter_parameters.get(path, 0)}
            for path, setting in run.adapters.items()
        },
        "layer_multipliers": dict(run.layer_multipliers),
        "pretraining_accuracy": run.pretraining_accuracy,
        "step_statistics": _frame_to_json(run.step_statistics),
        "representation": {
            **_frame_to_json(run.representation.frame),
            "note": run.representation.note,
            "epoch": run.representation.epoch,
            "num_examples": run.representation.num_examples,
            "held_out": run.representation.held_out,
        },
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
    restored = {
        column: _restore_column(raw[column], column, dtype)
        for column, dtype in zip(columns, dtypes, strict=True)
    }
    return pd.DataFrame(restored, columns=columns)


def _restore_column(values: pd.Series, column: str, dtype: str) -> pd.Series:
    """One drift column read as text, back in its stored dtype (the same bits for floats)."""
    if dtype == "bool":
        unknown = set(values) - {"True", "False"}
        if unknown:
            raise ValueError(f"column {column!r} holds non-boolean values {sorted(unknown)[:3]}")
        return values.eq("True").astype("bool")
    if dtype.startswith(("int", "uint")):
        return values.astype("int64").astype(dtype)
    if dtype.startswith("float"):
        return values.replace("", "nan").astype("float64").astype(dtype)
    if dtype == "object":
        return values.astype(object)
    try:  # text dtypes such as pandas 3's "str"; anything unknown stays text
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values.astype(object)


def _settings_from_json(data: dict[str, Any]) -> TrainingConfig:
    """The run's settings: stored since version 2, else read from its run config."""
    stored = data.get("settings")
    if stored is None:
        training = data.get("config", {}).get("training", {})
        names = TrainingConfig.__dataclass_fields__
        stored = {key: value for key, value in training.items() if key in names}
    return TrainingConfig(**stored)


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    """A small frame stored inside the run's JSON: its CSV text, columns, dtypes and rows."""
    return {
        "csv": frame.to_csv(index=False),
        "columns": [str(column) for column in frame.columns],
        "dtypes": [str(dtype) for dtype in frame.dtypes],
        "rows": len(frame),
    }


def _representation_from_json(data: Any) -> RepresentationReport:
    """The representation report (an empty one for a run stored before it)."""
    if data is None:
        return RepresentationReport.empty("Not measured: the run was stored before FreezeLab did.")
    frame = _frame_from_json(data)
    return RepresentationReport(
        frame=frame if len(frame.columns) else RepresentationReport.empty().frame,
        note=str(data.get("note", "")),
        epoch=int(data.get("epoch", 0)),
        num_examples=int(data.get("num_examples", 0)),
        held_out=bool(data.get("held_out", False)),
    )


def _frame_from_json(data: Any) -> pd.DataFrame:
    """A frame stored by `_frame_to_json` (an empty frame for a run stored before it)."""
    if data is None:
        return pd.DataFrame()
    columns = [str(column) for column in data["columns"]]
    dtypes = [str(dtype) for dtype in data["dtypes"]]
    if not columns:
        return pd.DataFrame()
    return _drift_from_csv(str(data["csv"]), columns, dtypes, int(data["rows"]))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _stored_run_from_json(data: Any, csv_text: str) -> RunSnapshot:
    if not isinstance(data, dict) or data.get("format") != STORED_RUN_FORMAT:
        raise ValueError("not a FreezeLab stored run")
    if data.get("format_version") not in _READABLE_FORMAT_VERSIONS:
        raise ValueError(f"format_version {data.get('format_version')!r} is not supported")
    counts = data["counts"]
    verification = data["verification"]
    settings = _settings_from_json(data)
    history = _metrics_from_json(data["history"], "history")
    progress = TrainingProgress(
        state=JobState(str(data["state"])),
        epoch=int(data.get("epoch", len(history.get("loss", [])))),
        epochs=settings.epochs,
        batch=0,
        batches_per_epoch=None,
        history=history,
        batch_history=_metrics_from_json(data.get("batch_history", {}), "batch_history"),
        message=str(data["message"]),
        elapsed_seconds=float(data.get("elapsed_seconds", 0.0)),
        eta_seconds=None,
    )
    if not progress.done:
        raise ValueError(f"state {progress.state.value!r} is not an ended run's")
    return RunSnapshot(
        run_id=int(data["run_id"]),
        label=str(data["label"]),
        settings=settings,
        frozen_paths=tuple(str(path) for path in data["frozen_paths"]),
        counts=ParameterCounts(int(counts["trainable"]), int(counts["non_trainable"])),
        progress=progress,
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
            text=str(verification["message"]),
        ),
        model_title=str(data.get("model_title", "")),
        dataset_title=str(data.get("dataset_title", "")),
        name=str(data.get("name", "")),
        config=dict(data["config"]),
        phase_boundaries=tuple(
            PhaseBoundary(str(name), int(epoch), int(step))
            for name, epoch, step in data.get("phase_boundaries", [])
        ),
        execution_note=str(data.get("execution_note", "")),
        execution_cached=bool(data.get("execution_cached", False)),
        layer_order=tuple(str(path) for path in data.get("layer_order", [])),
        depths={str(path): int(depth) for path, depth in data.get("depths", {}).items()},
        created_at=str(data["created_at"]),
        ending=RunEnding(data["ending"]) if data.get("ending") else RunEnding.of(progress.state),
        adapters={
            str(path): LoraSetting.from_dict(adapter)
            for path, adapter in data.get("adapters", {}).items()
        },
        adapter_parameters={
            str(path): int(adapter.get("parameters", 0))
            for path, adapter in data.get("adapters", {}).items()
        },
        layer_multipliers={
            str(path): float(multiplier)
            for path, multiplier in data.get("layer_multipliers", {}).items()
        },
        pretraining_accuracy=_optional_float(data.get("pretraining_accuracy")),
        step_statistics=_frame_from_json(data.get("step_statistics")),
        representation=_representation_from_json(data.get("representation")),
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
    >>> store.save(session_id, RunSnapshot.of(run, config))
    >>> runs, notices = store.load(session_id)
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        max_runs_per_session: int = DEFAULT_MAX_RUNS_PER_SESSION,
    ) -> None:
        self.max_bytes = check_whole_number("max_bytes", max_bytes, 1)
        self.max_runs_per_session = check_whole_number(
            "max_runs_per_session", max_runs_per_session, 1
        )
        self.folder = Path(folder if folder is not None else default_runs_folder()).absolute()
        self._lock = _folder_lock(self.folder)

    def session_folder(self, session_id: str) -> Path:
        """The folder of a session (it may not exist).

        Raises:
            ValueError: For an invalid session id.
        """
        return self.folder / _check_session_id(session_id)

    def save(self, session_id: str, record: RunSnapshot) -> Path:
        """Stores an ended run (replacing a stored run with the same id) and prunes the folder.

        Args:
            session_id: A valid session id (`new_session_id()`).
            record: The run's snapshot, taken after it ended.

        Returns:
            The path of the run's JSON file.

        Raises:
            ValueError: For an invalid session id or run id.
            TypeError: When `record` is not a `RunSnapshot`.
            OSError: When the disk refuses the write (full, read-only).

        Example:
        >>> store.save(session_id, RunSnapshot.of(run))
        PosixPath('.../runs/Xk3_9aQ-2bZr/run-000001.json')
        """
        folder = self.session_folder(session_id)
        if not isinstance(record, RunSnapshot):
            raise TypeError(
                f"save expects a RunSnapshot (e.g. RunSnapshot.of(run)); received "
                f"{type(record).__name__}."
            )
        if not record.done:
            raise ValueError(
                f"Run {record.run_id} is still {record.state.value}; store it once it has "
                "finished, been cancelled or failed."
            )
        run_id = check_whole_number("run_id", record.run_id, 1, MAX_RUN_ID)
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

    def load(self, session_id: str) -> tuple[list[RunSnapshot], list[str]]:
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
        runs: list[RunSnapshot] = []
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

    # ------------------------------------------------------------- the session's choices
    def save_record(self, session_id: str, record: SessionRecord) -> None:
        """Keeps what the session chose (model, data, plan, settings), replacing the last.

        Raises:
            ValueError: For an invalid session id.
            OSError: When the disk refuses the write.
        """
        folder = self.session_folder(session_id)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(folder / SESSION_RECORD_FILE, record.to_json())

    def load_record(self, session_id: str) -> SessionRecord | None:
        """The session's kept choices, or None when none were kept.

        Raises:
            ValueError: For an invalid session id, or a record that cannot be read (the
                message says why).
        """
        path = self.session_folder(session_id) / SESSION_RECORD_FILE
        with self._lock:
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as error:
                raise ValueError(f"The session record could not be read ({error}).") from error
        return SessionRecord.from_json(content)

    def save_upload(self, session_id: str, role: str, content: bytes) -> bool:
        """Keeps an uploaded file of the session ("data" or "model") to rebuild it later.

        Files larger than `MAX_KEPT_UPLOAD_BYTES` are not kept (the session then rebuilds
        without them and says so).

        Returns:
            Whether the file was kept.
        """
        path = self._upload_path(session_id, role)
        with self._lock:
            if len(content) > MAX_KEPT_UPLOAD_BYTES:
                path.unlink(missing_ok=True)
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, bytes(content))
            self.prune(keep=session_id)
        return True

    def load_upload(self, session_id: str, role: str) -> bytes:
        """The kept upload of the session ("data" or "model").

        Raises:
            ValueError: When none is kept (it was too large, or the runs folder was pruned).
        """
        path = self._upload_path(session_id, role)
        with self._lock:
            try:
                return path.read_bytes()
            except OSError as error:
                raise ValueError(
                    f"The uploaded {role} file of this session is no longer kept on the server "
                    f"(uploads over {human_size(MAX_KEPT_UPLOAD_BYTES)} are not kept, and old "
                    "sessions are cleaned up). Upload it again."
                ) from error

    def _upload_path(self, session_id: str, role: str) -> Path:
        if role not in UPLOAD_ROLES:
            raise ValueError(f"`role` must be one of {UPLOAD_ROLES}; received {role!r}.")
        return self.session_folder(session_id) / f"upload-{role}"

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
    "default_runs_folder",
    "is_valid_session_id",
    "new_session_id",
]
