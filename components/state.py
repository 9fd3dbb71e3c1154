"""Owns this session's user settings and the one way notices and errors reach the user.

Streamlit drops the state of a widget that was not drawn in a run. With lazy tabs (only the open
tab's content runs) a setting made in a closed tab would be lost, so every user setting lives in
one app-owned dictionary, `st.session_state[SETTINGS_KEY]`, and widgets only show it: before a
widget is drawn, its key is filled from the setting; after it is drawn, its value is copied back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

SETTINGS_KEY = "settings"
NOTICES_KEY = "notices"
NOTICE_KINDS = ("success", "info", "warning", "error")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
_ICONS = {"error": ":material/error:"}


@dataclass(frozen=True)
class Notice:
    """A message kept for the user until the page is next drawn.

    Attributes:
        text: Plain text (names in it are untrusted: it is shown without Markdown).
        kind: One of `NOTICE_KINDS`.
    """

    text: str
    kind: str = "warning"

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"`kind` must be one of {NOTICE_KINDS}. Received: kind={self.kind!r}")


def escape_markdown(text: str) -> str:
    """Escapes Markdown so untrusted names (files, layers, folders) show as plain text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def show(notice: Notice) -> None:
    """Shows one notice now, in the colour of its kind, as plain text."""
    render = {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}
    render[notice.kind](escape_markdown(notice.text), icon=_ICONS.get(notice.kind))


def show_error(message: str) -> None:
    """Shows an error message now, verbatim (names in it are untrusted: no Markdown)."""
    show(Notice(message, "error"))


def notify(text: str, kind: str = "warning") -> None:
    """Keeps a notice to show at the top of the page's next run (after `st.rerun()`).

    Args:
        text: What to tell the user, in plain text.
        kind: "success", "info", "warning" or "error".

    Example:
    >>> notify("Restored the freeze plan and settings.", "success")
    """
    st.session_state.setdefault(NOTICES_KEY, []).append(Notice(text, kind))


def show_notices() -> None:
    """Shows and forgets the notices kept by `notify`, oldest first."""
    for notice in st.session_state.pop(NOTICES_KEY, []):
        show(notice)


def _settings() -> dict[str, Any]:
    return st.session_state.setdefault(SETTINGS_KEY, {})


def setting(key: str, default: Any = None) -> Any:
    """Returns a user setting kept by the app, whether or not its widget is drawn now.

    Args:
        key: The setting's name (the key of the widget that shows it).
        default: Returned when the user never set it.

    Returns:
        The setting's value.

    Example:
    >>> fraction = setting("validation_fraction", 0.2)
    """
    return _settings().get(key, default)


def set_setting(key: str, value: Any) -> None:
    """Sets a user setting (a restored config, an instructor link) so its widget shows it.

    Args:
        key: The setting's name (the key of the widget that shows it).
        value: The new value.
    """
    _settings()[key] = value
    st.session_state.pop(key, None)  # the widget takes the new value when next drawn


def kept_widget(
    widget: Callable[..., Any],
    label: str,
    *,
    key: str,
    default: Any,
    options: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Draws a widget whose value is a user setting kept across tabs and reruns.

    Args:
        widget: A Streamlit widget function (`st.slider`, `st.selectbox`, a column's method...).
        label: The widget's label.
        key: The widget's key, also the setting's name.
        default: The value before the user chose one (or when the kept one is no longer offered).
        options: The choices of a selection widget (passed on as its second argument).
        **kwargs: Other arguments of the widget (never `value` or `index`: the setting is).

    Returns:
        The widget's value, also kept as the setting.

    Example:
    >>> fraction = kept_widget(st.slider, "Validation split", key="validation_fraction",
    ...                        default=0.2, min_value=0.0, max_value=0.5)
    """
    settings = _settings()
    offered = list(options) if options is not None else None
    if offered is not None and default not in offered:
        default = offered[0] if offered else None
    value = st.session_state.get(key, settings.get(key, default))
    if offered is not None and value not in offered:
        value = default
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A kept number stays inside the widget's current bounds (they follow the model).
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        value = max(value, low) if low is not None else value
        value = min(value, high) if high is not None else value
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value
    arguments = (label, offered) if offered is not None else (label,)
    result = widget(*arguments, key=key, **kwargs)
    settings[key] = result
    return result
