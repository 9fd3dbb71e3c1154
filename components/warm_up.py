"""Warms the server up as it starts: TensorFlow, Keras, the bundled model and one training step.

Importing TensorFlow and Keras, loading the bundled base model and tracing a first training
step take seconds, once per server process. Without a warm-up the first visitor after a start
pays all of it (a blank page, then a run stuck at "batch 0"). `serve.py` starts `warm_up` in a
background thread when the server starts; the page shows a "warming up" notice while it runs.

This module imports only the standard library at load time, so the page can ask
`server_is_warm()` before anything heavy is imported.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

LOGGER = logging.getLogger("freezelab")
_STARTED = threading.Event()
_DONE = threading.Event()
_TIMINGS: dict[str, float] = {}


def server_is_warm() -> bool:
    """Whether TensorFlow, Keras and the bundled model are ready in this server process.

    True once the warm-up finished; without a warm-up (e.g. `streamlit run app.py`), once Keras
    was imported by an earlier page.
    """
    if _STARTED.is_set():
        return _DONE.is_set()
    return "keras" in sys.modules


def warm_up_timings() -> dict[str, float]:
    """Seconds each warm-up step took (empty before the warm-up ended)."""
    return dict(_TIMINGS)


def warm_up() -> None:
    """Imports the heavy modules, fills the server-wide caches and traces one training step.

    Never raises: a failure is logged, and the first visitor then does the work as usual.
    """
    if _STARTED.is_set():
        return
    _STARTED.set()
    # Outside a page's script run, Streamlit's caches warn once per call; nothing is wrong.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(
        logging.ERROR
    )
    try:
        _TIMINGS.update(_warm_up_steps())
        LOGGER.info("FreezeLab warm-up done: %s", _TIMINGS)
    except Exception:
        LOGGER.exception("The warm-up failed; the first visitor will load everything instead.")
    finally:
        _DONE.set()


def _warm_up_steps() -> dict[str, float]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    import keras  # noqa: F401  (TensorFlow comes with it)

    from components.resources import (
        cached_dataset,
        cached_template,
        session_registry,
        training_executor,
    )
    from components.runtime import keep_keras_session
    from models.catalogue import DEFAULT_MODEL
    from models.datasets import DEFAULT_DATASET
    from models.training import TrainingConfig, TrainingJob
    from models.workspace import Workspace

    keep_keras_session()
    timings["imports"] = time.perf_counter() - started
    started = time.perf_counter()
    template, dataset = cached_template(DEFAULT_MODEL), cached_dataset(DEFAULT_DATASET)
    session_registry()  # starts the orphan reaper
    timings["bundled model and data"] = time.perf_counter() - started
    started = time.perf_counter()
    training_executor()  # connects Ray once (FREEZELAB_EXECUTOR=ray), off every page's thread
    timings["training executor"] = time.perf_counter() - started
    started = time.perf_counter()
    # A throwaway workspace trains one batch: the process's first fit pays TensorFlow's
    # one-time set-up here, not in the first learner's run.
    workspace = Workspace(template, dataset)
    config = TrainingConfig(epochs=1, batch_size=16, validation_fraction=0.0)
    TrainingJob(workspace.model, dataset.x[:32], dataset.y[:32], config=config).run()
    timings["first training step"] = time.perf_counter() - started
    return timings


__all__ = ["server_is_warm", "warm_up", "warm_up_timings"]
