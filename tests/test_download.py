"""Tests for models/download.py against a local HTTP server on 127.0.0.1: never the network."""

import contextlib
import hashlib
import http.server
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

import models.download
from models.download import (
    DEFAULT_DOWNLOAD_TIMEOUT_S,
    DOWNLOAD_TIMEOUT_ENV,
    DownloadError,
    download_file,
    download_timeout_s,
    format_bytes,
)


@dataclass
class Route:
    """What the local server answers on one path.

    Attributes:
        body: Bytes sent after the headers.
        status: HTTP status.
        send_length: Whether to send Content-Length (else the body ends when the connection
            closes, so the size is unknown).
        declared_length: Content-Length to announce instead of `len(body)` (a truncated
            download when larger).
        stall: Send the headers and the body, then send nothing more until the test ends.
        silent: Accept the request and never answer, not even the status line.
        chunk_delay_s: Pause between 1 kB chunks of the body (to see progress reports).
    """

    body: bytes = b""
    status: int = 200
    send_length: bool = True
    declared_length: int | None = None
    stall: bool = False
    silent: bool = False
    chunk_delay_s: float = 0.0


@dataclass
class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving `routes`; `url(path)` builds URLs."""

    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def serve(self, path: str, body: bytes = b"", **options) -> str:
        self.routes["/" + path.lstrip("/")] = Route(body=body, **options)
        return self.url(path)


def _handler_for(server: LocalServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

        def do_GET(self):
            server.requests.append(self.path)
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if route.silent:
                server.release.wait(30)
                return
            self.send_response(route.status)
            if route.send_length:
                length = route.declared_length
                length = len(route.body) if length is None else length
                self.send_header("Content-Length", str(length))
            else:
                self.close_connection = True
            self.end_headers()
            for start in range(0, len(route.body), 1024):
                self.wfile.write(route.body[start : start + 1024])
                self.wfile.flush()
                if route.chunk_delay_s:
                    time.sleep(route.chunk_delay_s)
            if route.stall:
                server.release.wait(30)
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def running_server():
    """Runs a `LocalServer` on 127.0.0.1 in a thread while the block runs.

    Example:
    >>> with running_server() as server:
    ...     url = server.serve("a.bin", b"abc")
    """
    state = LocalServer(port=0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def local_server(monkeypatch):
    """A local HTTP server for one test; downloads go through the real urllib opener."""
    monkeypatch.setattr(models.download, "urlopen", urllib.request.urlopen)
    with running_server() as server:
        yield server


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((index * 31 + seed) % 251 for index in range(size))


def cache_listing(folder):
    """Every file in the folder, hidden ones (partial downloads) included."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- success
@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_a_small_file_downloads_with_its_hash_checked_and_progress(
    local_server, tmp_path, algorithm
):
    body = payload(20_000)
    url = local_server.serve("weights.h5", body, chunk_delay_s=0.002)
    destination = tmp_path / "cache" / "models" / "weights.h5"
    reports = []
    path = download_file(
        url,
        destination,
        file_hash=hashlib.new(algorithm, body).hexdigest(),
        timeout_s=5,
        on_progress=lambda done, total: reports.append((done, total)),
        progress_interval_s=0,
    )
    assert path == destination
    assert destination.read_bytes() == body
    assert cache_listing(destination.parent) == ["weights.h5"]  # no partial file beside it
    assert reports[0] == (0, len(body))
    assert reports[-1] == (len(body), len(body))
    done = [report[0] for report in reports]
    assert done == sorted(done) and len(set(done)) >= 3
    assert all(total == len(body) for _, total in reports)


def test_progress_says_the_size_is_unknown_when_the_server_does_not_send_it(local_server, tmp_path):
    body = payload(5_000, seed=3)
    url = local_server.serve("data.npz", body, send_length=False)
    reports = []
    download_file(url, tmp_path / "data.npz", on_progress=lambda *report: reports.append(report))
    assert (tmp_path / "data.npz").read_bytes() == body
    assert reports[0] == (0, None) and reports[-1] == (len(body), None)


def test_progress_reports_are_throttled_but_the_last_one_always_comes(local_server, tmp_path):
    body = payload(50_000)
    url = local_server.serve("big.bin", body)
    reports = []
    download_file(
        url,
        tmp_path / "big.bin",
        on_progress=lambda *report: reports.append(report),
        progress_interval_s=3600,
    )
    assert reports == [(0, len(body)), (len(body), len(body))]


def test_a_successful_download_replaces_an_older_file_atomically(local_server, tmp_path):
    destination = tmp_path / "mnist.npz"
    destination.write_bytes(b"old")
    url = local_server.serve("mnist.npz", b"new contents")
    download_file(url, destination)
    assert destination.read_bytes() == b"new contents"
    assert cache_listing(tmp_path) == ["mnist.npz"]


# ----------------------------------------------------------------------------- failures
def test_a_stalled_download_fails_within_the_timeout_and_leaves_nothing(local_server, tmp_path):
    url = local_server.serve("stall.h5", payload(3_000), declared_length=1_000_000, stall=True)
    folder = tmp_path / "keras" / "models"
    started = time.monotonic()
    with pytest.raises(DownloadError) as raised:
        download_file(url, folder / "stall.h5", timeout_s=1)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the stall was detected after {elapsed:.1f} s; expected about 1 s"
    error = raised.value
    message = str(error)
    assert isinstance(error, OSError)
    assert url in message
    assert "the download stalled: no data for 1 s after 3.0 kB of 1.0 MB." in message
    assert f"put it in {folder} as 'stall.h5'" in message
    assert "Nothing was saved" in message
    assert (error.url, error.destination) == (url, folder / "stall.h5")
    assert cache_listing(folder) == []


def test_a_server_that_never_answers_times_out(local_server, tmp_path):
    url = local_server.serve("silent.npz", silent=True)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"the server did not answer within 0\.5 s"):
        download_file(url, tmp_path / "silent.npz", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert cache_listing(tmp_path) == []


def test_the_timeout_comes_from_the_environment(local_server, tmp_path, monkeypatch):
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "0.5")
    url = local_server.serve("stall.npz", b"", declared_length=10, stall=True)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"no data for 0\.5 s after 0 B of 10 B"):
        download_file(url, tmp_path / "stall.npz")
    assert time.monotonic() - started < 5


def test_http_errors_are_explained_and_leave_nothing(local_server, tmp_path):
    url = local_server.url("missing.h5")
    with pytest.raises(DownloadError) as raised:
        download_file(url, tmp_path / "missing.h5", timeout_s=5)
    assert f"Could not download {url}: the server answered HTTP 404 Not Found." in str(raised.value)
    assert cache_listing(tmp_path) == []


def test_a_refused_connection_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(models.download, "urlopen", urllib.request.urlopen)
    url = f"http://127.0.0.1:{closed_port()}/weights.h5"
    with pytest.raises(DownloadError) as raised:
        download_file(url, tmp_path / "weights.h5", timeout_s=5)
    message = str(raised.value)
    assert "the connection failed (" in message and "refused" in message.lower()
    assert cache_listing(tmp_path) == []


def test_no_network_is_explained(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(models.download, "urlopen", no_network)
    with pytest.raises(DownloadError, match=r"connection failed \(\[Errno -3\] Temporary failure"):
        download_file("https://example.invalid/a.h5", tmp_path / "a.h5")


def test_a_hash_mismatch_is_refused_and_nothing_is_kept(local_server, tmp_path):
    body = payload(4_000)
    expected = hashlib.sha256(b"something else").hexdigest()
    url = local_server.serve("mnist.npz", body)
    destination = tmp_path / "datasets" / "mnist.npz"
    with pytest.raises(DownloadError) as raised:
        download_file(url, destination, file_hash=expected)
    message = str(raised.value)
    assert f"has sha256 {hashlib.sha256(body).hexdigest()}; expected {expected}" in message
    assert "it was not kept" in message
    assert cache_listing(destination.parent) == []


def test_a_truncated_download_is_refused(local_server, tmp_path):
    url = local_server.serve("short.h5", payload(2_000), declared_length=5_000)
    with pytest.raises(DownloadError) as raised:
        download_file(url, tmp_path / "short.h5", timeout_s=5)
    message = str(raised.value)
    assert "closed the connection after 2.0 kB of 5.0 kB (2,000 of 5,000 bytes)" in message
    assert cache_listing(tmp_path) == []


def test_a_failing_download_keeps_the_older_file(local_server, tmp_path):
    destination = tmp_path / "weights.h5"
    destination.write_bytes(b"the file that was there")
    url = local_server.serve("weights.h5", b"x" * 10, declared_length=20)
    with pytest.raises(DownloadError):
        download_file(url, destination, timeout_s=5)
    assert destination.read_bytes() == b"the file that was there"
    assert cache_listing(tmp_path) == ["weights.h5"]


def test_an_unwritable_folder_is_explained(local_server, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    url = local_server.serve("a.h5", b"abc")
    with pytest.raises(DownloadError, match=r"the folder .*not_a_folder/models cannot be written"):
        download_file(url, blocker / "models" / "a.h5")


def test_exceptions_of_the_progress_callback_propagate_and_leave_nothing(local_server, tmp_path):
    class StopScript(BaseException):
        """Like Streamlit stopping a script from inside an st.* call."""

    def on_progress(done, total):
        if done:
            raise StopScript

    url = local_server.serve("a.bin", payload(10_000))
    with pytest.raises(StopScript):
        download_file(url, tmp_path / "a.bin", on_progress=on_progress, progress_interval_s=0)
    assert cache_listing(tmp_path) == []


# ----------------------------------------------------------------------------- settings
def test_the_timeout_setting_is_checked(monkeypatch):
    monkeypatch.delenv(DOWNLOAD_TIMEOUT_ENV, raising=False)
    assert download_timeout_s() == DEFAULT_DOWNLOAD_TIMEOUT_S == 20.0
    assert download_timeout_s(2) == 2.0
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, " 7.5 ")
    assert download_timeout_s() == 7.5
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"FREEZELAB_DOWNLOAD_TIMEOUT_S must be .*'soon'"):
        download_timeout_s()
    for bad in (0, -1, float("inf"), float("nan"), True, "x"):
        with pytest.raises(ValueError, match=r"timeout_s must be a positive number of seconds"):
            download_timeout_s(bad)


def test_only_http_urls_are_downloaded(tmp_path):
    with pytest.raises(
        ValueError, match=r"Only http and https URLs .* received 'file:///etc/passwd'"
    ):
        download_file("file:///etc/passwd", tmp_path / "passwd")
    assert cache_listing(tmp_path) == []


def test_byte_counts_read_well():
    assert [format_bytes(value) for value in (0, 999, 1_000, 14_536_120, 3e12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "14.5 MB",
        "3000.0 GB",
    ]
