"""Owns this browser session's state: its keys, user settings, and how notices reach the user.

Every `st.session_state` key FreezeLab uses is a constant here, and only this module reads or
writes `st.session_state`; the rest of the app goes through `get`, `put`, `pop`, the settings
and the notices below.

User settings outlive the widgets that show them. Streamlit drops the state of a widget that
was not drawn in a run, and with lazy tabs (only the open tab's content runs) a setting made in
a closed tab would be lost, so every user setting lives in one app-owned dictionary and widgets
only show it (`kept_widget`): before a widget is drawn, its key is filled from the setting;
after it is drawn, its value is copied back.

Two scopes: most values belong to this page (one browser tab's socket), but the values in
`KEPT_ACROSS_REFRESH` belong to the URL's session (`models.sessions.Session.values`), so a
refresh or reconnect of the same link finds its settings, upload and choices again. `attach`
links the page to its URL session's values at the start of every run; `get`, `put`, `pop`,
`setdefault` and `has` pick the scope by key.

Notices are the one way messages reach the user: `notify` keeps one for the next run (a
handler followed by `st.rerun()`), `show_notices` draws them where they belong (the top of the
page, or inside one step's tab), and `show_error` draws an error at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

# ------------------------------------------------------------------------- the keys
WORKSPACE = "workspace"  # this session's models.workspace.Workspace
STORED_RUNS = "stored_runs"  # snapshots of runs kept on disk from earlier visits
SAVED_RUN_IDS = "saved_run_ids"  # ids of this session's runs already saved to disk
PRESET = "preset"  # the instructor link's models.presets.Preset
TRAINING_DEFAULTS = "training_defaults"  # TrainingConfig the settings start from
CHOSEN_CONFIG = "chosen_config"  # the TrainingConfig the controls show in this run
LAYER_RATES_SHOWN = "layer_rates_shown"  # the default LayerRates the rate controls last took
WEIGHTS_MISSING = "weights_error"  # why ImageNet weights could not be had (offers random init)
UPLOADED_MODEL = "uploaded_model"  # (file name, keras.Model) of the last model upload
UPLOADED_INFO = "uploaded_info"  # what the model step shows of that upload
DATA_NOTES = "data_notes"  # notes from loading the dataset (skipped files, dropped rows)
ENDED_RUN_SHOWN = "ended_run_shown"  # the run whose end already triggered a full rerun
ALL_FROZEN_WARNING = "all_frozen_warning"  # Train was pressed with nothing trainable
STEP_TAB = "step_tab"  # the open tab (tests and scripts may set it)
SETTINGS = "settings"  # the user's settings, by widget key
NOTICES = "notices"  # notices kept for the next run
SEEN_UPLOADS = "seen_uploads"  # uploader key -> id of the file already handled
LESSONS_CACHE = "lessons_cache"  # the Lessons tab's computed numbers, by setting
LESSONS_FROZEN_TRAINING = "lessons_frozen_training"
LESSONS_WORKFLOW = "lessons_workflow"
LESSONS_DIAGNOSTICS = "lessons_diagnostics"
PITFALL_RESULTS = "pitfall_results"  # the Pitfall lab's results, by (pitfall, seed)
PITFALL_ERROR = "pitfall_error"

URL_SESSION_VALUES = "url_session_values"  # the URL session's values (see `attach`)
PAGE_ATTACHED = "page_attached"  # this page already took its URL session's values once
DATA_SOURCE = "data_source"  # models.session_record.DataSource of the chosen dataset
RECORD_WRITTEN = "record_written"  # the session record last kept on disk
KEPT_ACROSS_REFRESH = frozenset(
    {SETTINGS, CHOSEN_CONFIG, UPLOADED_MODEL, UPLOADED_INFO, DATA_NOTES, DATA_SOURCE,
     RECORD_WRITTEN, WEIGHTS_MISSING}
)  # fmt: skip

# Where a notice shows: the top of the page, or inside one step's tab.
PAGE = "page"
NOTICE_PLACES = (PAGE, "model", "data", "export")
NOTICE_KINDS = ("success", "info", "warning", "error")
# Characters that can start Markdown or HTML markup anywhere in a line. Without "[" no link or
# image can form, so "(", ")", "." and "!" stay readable ("Finished 2 epoch(s).").
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#|<>~$])")
_LINE_START_MARKUP = re.compile(r"^(\s*)([-+]|\d+[.)])(?=\s)", re.MULTILINE)
_ICONS = {"error": ":material/error:"}


# ------------------------------------------------------------------ plain session values
def attach(values: dict[str, Any]) -> bool:
    """Links this page to its URL session's values (call at the start of every run).

    Args:
        values: The URL session's dictionary (`models.sessions.Session.values`), shared by
            every page (socket) of the same link.

    Returns:
        True on this page's first run (a new tab, a refresh or a reconnect), else False.
    """
    st.session_state[URL_SESSION_VALUES] = values
    first = not st.session_state.get(PAGE_ATTACHED, False)
    st.session_state[PAGE_ATTACHED] = True
    return first


def _scope(key: str) -> Any:
    """The mapping that holds `key`: the URL session's values or this page's session state."""
    if key in KEPT_ACROSS_REFRESH:
        values = st.session_state.get(URL_SESSION_VALUES)
        if values is None:  # not attached (a component drawn alone in a test): page scope
            values = st.session_state.setdefault(URL_SESSION_VALUES, {})
        return values
    return st.session_state


def get(key: str, default: Any = None) -> Any:
    """Returns a session value, or `default` when it was never set.

    Example:
    >>> get(STORED_RUNS, [])
    []
    """
    return _scope(key).get(key, default)


def put(key: str, value: Any) -> None:
    """Sets a session value."""
    _scope(key)[key] = value


def pop(key: str, default: Any = None) -> Any:
    """Removes a session value and returns it (`default` when it was not set)."""
    return _scope(key).pop(key, default)


def setdefault(key: str, default: Any) -> Any:
    """Returns a session value, setting it to `default` first when it was not set."""
    return _scope(key).setdefault(key, default)


def has(key: str) -> bool:
    """Whether the session holds a value under `key`."""
    return key in _scope(key)


def first_sight(uploader_key: str, file_id: str) -> bool:
    """True the first time an uploader shows this file (reruns then skip handling it again).

    Args:
        uploader_key: The file uploader's key.
        file_id: The uploaded file's `file_id`.

    Returns:
        Whether this file is new for that uploader.
    """
    seen: dict[str, str] = st.session_state.setdefault(SEEN_UPLOADS, {})
    if seen.get(uploader_key) == file_id:
        return False
    seen[uploader_key] = file_id
    return True


# ---------------------------------------------------------------------------- notices
@dataclass(frozen=True)
class Notice:
    """A message for the user.

    Attributes:
        text: Plain text (names in it are untrusted: it is shown without Markdown).
        kind: One of `NOTICE_KINDS`.
        place: Where it shows: `PAGE` (the top) or a step ("model", "data", "export").
    """

    text: str
    kind: str = "warning"
    place: str = PAGE

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"`kind` must be one of {NOTICE_KINDS}. Received: kind={self.kind!r}")
        if self.place not in NOTICE_PLACES:
            raise ValueError(
                f"`place` must be one of {NOTICE_PLACES}. Received: place={self.place!r}"
            )


def escape_markdown(text: str) -> str:
    """Escapes Markdown so untrusted names (files, layers, folders) show as plain text."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
    # A line that starts like a list item ("- x", "2. x") stays a line of text.
    return _LINE_START_MARKUP.sub(
        lambda match: match.group(1) + match.group(2)[:-1] + "\\" + match.group(2)[-1], escaped
    )


def show(notice: Notice) -> None:
    """Shows one notice now, in the colour of its kind, as plain text."""
    render = {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}
    render[notice.kind](escape_markdown(notice.text), icon=_ICONS.get(notice.kind))


def show_error(message: str) -> None:
    """Shows an error message now, verbatim (names in it are untrusted: no Markdown)."""
    show(Notice(message, "error"))


def notify(text: str, kind: str = "warning", place: str = PAGE) -> None:
    """Keeps a notice to show on the page's next run (after `st.rerun()`).

    Args:
        text: What to tell the user, in plain text.
        kind: "success", "info", "warning" or "error".
        place: `PAGE` for the top of the page, or the step whose tab shows it.

    Example:
    >>> notify("Restored the freeze plan and settings.", "success")
    """
    st.session_state.setdefault(NOTICES, []).append(Notice(text, kind, place))


def show_notices(place: str = PAGE) -> None:
    """Shows and forgets the kept notices for one place, oldest first."""
    kept: list[Notice] = st.session_state.setdefault(NOTICES, [])
    for notice in [notice for notice in kept if notice.place == place]:
        show(notice)
    kept[:] = [notice for notice in kept if notice.place != place]


def clear_notices(place: str) -> None:
    """Forgets the kept notices of one place (a new request replaces the old answer)."""
    kept: list[Notice] = st.session_state.setdefault(NOTICES, [])
    kept[:] = [notice for notice in kept if notice.place != place]


# --------------------------------------------------------------------------- settings
def _settings() -> dict[str, Any]:
    return setdefault(SETTINGS, {})


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
