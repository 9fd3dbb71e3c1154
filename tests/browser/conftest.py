"""Fixtures for the real-browser tests: one live FreezeLab server, the system Chromium."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.harness import CHROMIUM_ARGS, ROOT, find_chromium, streamlit_server

ARTIFACTS = ROOT / "test-artifacts"


ORPHAN_GRACE_SECONDS = 10  # short, so a closed page's job is cancelled within a test


@pytest.fixture(scope="session")
def runs_folder(tmp_path_factory) -> Path:
    """The server's runs folder (FREEZELAB_RUNS_DIR), fresh for every test session."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def app_url(runs_folder) -> str:
    """A FreezeLab server for the whole session; its log stays in test-artifacts/."""
    environment = {
        "FREEZELAB_ORPHAN_GRACE_S": str(ORPHAN_GRACE_SECONDS),
        "FREEZELAB_RUNS_DIR": str(runs_folder),
    }
    with streamlit_server(
        log_path=ARTIFACTS / "streamlit-server.log", environment=environment
    ) as url:
        yield url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Playwright launches Debian's Chromium: no browser download (it would fail offline).

    A missing Chromium fails the tests with a message saying how to install it.
    """
    return {**browser_type_launch_args, "executable_path": find_chromium(), "args": CHROMIUM_ARGS}


@pytest.fixture
def artifacts() -> Path:
    """Folder for screenshots and timings kept by the tests."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Makes pages in browser contexts of their own (one learner each) and closes them all when
    the test ends: a page left open keeps its live fragments rerunning on the session's server
    (every second on the Train step) for the rest of the test run."""
    contexts = []

    def make() -> Page:
        contexts.append(browser.new_context())
        return contexts[-1].new_page()

    yield make
    for context in contexts:
        with contextlib.suppress(Exception):  # already closed by the test
            context.close()
