"""Fixtures for the real-browser tests: one live FreezeLab server, the system Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.harness import CHROMIUM_ARGS, ROOT, find_chromium, streamlit_server

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def app_url() -> str:
    """A FreezeLab server for the whole session; its log stays in test-artifacts/."""
    with streamlit_server(log_path=ARTIFACTS / "streamlit-server.log") as url:
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
