"""Runs a script on another Keras backend, in a fresh Python (Keras picks its backend once).

The script prints one line "RESULT <json>"; the tests compare that report with what they
measured on TensorFlow in this process.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "


def skip_without_jax() -> None:
    """Skips the calling test when JAX is not installed (`make test` installs it)."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed: pip install -r requirements-dev.txt")


def run_on_backend(script: str, backend: str = "jax", timeout: float = 240) -> dict:
    """Runs `script` with `KERAS_BACKEND=backend` from the repository root.

    Args:
        script: Python source that prints `RESULT <json>` once it has measured.
        backend: The Keras backend, e.g. "jax" or "tensorflow".
        timeout: Seconds before the run is stopped (a failure).

    Returns:
        The JSON of the last `RESULT` line.
    """
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))
