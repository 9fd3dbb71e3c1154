"""The look every FreezeLab figure shares: colours, fonts, the title layout and the empty figure."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go

FROZEN_COLOR = "#9e9e9e"
FROZEN_DASH = "dash"
TRAINABLE_COLOR = "#636efa"
TRAINABLE_PALETTE = (
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
)
VALIDATION_COLOR = "#ef553b"
FROZEN_MARK = "❄ "
GAP_COLOR = "#e4e4e4"  # heatmap cells with no measurement

_FONT_SIZE = 15
_NBSP = "\u00a0"


def _hover_text(text: str) -> str:
    """Makes an untrusted layer name safe to place inside a plotly hover template."""
    return html.escape(str(text), quote=False).replace("%{", "%\u200b{")


def _as_floats(values: Sequence[float]) -> list[float]:
    return [float(value) if value is not None else math.nan for value in values]


def _base_layout(figure: go.Figure, title: str) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        font={"size": _FONT_SIZE},
        hoverlabel={"font_size": _FONT_SIZE},
        # Room for the title and each subtitle line under it.
        margin={"l": 20, "r": 20, "t": 60 + 20 * max(1, title.count("<br>")), "b": 60},
    )
    return figure


def _empty_figure(title: str, message: str) -> go.Figure:
    """A figure with no data that says why, instead of empty axes."""
    figure = go.Figure()
    figure.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": _FONT_SIZE + 1},
    )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(height=260)
    return _base_layout(figure, title)
