"""Diagnostics: update-to-weight ratios and gradient norms, representation change, the advisor."""

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
from components.figures.layout import (
    FROZEN_COLOR,
    TRAINABLE_PALETTE,
    _base_layout,
    _empty_figure,
    _hover_text,
)
from models.advisor import RANKING_COLUMNS
from models.diagnostics import (
    GUIDE_UPDATE_RATIO,
    STATISTICS_COLUMNS,
    TOO_FAST_RATIO,
    TOO_SLOW_RATIO,
)
from models.representation import NOT_MEASURED_YET, REPRESENTATION_COLUMNS

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


_REPRESENTATION_COLOURS = {
    "unchanged": "#1f77b4",
    "changed": "#ff7f0e",
    "undefined": "#999999",
}


def representation_figure(frame: pd.DataFrame | None) -> go.Figure:
    """One bar per block of the base: linear CKA of its output before vs after training.

    1.0 means the block's features are bitwise what they were (blue); lower means they changed
    (orange); a block whose output was not finite or constant on the probe batch has no value
    (grey, drawn at 0 and labelled "n/a"). Blocks are in model order, from the input down.

    Args:
        frame: `RepresentationRecorder.report().frame` (None or empty: "not measured yet").

    Returns:
        A plotly figure (an explanatory empty one when there is nothing to draw).

    Example:
    >>> figure = representation_figure(job.representation().frame)
    """
    title = "How much each block's features changed (linear CKA, 1 = unchanged)"
    frame = _check_frame(
        frame, REPRESENTATION_COLUMNS, "frame", "RepresentationRecorder.report().frame"
    )
    if frame.empty:
        return _empty_figure(title, NOT_MEASURED_YET)
    cka = frame["cka"].to_numpy(dtype=np.float64)
    defined = np.isfinite(cka)
    status = np.where(
        frame["unchanged"].to_numpy(dtype=bool),
        "unchanged",
        np.where(defined, "changed", "undefined"),
    )
    labels = [
        "1 (bitwise)" if state == "unchanged" else ("n/a" if state == "undefined" else f"{v:.4f}")
        for v, state in zip(cka, status, strict=True)
    ]
    names = frame["block_name"].astype(str).tolist()
    figure = go.Figure(
        go.Bar(
            x=np.where(defined, cka, 0.0),
            y=names,
            orientation="h",
            marker_color=[_REPRESENTATION_COLOURS[state] for state in status],
            text=labels,
            textposition="auto",
            customdata=np.stack(
                [frame["block_path"].astype(str), frame["class_name"].astype(str), labels], 1
            ),
            hovertemplate=(
                "<b>%{customdata[0]}</b> (%{customdata[1]})<br>CKA %{customdata[2]}<extra></extra>"
            ),
        )
    )
    lowest = float(np.nanmin(cka)) if defined.any() else 0.0
    figure.update_xaxes(title_text="Linear CKA", range=[min(0.0, lowest), 1.0])
    figure.update_yaxes(autorange="reversed", title_text="Block (input at the top)")
    figure.update_layout(height=max(260, 40 + 28 * len(frame)), showlegend=False)
    return _base_layout(figure, title)


def advisor_ranking_figure(
    ranking: pd.DataFrame | None, chosen_units: Sequence[str] = (), max_units: int = 25
) -> go.Figure:
    """One bar per unit of the base, best-ranked first: its relative gradient ‖g‖ / ‖W‖ (log).

    Units the plan unfreezes are drawn in the trainable colour, the others grey; the hover
    gives the rank, the parameters and the layers.

    Args:
        ranking: `models.advisor.probe_gradients` or `group_blocks` frame (None or empty:
            "not probed yet").
        chosen_units: The plan's units (`AdvisorPlan.units`).
        max_units: Draw at most this many, the best-ranked.

    Returns:
        A plotly figure.

    Example:
    >>> figure = advisor_ranking_figure(advice.ranking, advice.plan.units)
    """
    title = "Relative gradient ‖g‖ / ‖W‖ of the base's units, best-ranked first"
    ranking = _check_frame(ranking, RANKING_COLUMNS, "ranking", "models.advisor's ranking frame")
    if ranking.empty:
        return _empty_figure(title, "Rank the layers to see how hard the task pulls on each.")
    top = ranking.sort_values("rank").head(max_units)
    chosen = set(chosen_units)
    units = top["unit"].astype(str).tolist()
    figure = go.Figure(
        go.Bar(
            x=top["relative_gradient"].to_numpy(dtype=np.float64),
            y=units,
            orientation="h",
            marker_color=[
                TRAINABLE_PALETTE[0] if unit in chosen else FROZEN_COLOR for unit in units
            ],
            customdata=np.stack(
                [top["rank"].astype(int), top["parameters"].astype(int), top["num_layers"]], 1
            ),
            hovertemplate=(
                "<b>%{y}</b> · rank %{customdata[0]}<br>‖g‖ / ‖W‖ %{x:.3g}<br>"
                "%{customdata[1]:,} parameters in %{customdata[2]} layer(s)<extra></extra>"
            ),
        )
    )
    if len(ranking) > len(top):
        title += f"<br><sup>The best {len(top)} of {len(ranking)} units</sup>"
    figure.update_xaxes(type="log", title_text="‖g‖ / ‖W‖ (log); coloured: in the plan")
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=max(260, 40 + 24 * len(top)), showlegend=False)
    return _base_layout(figure, title)
