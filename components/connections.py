"""Which browser connections are open, as Streamlit's runtime knows them.

A page is alive while its websocket is open: Streamlit's runtime keeps every connected session
in its session manager and drops it the moment the socket closes (a closed tab, a refresh) or
its pings time out (a vanished network). `models.sessions.SessionRegistry` asks this instead of
relying on the page's heartbeat alone, which a starved server can delay past the grace period.

Streamlit documents no public call for either question, so both are read defensively: where
the runtime has no such session manager (AppTest, a future Streamlit without it), there is no
connection id and the registry goes by script runs and heartbeats, as before.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("freezelab")


def this_connection() -> str | None:
    """The id of the connection this script run came from, or None outside a live server.

    Example:
    >>> this_connection()  # inside a script run served by `streamlit run`
    'a1b2c3d4-...'
    """
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return None
    context = get_script_run_ctx(suppress_warning=True)
    if context is None or not runtime.exists():
        return None
    return str(context.session_id)


def connection_open(connection: str) -> bool:
    """Whether the connection `connection` (an id from `this_connection`) is open now.

    Safe to call from any thread (Streamlit marks `Runtime.is_active_session` so). Answers
    False when the runtime is gone or cannot say, so the registry falls back to the page's
    last script run or heartbeat.
    """
    try:
        from streamlit import runtime

        return runtime.exists() and bool(runtime.get_instance().is_active_session(connection))
    except Exception as error:  # an internal API: never let its change stop the reaper
        LOGGER.debug("Could not ask Streamlit whether connection %s is open: %s", connection, error)
        return False


__all__ = ["connection_open", "this_connection"]
