"""Starts FreezeLab's Streamlit server and a headless Chromium, for browser tests and screenshots.

No browser is downloaded: Playwright drives the system's Chromium (Debian's `chromium`
package) through `executable_path`, so everything works offline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INSTALL_HINT = (
    "No Chromium found. Install Debian's package (`sudo apt-get install chromium`), or on other "
    "systems a Chromium/Chrome build, or point FREEZELAB_CHROMIUM at its executable. "
    "`make test` installs it automatically when run as root on Debian or Ubuntu."
)
APP_IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"


def find_chromium() -> str:
    """Returns the path of a Chromium executable.

    Returns:
        `$FREEZELAB_CHROMIUM` when set, else the first Chromium found on PATH.

    Raises:
        RuntimeError: When none is found; the message says how to install one.
    """
    configured = os.environ.get("FREEZELAB_CHROMIUM")
    if configured:
        if Path(configured).is_file():
            return configured
        raise RuntimeError(f"FREEZELAB_CHROMIUM={configured!r} is not a file. {INSTALL_HINT}")
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(INSTALL_HINT)


def free_port() -> int:
    """Returns a TCP port on localhost that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 90,
    environment: dict[str, str] | None = None,
) -> Iterator[str]:
    """Runs `streamlit run serve.py` (as `make run` does) headless on localhost for the block.

    Args:
        port: Port to use; a free one when None.
        log_path: Where the server's output goes (kept for failures); a temp file when None.
        timeout: Seconds to wait for `/_stcore/health` to answer "ok".
        environment: Extra environment variables for the server (e.g. a short
            FREEZELAB_ORPHAN_GRACE_S).

    Yields:
        The app's URL, e.g. "http://localhost:8765".
    """
    with streamlit_server_process(port, log_path, timeout, environment) as (url, _server):
        yield url


@contextlib.contextmanager
def streamlit_server_process(
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 90,
    environment: dict[str, str] | None = None,
    new_session: bool = False,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like `streamlit_server`, and also gives the server's process (its PID, for memory).

    Args:
        port: Port to use; a free one when None.
        log_path: Where the server's output goes (kept for failures); a temp file when None.
        timeout: Seconds to wait for `/_stcore/health` to answer "ok".
        environment: Extra environment variables for the server.
        new_session: Start the server in its own session (`setsid`): on Linux with autogroup
            scheduling it then gets its own share of the CPU instead of sharing the caller's.

    Yields:
        `(url, process)`: the app's URL and the running `subprocess.Popen` of the server,
        once it answers its health check.
    """
    port = port or free_port()
    log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"freezelab-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(environment or {})
    )
    command = [
        sys.executable, "-m", "streamlit", "run", "serve.py",
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=new_session,
        )
        try:
            url = f"http://localhost:{port}"
            deadline = time.monotonic() + timeout
            while True:
                if server.poll() is not None:
                    raise RuntimeError(
                        f"The Streamlit server exited early; see its log {log_path}."
                    )
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply,
                ):
                    if reply.read() == b"ok":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"The server did not become healthy; see {log_path}.")
                time.sleep(0.3)
            yield url, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def launch_chromium(playwright):
    """Launches the system Chromium headless through Playwright (no browser download)."""
    return playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)


def wait_for_app(page, timeout: float = 90_000) -> None:
    """Waits until Streamlit has finished running the script for the page."""
    page.wait_for_selector(APP_IDLE, timeout=timeout)


def open_app(page, url: str) -> None:
    """Opens the app and waits for its first script run to finish."""
    page.goto(url)
    page.wait_for_selector("[data-testid=stApp]", timeout=90_000)
    wait_for_app(page)
