"""Keeps Streamlit's per-run clean-up from resetting Keras for every session mid-training.

After every script run (fragment reruns included) Streamlit 1.67 calls
`keras.backend.clear_session()` on any imported `keras` module (`_clean_problem_modules` in
`streamlit/runtime/scriptrunner/script_runner.py`). On a server where several sessions train
models in background threads that is harmful: it resets Keras's global state (name counters,
the global dtype policy), clears TensorFlow's kernel cache and the default graph while another
thread is tracing or training, and forces a full garbage collection. Measured here: a 3-epoch
run of the bundled model took over 40 s instead of 3 s while the dashboard refreshed its live
charts. This module makes exactly that call a no-op and leaves every other caller alone.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import keras

STREAMLIT_CLEANUP = "_clean_problem_modules"


def _called_by_streamlit_cleanup() -> bool:
    frame = sys._getframe(2)
    return (
        frame is not None
        and frame.f_code.co_name == STREAMLIT_CLEANUP
        and ("streamlit" in frame.f_code.co_filename)
    )


def keep_keras_session() -> None:
    """Stops Streamlit's after-run clean-up from calling `keras.backend.clear_session()`.

    Idempotent: calling it again (every rerun does) changes nothing. Direct calls of
    `keras.backend.clear_session()` by user code still work.

    Example:
    >>> keep_keras_session()
    >>> keras.backend.clear_session.__name__
    'clear_session'
    """
    current: Callable[..., Any] = keras.backend.clear_session
    if getattr(current, "_freezelab_guard", False):
        return

    @functools.wraps(current)
    def clear_session(*args: Any, **kwargs: Any) -> Any:
        if _called_by_streamlit_cleanup():
            return None
        return current(*args, **kwargs)

    clear_session._freezelab_guard = True  # type: ignore[attr-defined]
    keras.backend.clear_session = clear_session
