"""Helpers shared by the AppTest suites: open one of the dashboard's lazy tabs."""

from streamlit.testing.v1 import AppTest

TAB_KEY = "step_tab"  # app.TAB_KEY: the open tab's session-state key


def open_tab(at: AppTest, label: str) -> AppTest:
    """Opens a tab as a click on it does (only the open tab's content runs) and reruns.

    Args:
        at: The app under test.
        label: The tab's label, e.g. "2 · Freeze".

    Returns:
        `at`, rerun with that tab open.
    """
    at.session_state[TAB_KEY] = label
    at.run()
    assert not at.exception, [exception.value for exception in at.exception]
    return at
