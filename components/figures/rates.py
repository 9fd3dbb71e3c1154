"""Per-layer learning rates: the rate each layer gets, and the graded motion it produced."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.figures.drift_frame import (
    _check_drift,
    _check_layer_order,
    _display_paths,
    _ordered_paths,
)
from components.figures.layout import (
    FROZEN_COLOR,
    TRAINABLE_COLOR,
    _base_layout,
    _empty_figure,
    _hover_text,
)
from models.tree import WEIGHTS_KIND

RATES_COLUMNS = ("path", "multiplier", "learning_rate", "trainable")
"""The columns of `models.layer_rates.layer_rates_frame`, which `layer_rates_figure` draws."""


def layer_rates_figure(frame: pd.DataFrame) -> go.Figure:
    """Bars of each layer's learning rate (log scale when none is 0), frozen layers in grey.

    Args:
        frame: `models.layer_rates.layer_rates_frame`'s table (columns `RATES_COLUMNS`).

    Returns:
        A plotly figure, one bar per layer with weights, in model order.

    Example:
    >>> figure = layer_rates_figure(layer_rates_frame(LayerRates(decay_factor=0.5), tree, 1e-3))
    """
    if not isinstance(frame, pd.DataFrame) or not set(RATES_COLUMNS) <= set(frame.columns):
        raise ValueError(
            f"`frame` must be a DataFrame with the columns {list(RATES_COLUMNS)} (as "
            f"`layer_rates_frame` returns), received {type(frame).__name__}."
        )
    title = "Learning rate of each layer<br><sup>grey: frozen, it will not move</sup>"
    if frame.empty:
        return _empty_figure(title, "No layer with weights.")
    names = _display_paths(frame["path"].tolist())
    figure = go.Figure(
        go.Bar(
            x=[names[path] for path in frame["path"]],
            y=frame["learning_rate"].to_numpy(dtype=np.float64),
            marker_color=[TRAINABLE_COLOR if t else FROZEN_COLOR for t in frame["trainable"]],
            customdata=np.column_stack(
                [[_hover_text(path) for path in frame["path"]], frame["multiplier"]]
            ),
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>learning rate %{y:.3g}"
                "<br>multiplier %{customdata[1]:.4g}<extra></extra>"
            ),
        )
    )
    positive = bool((frame["learning_rate"] > 0).all())
    figure.update_yaxes(type="log" if positive else "linear", title_text="Learning rate")
    figure.update_xaxes(title_text="Layer (model order)")
    figure.update_layout(height=380, showlegend=False)
    return _base_layout(figure, title)


def graded_motion_figure(
    drift: pd.DataFrame | None,
    multipliers: Mapping[str, float],
    layer_order: Sequence[str] | None = None,
) -> go.Figure:
    """Each layer's final weight drift next to its learning-rate multiplier: the graded motion.

    With layer-wise decay the multipliers fall block by block from the top of the base down,
    and so, roughly, does how far each layer moved.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        multipliers: The run's multiplier per layer path (`models.layer_rates.layer_multipliers`
            at its start); layers it does not name are left out.
        layer_order: Layer paths in model order; None keeps the frame's order.

    Returns:
        A figure with the final relative change as bars (left axis) and the multiplier as a
        line with markers (right axis), one category per layer in model order.

    Example:
    >>> figure = graded_motion_figure(run.drift, run.layer_multipliers, run.layer_order)
    >>> [trace.name for trace in figure.data]
    ['Final drift', 'Multiplier']
    """
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    title = (
        "Graded motion: final weight drift and learning-rate multiplier per layer"
        "<br><sup>bars: ‖W_end − W_0‖ / ‖W_0‖ (left); line: multiplier (right)</sup>"
    )
    rows = drift[(drift["kind"] == WEIGHTS_KIND) & drift["layer_path"].isin(list(multipliers))]
    if rows.empty:
        return _empty_figure(title, "No drift recorded for the layers with a learning rate.")
    final = rows.sort_values("step", kind="stable").groupby("layer_path", sort=False).tail(1)
    final = final.set_index("layer_path")
    paths = _ordered_paths(final.index.tolist(), order)
    names = _display_paths(paths)
    labels = [names[path] for path in paths]
    frozen = [bool(final.at[path, "frozen"]) for path in paths]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Bar(
            x=labels,
            y=[float(final.at[path, "relative_change"]) for path in paths],
            name="Final drift",
            marker_color=[FROZEN_COLOR if f else TRAINABLE_COLOR for f in frozen],
            customdata=[_hover_text(path) for path in paths],
            hovertemplate="<b>%{customdata}</b><br>relative change %{y:.4g}<extra></extra>",
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=labels,
            y=[float(multipliers[path]) for path in paths],
            name="Multiplier",
            mode="lines+markers",
            line={"color": "#ef553b"},
            hovertemplate="multiplier %{y:.4g}<extra></extra>",
        ),
        secondary_y=True,
    )
    figure.update_yaxes(title_text="Relative change", rangemode="tozero", secondary_y=False)
    figure.update_yaxes(title_text="Multiplier", rangemode="tozero", secondary_y=True)
    figure.update_xaxes(title_text="Layer (model order)")
    figure.update_layout(height=420)
    return _base_layout(figure, title)
