"""Serves FreezeLab (`app.py`) and warms the server up in the background as it starts.

`streamlit run serve.py` (what `make run` does) runs the same dashboard as `streamlit run
app.py`, plus a start-up hook: while the server already answers, a background thread imports
TensorFlow and Keras, loads the bundled model and dataset into the server-wide caches, starts
the orphan reaper, and traces one tiny training step, so the first visitor after a start finds
a warm server instead of waiting for all of that (see `components.warm_up`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st


@asynccontextmanager
async def warm_up_in_background(_app: Any) -> AsyncIterator[None]:
    """Starts the warm-up thread when the server starts; the server never waits for it."""
    from components.warm_up import warm_up

    threading.Thread(target=warm_up, name="freezelab-warm-up", daemon=True).start()
    yield


app = st.App("app.py", lifespan=warm_up_in_background)
