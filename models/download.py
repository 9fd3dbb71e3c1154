"""Downloads a file into the Keras cache: timeouts, progress, a hash check, an atomic rename."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DOWNLOAD_TIMEOUT_ENV = "FREEZELAB_DOWNLOAD_TIMEOUT_S"
DEFAULT_DOWNLOAD_TIMEOUT_S = 20.0
CHUNK_SIZE = 64 * 1024
PROGRESS_INTERVAL_S = 0.2
USER_AGENT = "FreezeLab (keras cache download)"

ProgressCallback = Callable[[int, int | None], None]
"""`on_progress(bytes_done, bytes_total)`; `bytes_total` is None when the server sends no size."""

# The opener every download goes through (tests replace it to keep the network out).
urlopen = urllib.request.urlopen


class DownloadError(OSError):
    """A download failed: no connection, an HTTP error, a stall, a bad hash or a full disk.

    Nothing is left in the destination folder when it is raised. The message says what went
    wrong and how to put the file in the cache by hand.

    Attributes:
        url: The URL that was requested.
        destination: The path the file was to be saved as.
        reason: What went wrong, as one sentence (e.g. "the download stalled: no data for
            20 s after 1.5 MB of 14.0 MB.").
    """

    def __init__(self, reason: str, *, url: str, destination: Path):
        self.url = url
        self.destination = Path(destination)
        self.reason = reason
        super().__init__(
            f"Could not download {url}: {reason} Nothing was saved. To install the file by "
            f"hand, download that URL on a machine with internet access and put it in "
            f"{self.destination.parent} as '{self.destination.name}'."
        )


def download_timeout_s(timeout_s: float | None = None) -> float:
    """The stall/connect timeout of downloads, in seconds.

    Args:
        timeout_s: An explicit timeout; None reads `$FREEZELAB_DOWNLOAD_TIMEOUT_S`, else
            uses `DEFAULT_DOWNLOAD_TIMEOUT_S` (20 s).

    Returns:
        A positive, finite number of seconds.

    Raises:
        ValueError: When the argument or the environment variable is not a positive number.

    Example:
    >>> download_timeout_s(5)
    5.0
    """
    source = "timeout_s"
    value: object = timeout_s
    if timeout_s is None:
        text = os.environ.get(DOWNLOAD_TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_DOWNLOAD_TIMEOUT_S
        source, value = DOWNLOAD_TIMEOUT_ENV, text
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"{source} must be a positive number of seconds (e.g. 20); received {value!r}."
        )
    return seconds


def format_bytes(num_bytes: float) -> str:
    """A byte count for people: "812 B", "1.5 kB", "14.0 MB".

    Example:
    >>> format_bytes(14_536_120)
    '14.5 MB'
    """
    if num_bytes < 1000:
        return f"{int(num_bytes)} B"
    for unit in ("kB", "MB", "GB"):
        num_bytes /= 1000
        if num_bytes < 1000 or unit == "GB":
            break
    return f"{num_bytes:.1f} {unit}"


def hash_algorithm(file_hash: str) -> str:
    """Keras's rule for `get_file(file_hash=...)`: 64 hex digits are sha256, others md5.

    Example:
    >>> hash_algorithm("d3e8ec802a04aa4fc771ee12a9a9b836")
    'md5'
    """
    return "sha256" if len(file_hash) == 64 else "md5"


def progress_text(done: int, total: int | None) -> str:
    """How much of a download arrived, for people: "1.5 MB of 14.0 MB".

    Example:
    >>> progress_text(1_500_000, None)
    '1.5 MB (size unknown)'
    """
    if total is None:
        return f"{format_bytes(done)} (size unknown)"
    return f"{format_bytes(done)} of {format_bytes(total)}"


def _content_length(response) -> int | None:
    text = response.headers.get("Content-Length")
    if text is None:
        return None
    try:
        length = int(text)
    except ValueError:
        return None
    return length if length >= 0 else None


@dataclass(frozen=True)
class _Transfer:
    """One download: where from, where to and the stall timeout; it words its failures."""

    url: str
    destination: Path
    timeout: float

    def failure(self, reason: str) -> DownloadError:
        """A `DownloadError` of this download, for `reason`."""
        return DownloadError(reason, url=self.url, destination=self.destination)


def _open_temporary(transfer: _Transfer) -> tuple[int, Path]:
    """Creates the destination's folder and a hidden temporary file beside the destination."""
    folder = transfer.destination.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(
            dir=folder, prefix=f".{transfer.destination.name}.", suffix=".part"
        )
    except OSError as error:
        raise transfer.failure(f"the folder {folder} cannot be written ({error}).") from error
    return handle, Path(temporary_name)


def _connect(transfer: _Transfer):
    """Opens the URL; a refused or timed-out connection or an HTTP error is a DownloadError."""
    request = urllib.request.Request(transfer.url, headers={"User-Agent": USER_AGENT})
    timeout = transfer.timeout
    try:
        return urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise transfer.failure(f"the server answered HTTP {error.code} {error.reason}.") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            reason = f"no connection to the server within {timeout:g} s."
        else:
            reason = f"the connection failed ({error.reason})."
        raise transfer.failure(reason) from error
    except TimeoutError as error:
        raise transfer.failure(f"the server did not answer within {timeout:g} s.") from error
    except OSError as error:
        raise transfer.failure(f"the connection failed ({error}).") from error


def _read_chunk(
    transfer: _Transfer, read: Callable[[int], bytes], done: int, total: int | None
) -> bytes:
    """The response's next chunk (empty at the end); a stall or a broken connection raises."""
    try:
        return read(CHUNK_SIZE)
    except TimeoutError as error:
        raise transfer.failure(
            f"the download stalled: no data for {transfer.timeout:g} s after "
            f"{progress_text(done, total)}."
        ) from error
    except OSError as error:  # a reset connection, an http.client error
        raise transfer.failure(
            f"the connection broke after {progress_text(done, total)} "
            f"({type(error).__name__}: {error})."
        ) from error


def _write_chunk(transfer: _Transfer, output: BinaryIO, chunk: bytes, done: int) -> None:
    """Writes a chunk to the temporary file; a full disk (any OSError) raises."""
    try:
        output.write(chunk)
    except OSError as error:
        raise transfer.failure(
            f"writing to {transfer.destination.parent} failed after {format_bytes(done)} ({error})."
        ) from error


def _copy(
    transfer: _Transfer,
    response,
    output: BinaryIO,
    hasher: Any,
    on_progress: ProgressCallback | None,
    progress_interval_s: float,
) -> tuple[int, int | None]:
    """Copies the response into `output`, hashing and reporting progress: `(done, total)`."""
    done = 0
    total = _content_length(response)
    if on_progress is not None:
        on_progress(0, total)
    last_report = time.monotonic()
    read = getattr(response, "read1", response.read)
    while chunk := _read_chunk(transfer, read, done, total):
        _write_chunk(transfer, output, chunk, done)
        if hasher is not None:
            hasher.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        if on_progress is not None and now - last_report >= progress_interval_s:
            on_progress(done, total)
            last_report = now
    return done, total


def _check_received(
    transfer: _Transfer, done: int, total: int | None, hasher: Any, file_hash: str | None
) -> None:
    """Refuses a download shorter than the size the server sent, or whose hash differs."""
    if total is not None and done != total:
        raise transfer.failure(
            f"the server closed the connection after {format_bytes(done)} of "
            f"{format_bytes(total)} ({done:,} of {total:,} bytes)."
        )
    if hasher is not None and hasher.hexdigest() != file_hash.lower():
        raise transfer.failure(
            f"the file received ({format_bytes(done)}) has {hasher.name} "
            f"{hasher.hexdigest()}; expected {file_hash}. It may be corrupted or "
            "replaced on the way (a proxy or captive portal page?); it was not kept."
        )


def _move_into_place(transfer: _Transfer, temporary: Path) -> None:
    """Renames the complete temporary file onto the destination."""
    try:
        os.replace(temporary, transfer.destination)
    except OSError as error:
        raise transfer.failure(f"saving it as {transfer.destination} failed ({error}).") from error


def download_file(
    url: str,
    destination: str | os.PathLike,
    *,
    file_hash: str | None = None,
    timeout_s: float | None = None,
    on_progress: ProgressCallback | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> Path:
    """Downloads `url` to `destination` with timeouts, progress reports and a hash check.

    The bytes go to a hidden temporary file beside `destination` (`.<name>.*.part`), which
    is renamed onto `destination` only once the download is complete and its hash matches,
    so a half or wrong download never sits in the cache; on any failure it is deleted.
    Every socket operation (connecting, each read) times out after `timeout_s`, so a
    stalled server (no bytes for `timeout_s` seconds) fails instead of hanging the page.
    Exceptions raised by `on_progress` (e.g. Streamlit stopping a script) propagate
    unchanged, after the temporary file is removed.

    Args:
        url: An http or https URL.
        destination: The file to create (its folder is created if needed). An existing
            file is replaced only after a successful download.
        file_hash: The expected sha256 (64 hex digits) or md5 hex digest, as Keras's
            `get_file(file_hash=...)` takes it; None checks nothing.
        timeout_s: Seconds a connection or a read may wait for data; None for
            `download_timeout_s()` (`$FREEZELAB_DOWNLOAD_TIMEOUT_S`, default 20).
        on_progress: Called as `on_progress(bytes_done, bytes_total)` when the download
            starts, at most every `progress_interval_s` while it runs and once at the end;
            `bytes_total` is None when the server does not send the size.
        progress_interval_s: Smallest time between two progress reports (0: every chunk).

    Returns:
        The `Path` of the downloaded file (`destination`).

    Raises:
        ValueError: For a URL that is not http(s) or a bad timeout.
        DownloadError: When the connection fails or times out, the server answers with an
            HTTP error or stalls, the file is incomplete or its hash differs, or the folder
            cannot be written. Nothing is left behind.

    Example:
    >>> from models.applications import keras_cache_dir
    >>> path = download_file(
    ...     "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    ...     keras_cache_dir() / "datasets" / "mnist.npz",
    ...     file_hash="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ...     on_progress=lambda done, total: print(done, total),
    ... )
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"Only http and https URLs can be downloaded; received {url!r}.")
    timeout = download_timeout_s(timeout_s)
    transfer = _Transfer(url, Path(destination), timeout)
    handle, temporary = _open_temporary(transfer)
    hasher = hashlib.new(hash_algorithm(file_hash)) if file_hash else None
    try:
        with os.fdopen(handle, "wb") as output, _connect(transfer) as response:
            done, total = _copy(
                transfer, response, output, hasher, on_progress, progress_interval_s
            )
        _check_received(transfer, done, total, hasher, file_hash)
        _move_into_place(transfer, temporary)
    finally:
        temporary.unlink(missing_ok=True)
    if on_progress is not None:
        on_progress(done, total)
    return transfer.destination
