"""Small pieces the step panels share: counts, durations, totals, downloads, live redraws."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from components import state
from models.download import ProgressCallback, progress_text
from models.tree import ParameterCounts


def format_count(value: int) -> str:
    """A count with thousands separators, as Keras's summary writes it: 14,293."""
    return f"{value:,}"


def render_totals(counts: ParameterCounts) -> None:
    """Shows Keras-summary-style totals: trainable, non-trainable, total, % trainable.

    Args:
        counts: The model's `ParameterCounts`.
    """
    columns = st.columns(4)
    columns[0].metric("Trainable params", format_count(counts.trainable))
    columns[1].metric("Non-trainable params", format_count(counts.non_trainable))
    columns[2].metric("Total params", format_count(counts.total))
    columns[3].metric("Trainable", f"{counts.trainable_fraction:.1%}")


def download_progress() -> ProgressCallback:
    """A callback for `models.download` that shows a progress bar once a download starts.

    Returns:
        `on_progress(bytes_done, bytes_total)`; nothing is drawn when nothing downloads.
    """
    bar: list[Any] = []

    def on_progress(done: int, total: int | None) -> None:
        if not bar:
            bar.append(st.progress(0.0, text="Downloading..."))
        fraction = min(done / total, 1.0) if total else 0.0
        bar[0].progress(fraction, text=f"Downloading: {progress_text(done, total)}")

    return on_progress


def format_seconds(seconds: float | None) -> str:
    """A duration for people: "42 s", "3:07"; "—" when unknown."""
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}" if minutes else f"{rest} s"


def count_progress(what: str) -> Callable[[int, int], None]:
    """A callback that shows a progress bar for counted work, e.g. images read from a zip.

    Args:
        what: The things counted, e.g. "images".

    Returns:
        `on_progress(done, total)`; nothing is drawn until it is first called.

    Example:
    >>> load_image_zip(data, on_progress=count_progress("images"))
    """
    bar: list[Any] = []

    def on_progress(done: int, total: int) -> None:
        text = f"Reading {what}: {format_count(done)} of {format_count(total)}"
        if not bar:
            bar.append(st.progress(0.0, text=text))
        bar[0].progress(min(done / total, 1.0) if total else 0.0, text=text)

    return on_progress


def live_or_static(draw: Callable[[], None], live: bool, every: float) -> None:
    """Draws once, or, while a run trains, as a fragment that redraws itself every `every` s.

    Args:
        draw: What to draw (it reads the run anew each time).
        live: Whether a run trains now.
        every: Seconds between redraws while live.
    """
    if live:
        st.fragment(run_every=every)(draw)()
    else:
        draw()


def rerun_when_ended(run_id: int, done: bool) -> None:
    """From a live fragment: one full rerun of the page when the run has just ended.

    Args:
        run_id: The run shown.
        done: Whether it has ended.
    """
    if done and state.get(state.ENDED_RUN_SHOWN) != run_id:
        state.put(state.ENDED_RUN_SHOWN, run_id)
        st.rerun()
