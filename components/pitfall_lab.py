"""Render the pitfall lab: pick a freezing mistake, run it both ways, compare the measured evidence.

Results live in the session (`state.PITFALL_RESULTS`), so reruns show them
again without training anything; training happens only when "Run experiment" is clicked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import streamlit as st

from components import state
from components.figures import drift_lines_figure
from components.state import escape_markdown, show_error
from models.keras_version import VERSION_NOTES
from models.pitfalls import (
    FINE,
    NOTE,
    PITFALLS,
    PROBLEM,
    SURPRISE,
    PitfallResult,
    VariantResult,
    run_pitfall,
)

CHOICE_KEY = "pitfall_choice"
SEED_KEY = "pitfall_seed"
CHART_HEIGHT = 380

# One experiment at a time per server process: 30 learners on 2 cores would otherwise slow
# every experiment down together. A click waits its turn under the spinner.
_RUN_LOCK = threading.Lock()

_STATUS_BANNERS: dict[str, Callable[..., object]] = {
    PROBLEM: st.error,
    FINE: st.success,
    SURPRISE: st.warning,
    NOTE: st.info,
}
_STATUS_ICONS = {
    PROBLEM: ":material/error:",
    FINE: ":material/verified:",
    SURPRISE: ":material/warning:",
    NOTE: ":material/info:",
}
_CHART_TITLES = {
    "weights": "Weights drift per layer (grey dashed = frozen, should stay at 0)",
    "state": "BatchNorm moving statistics drift per layer",
    "effective_kernel": "LoRA layers' effective kernel (kernel + scale · a @ b) drift per layer",
}


def _format_choice(key: str) -> str:
    pitfall = PITFALLS[key]
    return f"{pitfall.number}. {pitfall.title.replace('`', '')}"


def _render_banner(variant: VariantResult) -> None:
    banner = _STATUS_BANNERS.get(variant.status, st.info)
    banner(variant.verdict, icon=_STATUS_ICONS.get(variant.status, ":material/info:"))


def _render_metrics(variant: VariantResult) -> None:
    columns = st.columns(2)
    for index, measurement in enumerate(variant.measurements):
        columns[index % 2].metric(
            measurement.label, measurement.text, help=measurement.help or None
        )


def _render_chart(variant: VariantResult, key: str) -> None:
    figure = drift_lines_figure(
        variant.drift,
        kind=variant.chart_kind,
        layer_order=list(variant.layer_order),
        title=_CHART_TITLES.get(variant.chart_kind),
    )
    figure.update_layout(height=CHART_HEIGHT, legend={"font": {"size": 11}})
    st.plotly_chart(figure, width="stretch", key=key)


def _render_keras_messages(variant: VariantResult) -> None:
    for message in variant.keras_messages:
        st.caption(f"Keras said: {escape_markdown(message)}")


def _render_variant(variant: VariantResult, key: str) -> None:
    st.markdown(f"#### {variant.label}")
    st.caption(variant.description)
    _render_banner(variant)
    _render_metrics(variant)
    _render_chart(variant, key=f"{key}_chart")
    st.caption(f"Bitwise check of the frozen layers: {variant.verification.message()}")
    _render_keras_messages(variant)


def render_pitfall_result(result: PitfallResult) -> None:
    """Shows a pitfall's variants side by side, with verdicts, key numbers and drift charts.

    Args:
        result: The `PitfallResult` of `models.pitfalls.run_pitfall`.

    Example:
    >>> render_pitfall_result(run_pitfall("stale_compile"))
    """
    prefix = f"pitfall_{result.key}_{result.seed}"
    left, right = st.columns(2)
    with left:
        _render_variant(result.wrong, key=f"{prefix}_0")
    with right:
        _render_variant(result.right, key=f"{prefix}_1")
    for index, variant in enumerate(result.extra, start=2):
        st.divider()
        text_column, chart_column = st.columns(2)
        with text_column:
            st.markdown(f"#### {variant.label}")
            st.caption(variant.description)
            _render_banner(variant)
            _render_metrics(variant)
            st.caption(f"Bitwise check of the frozen layers: {variant.verification.message()}")
            _render_keras_messages(variant)
        with chart_column:
            _render_chart(variant, key=f"{prefix}_{index}_chart")
    measured_on = f" on {result.environment.label}" if result.environment else ""
    st.caption(
        f"Same seed ({result.seed}), same data and same starting weights for every run; "
        f"measured{measured_on} in {result.seconds:.1f} s."
    )
    render_version_note(PITFALLS[result.key].version_note)


def render_version_note(key: str) -> None:
    """Shows what is known to differ between Keras versions for a result, with its source.

    Args:
        key: A key of `models.keras_version.VERSION_NOTES` ("" shows nothing).
    """
    note = VERSION_NOTES.get(key)
    if note is not None:
        st.info(f"{note.text} Source: [{note.source}]({note.url}).", icon=":material/history:")


def _run(key: str, seed: int) -> str | None:
    """Runs one experiment into the session's results; returns why it failed, if it did."""
    results: dict = state.setdefault(state.PITFALL_RESULTS, {})
    with st.spinner(f"Running '{_format_choice(key)}' both ways (a few seconds)..."):
        try:
            with _RUN_LOCK:
                results[(key, seed)] = run_pitfall(key, seed=seed)
        except Exception as error:  # no traceback ever reaches a learner
            return f"The experiment could not run: {type(error).__name__}: {error}"
    return None


def render_pitfall_lab() -> None:
    """Renders the pitfall lab section: choice, explanation, Run button and the two runs.

    Works standalone: it keeps its results in the session (`state.PITFALL_RESULTS`).

    Example:
    >>> render_pitfall_lab()  # inside a Streamlit script or tab
    """
    st.markdown(
        "Each experiment trains the bundled pretrained digits model twice from the **same "
        "starting weights, data and seed**: once the wrong way, once the right way. The "
        "verdicts are computed from what really happened to the weights."
    )
    choice_column, seed_column = st.columns([4, 1])
    key = choice_column.selectbox(
        "Pitfall", list(PITFALLS), format_func=_format_choice, key=CHOICE_KEY
    )
    seed = int(seed_column.number_input("Seed", min_value=0, max_value=9999, value=0, key=SEED_KEY))
    pitfall = PITFALLS[key]
    st.markdown(f"### {pitfall.number}. {pitfall.title}")
    st.markdown(pitfall.explanation)
    st.markdown(f"**What to look at:** {pitfall.what_to_look_at}")
    st.markdown(f"**The right way:** {pitfall.fix}")
    if st.button("▶ Run experiment", key="pitfall_run", type="primary"):
        failure = _run(key, seed)
        if failure:
            show_error(failure)
    result = state.get(state.PITFALL_RESULTS, {}).get((key, seed))
    if result is None:
        st.info("Click **Run experiment** to train both ways and compare.")
        return
    try:
        render_pitfall_result(result)
    except Exception as error:  # a drawing problem must not show a traceback either
        show_error(f"The results could not be shown: {type(error).__name__}: {error}")
