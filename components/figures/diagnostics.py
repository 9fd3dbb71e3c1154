"""Gradient and update diagnostics over training: update-to-weight ratios and gradient norms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from components.figures.drift_frame import (
    _check_frame,
    _check_layer_order,
    _display_paths,
    _ordered_paths,
)
from components.figures.layout import TRAINABLE_PALETTE, _base_layout, _empty_figure, _hover_text
from models.diagnostics import (
    GUIDE_UPDATE_RATIO,
    STATISTICS_COLUMNS,
    TOO_FAST_RATIO,
    TOO_SLOW_RATIO,
)

_VALUES = {
    "update_ratio": ("Update-to-weight ratio ‖ΔW‖ / ‖W‖ (log)", "update ratio"),
    "gradient_norm": ("Gradient norm ‖g‖ (log)", "gradient norm"),
    "relative_gradient": ("Relative gradient ‖g‖ / ‖W‖ (log)", "relative gradient"),
}


def step_statistics_figure(
    frame: pd.DataFrame | None,
    value: str = "update_ratio",
    layer_order: Sequence[str] | None = None,
    max_layers: int | None = 20,
) -> go.Figure:
    """One line per training layer over steps: its update ratio or gradient norm (log scale).

    For the update ratio a green band marks the healthy range around the rule-of-thumb 1e-3
    (from `TOO_SLOW_RATIO` to `TOO_FAST_RATIO`) and a dashed line the guide itself.

    Args:
        frame: `StepStatisticsRecorder.frame()` (None or empty: "not trained yet").
        value: "update_ratio", "gradient_norm" or "relative_gradient".
        layer_order: Layer paths in model order; None keeps the frame's order.
        max_layers: Draw at most this many layers, evenly spaced in model order; None for all.

    Returns:
        A plotly figure (an explanatory empty one when there is nothing to draw).

    Example:
    >>> figure = step_statistics_figure(job.step_statistics_frame(), "update_ratio")
    """
    if value not in _VALUES:
        raise ValueError(f"`value` must be one of {list(_VALUES)}, received {value!r}.")
    frame = _check_frame(frame, STATISTICS_COLUMNS, "frame", "StepStatisticsRecorder.frame()")
    axis_title, words = _VALUES[value]
    title = f"{words.capitalize()} of each layer that trains, per step"
    rows = frame[frame[value] > 0] if not frame.empty else frame
    if rows.empty:
        return _empty_figure(
            title, "No gradient or update recorded yet: train with a layer that trains."
        )
    paths = _ordered_paths(rows["layer_path"].tolist(), _check_layer_order(layer_order))
    if max_layers is not None and len(paths) > max_layers:
        positions = np.linspace(0, len(paths) - 1, max_layers).round().astype(int)
        kept = [paths[i] for i in dict.fromkeys(positions.tolist())]
        title += f"<br><sup>Showing {len(kept)} of {len(paths)} layers, evenly spaced</sup>"
        paths = kept
    names = _display_paths(paths)
    figure = go.Figure()
    if value == "update_ratio":
        figure.add_hrect(
            y0=TOO_SLOW_RATIO, y1=TOO_FAST_RATIO, fillcolor="#2ca02c", opacity=0.08, line_width=0
        )
        figure.add_hline(
            y=GUIDE_UPDATE_RATIO, line_dash="dash", line_color="#2ca02c",
            annotation_text="1e-3 guide", annotation_position="top left",
        )  # fmt: skip
    groups = dict(tuple(rows.groupby("layer_path", sort=False)))
    for index, path in enumerate(paths):
        layer = groups[path].sort_values("step")
        figure.add_trace(
            go.Scatter(
                x=layer["step"].to_numpy(),
                y=layer[value].to_numpy(dtype=np.float64),
                mode="lines+markers" if len(layer) <= 30 else "lines",
                name=names[path],
                line={"color": TRAINABLE_PALETTE[index % len(TRAINABLE_PALETTE)], "width": 2},
                hovertemplate=(
                    f"<b>{_hover_text(path)}</b><br>Step %{{x}}<br>{words} %{{y:.3g}}"
                    "<extra></extra>"
                ),
            )
        )
    figure.update_yaxes(type="log", title_text=axis_title)
    figure.update_xaxes(title_text="Step (batches seen)")
    figure.update_layout(height=460, hovermode="closest")
    return _base_layout(figure, title)
