"""Drift figures: each layer's relative change as lines, a heatmap and final bars, from plain data.

A layer frozen at every recorded step should stay exactly at zero drift and is drawn in grey; a
layer that trained in any recorded fit is drawn in colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from components.figures.drift_frame import (
    _KIND_WORDS,
    _RELATIVE_AXIS_TITLE,
    STATE_KIND,
    WEIGHTS_KIND,
    _check_drift,
    _check_kind,
    _check_layer_order,
    _display_paths,
    _frozen_by_path,
    _ordered_paths,
)
from components.figures.layout import (
    _NBSP,
    FROZEN_COLOR,
    FROZEN_DASH,
    FROZEN_MARK,
    GAP_COLOR,
    TRAINABLE_COLOR,
    TRAINABLE_PALETTE,
    _base_layout,
    _empty_figure,
    _hover_text,
)
from models.drift import EFFECTIVE_KERNEL_KIND
from models.validation import check_whole_number

_STATE_TITLE = (
    "Non-trainable state drift: BatchNorm moving mean/variance"
    "<br><sup>Moves when the BN layer trains, stays at zero when frozen</sup>"
)


# ---------------------------------------------------------------------------------- helpers
def _kind_rows(drift: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one kind, one per layer and step (the last wins if a step repeats)."""
    rows = drift[drift["kind"] == kind]
    if rows.empty:
        return rows
    return rows.drop_duplicates(subset=["layer_path", "step"], keep="last").sort_values(
        "step", kind="stable"
    )


def _empty_message(drift: pd.DataFrame, kind: str) -> str:
    if drift.empty:
        return "No drift recorded yet: train the model to see how far each layer moves."
    if kind == STATE_KIND:
        return "No non-trainable state in this model (no BatchNormalization moving statistics)."
    if kind == EFFECTIVE_KERNEL_KIND:
        return "No LoRA layer in this run: add an adapter in step 2 to see its effective kernel."
    return "No trainable-type weights in this model."


def _evenly_spaced(items: list[str], count: int) -> list[str]:
    """`count` items spread evenly over `items`, keeping the first and the last."""
    if count >= len(items):
        return items
    if count == 1:
        return [items[-1]]
    indices = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[index] for index in dict.fromkeys(indices.tolist())]


def _step_epochs(rows: pd.DataFrame) -> dict[int, int]:
    """Maps each recorded step to the number of epochs finished at that step."""
    epochs = rows.groupby("step")["epoch"].max()
    return {int(step): int(epoch) for step, epoch in epochs.items()}


# ------------------------------------------------------------------------------ drift lines
def drift_lines_figure(
    drift: pd.DataFrame | None,
    kind: str = WEIGHTS_KIND,
    layer_order: Sequence[str] | None = None,
    max_layers: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Plots each layer's relative change over training steps, frozen layers dashed grey.

    A frozen layer's line should lie exactly on zero (a flat dashed grey line); a trainable
    layer's line is coloured and rises as it learns. Lines are grouped in the legend as
    "Frozen" and "Trainable"; hovering a point shows the layer path, step, epoch and the exact
    values.

    Args:
        drift: The drift frame of `DriftRecorder.frame()` (None or empty for "not trained yet").
        kind: "weights" (kernels, biases, gamma, beta), "state" (e.g. BatchNorm moving
            statistics) or "effective_kernel" (a LoRA layer's `kernel + (alpha / rank) * a @ b`).
        layer_order: Layer paths in model order (e.g. `LayerTree(model).paths()`); layers are
            drawn in this order. None keeps the frame's order (which is model order).
        max_layers: Draw at most this many layers, spread evenly over the model order (first
            and last kept), so very deep models stay readable. None draws every layer.
        title: The figure's title; a default names the kind.

    Returns:
        A `plotly.graph_objects.Figure` with one line per layer holding that kind, or a figure
        with an explanatory annotation when there is nothing to draw.

    Example:
    >>> figure = drift_lines_figure(recorder.frame(), layer_order=tree.paths())
    >>> [trace.name for trace in figure.data]
    ['feature_extractor/conv_1', 'feature_extractor/bn', 'middle', 'out']
    """
    _check_kind(kind)
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    max_layers = check_whole_number("max_layers", max_layers, 1, allow_none=True)
    if title is None:
        title = f"Drift of each layer's {_KIND_WORDS[kind]} during training"
    rows = _kind_rows(drift, kind)
    if rows.empty:
        return _empty_figure(title, _empty_message(drift, kind))

    paths = _ordered_paths(rows["layer_path"].tolist(), order)
    num_layers = len(paths)
    if max_layers is not None and num_layers > max_layers:
        paths = _evenly_spaced(paths, max_layers)
        title += f"<br><sup>Showing {len(paths)} of {num_layers} layers, evenly spaced</sup>"
    frozen = _frozen_by_path(rows)
    names = _display_paths(paths)
    groups = {path: frame for path, frame in rows.groupby("layer_path", sort=False)}
    num_points = rows["step"].nunique()
    mode = "lines+markers" if num_points <= 30 else "lines"

    figure = go.Figure()
    shown_group_titles: set[str] = set()
    color_index = 0
    for path in paths:
        layer = groups[path]
        is_frozen = frozen[path]
        group = "frozen" if is_frozen else "trainable"
        if is_frozen:
            line = {"color": FROZEN_COLOR, "dash": FROZEN_DASH, "width": 2}
        else:
            color = TRAINABLE_PALETTE[color_index % len(TRAINABLE_PALETTE)]
            color_index += 1
            line = {"color": color, "width": 2.5}
        custom = np.column_stack(
            [
                layer["epoch"].to_numpy(dtype=np.int64),
                layer["max_abs_change"].to_numpy(dtype=np.float64),
                np.where(layer["unchanged"].to_numpy(dtype=bool), "yes", "no"),
            ]
        )
        status = "frozen" if is_frozen else "trainable"
        class_name = _hover_text(layer["class_name"].iloc[0])
        figure.add_trace(
            go.Scatter(
                x=layer["step"].to_numpy(),
                y=layer["relative_change"].to_numpy(dtype=np.float64),
                customdata=custom,
                mode=mode,
                name=names[path],
                line=line,
                marker={"size": 6, "color": line["color"]},
                legendgroup=group,
                legendgrouptitle_text=(
                    None
                    if group in shown_group_titles
                    else ("Frozen (should stay at 0)" if is_frozen else "Trainable")
                ),
                hovertemplate=(
                    f"<b>{_hover_text(path)}</b> ({status}, {class_name})"
                    "<br>Step %{x} (epoch %{customdata[0]})"
                    "<br>Relative change %{y:.4g}"
                    "<br>Max abs change %{customdata[1]:.4g}"
                    "<br>Bitwise unchanged: %{customdata[2]}"
                    "<extra></extra>"
                ),
            )
        )
        shown_group_titles.add(group)

    figure.update_xaxes(title_text="Step (batches seen)", rangemode="tozero")
    figure.update_yaxes(title_text=_RELATIVE_AXIS_TITLE[kind], rangemode="tozero")
    figure.update_layout(
        hovermode="closest",
        legend={"groupclick": "toggleitem", "tracegroupgap": 12},
        height=520,
    )
    return _base_layout(figure, title)


def state_drift_figure(
    drift: pd.DataFrame | None,
    layer_order: Sequence[str] | None = None,
    max_layers: int | None = None,
) -> go.Figure:
    """Plots the drift of non-trainable state (BatchNorm moving mean/variance) per layer.

    These variables are never touched by the optimizer, yet a trainable BatchNormalization
    layer updates them on every training batch; a frozen one runs in inference mode and keeps
    them bitwise equal. This panel shows that directly.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        layer_order: Layer paths in model order; None keeps the frame's order.
        max_layers: Draw at most this many layers (spread evenly); None draws them all.

    Returns:
        A `plotly.graph_objects.Figure` with one line per layer that holds state, or a figure
        saying the model has no non-trainable state.

    Example:
    >>> figure = state_drift_figure(recorder.frame(), layer_order=tree.paths())
    >>> {trace.name for trace in figure.data}
    {'feature_extractor/bn'}
    """
    return drift_lines_figure(
        drift, kind=STATE_KIND, layer_order=layer_order, max_layers=max_layers, title=_STATE_TITLE
    )


# ---------------------------------------------------------------------------------- heatmap
def drift_heatmap_figure(
    drift: pd.DataFrame | None,
    kind: str = WEIGHTS_KIND,
    layer_order: Sequence[str] | None = None,
    depths: Mapping[str, int] | None = None,
) -> go.Figure:
    """Shows relative change as a heatmap: layers top to bottom in model order, steps across.

    Row labels are indented by nesting depth (with non-breaking spaces) and frozen layers are
    marked "❄ ". Hovering a cell shows the layer path, step, epoch and exact value.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        kind: "weights", "state" or "effective_kernel" (LoRA layers).
        layer_order: Layer paths in model order; None keeps the frame's order.
        depths: Nesting depth per path (`{node.path: node.depth for node in tree.nodes()}`);
            a path missing from it gets its number of "/" separators, which is the same thing.

    Returns:
        A `plotly.graph_objects.Figure` holding one `Heatmap` whose `z` has shape
        (number of layers with that kind, number of recorded steps), row 0 the first layer;
        or a figure with an explanatory annotation when there is nothing to draw.

    Example:
    >>> figure = drift_heatmap_figure(recorder.frame(), layer_order=tree.paths(),
    ...     depths={node.path: node.depth for node in tree.nodes()})
    >>> figure.data[0].z.shape
    (4, 3)
    """
    _check_kind(kind)
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    if depths is not None and not isinstance(depths, Mapping):
        raise TypeError(
            f"`depths` must be a dict of layer path to depth, received {type(depths).__name__}."
        )
    title = f"Drift heatmap of each layer's {_KIND_WORDS[kind]}"
    rows = _kind_rows(drift, kind)
    if rows.empty:
        return _empty_figure(title, _empty_message(drift, kind))

    paths = _ordered_paths(rows["layer_path"].tolist(), order)
    steps = sorted(int(step) for step in rows["step"].unique())
    matrix = (
        rows.pivot(index="layer_path", columns="step", values="relative_change")
        .reindex(index=paths, columns=steps)
        .to_numpy(dtype=np.float64)
    )
    frozen = _frozen_by_path(rows)
    gaps = bool(np.isnan(matrix).any())
    if any(frozen.values()) and gaps:
        # Two short lines: the heatmap sits in a half-width column and plotly never wraps.
        title += (
            f"<br><sup>{FROZEN_MARK}Frozen: measured at the start and at each epoch end</sup>"
            "<br><sup>(grey between: not measured), proven bitwise unchanged</sup>"
        )
    names = dict(zip(rows["layer_path"], rows["layer_name"], strict=True))
    depth_of = {path: int((depths or {}).get(path, path.count("/"))) for path in paths}
    shallowest = min(depth_of.values())
    labels = [
        _NBSP * 3 * (depth_of[path] - shallowest)
        + (FROZEN_MARK if frozen[path] else "")
        + str(names[path])
        for path in paths
    ]
    step_epoch = _step_epochs(rows)
    epochs = np.tile(np.array([step_epoch[step] for step in steps]), (len(paths), 1))
    hover_paths = [[_hover_text(path)] * len(steps) for path in paths]
    finite = matrix[np.isfinite(matrix)]
    top = float(finite.max()) if finite.size else 0.0

    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=steps,
            y=list(range(len(paths))),
            text=hover_paths,
            customdata=epochs,
            colorscale="Viridis",
            zmin=0.0,
            zmax=top if top > 0 else 1.0,
            hoverongaps=False,
            colorbar={"title": {"text": "Relative<br>change"}},
            hovertemplate=(
                "<b>%{text}</b><br>Step %{x} (epoch %{customdata})"
                "<br>Relative change %{z:.4g}<extra></extra>"
            ),
        )
    )
    figure.update_yaxes(
        tickmode="array",
        tickvals=list(range(len(paths))),
        ticktext=labels,
        autorange="reversed",
        title_text="Layer (model order, ❄ = frozen)",
        showgrid=False,
    )
    figure.update_xaxes(title_text="Step (batches seen)", showgrid=False)
    figure.update_layout(height=int(min(max(320, 24 * len(paths) + 160), 6000)))
    if gaps:  # cells not measured show the plot's background: make it read as "no data"
        figure.update_layout(plot_bgcolor=GAP_COLOR)
    return _base_layout(figure, title)


# ------------------------------------------------------------------------------- final bars
def final_drift_bar_figure(
    drift: pd.DataFrame | None,
    kind: str = WEIGHTS_KIND,
    layer_order: Sequence[str] | None = None,
) -> go.Figure:
    """Shows each layer's relative change at the last recorded step as horizontal bars.

    Bars run top to bottom in model order; frozen layers are grey (and should have no bar at
    all), trainable layers in the primary colour.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        kind: "weights", "state" or "effective_kernel" (LoRA layers).
        layer_order: Layer paths in model order; None keeps the frame's order.

    Returns:
        A `plotly.graph_objects.Figure` with up to two `Bar` traces, "Frozen" and "Trainable",
        whose categories follow model order; or an explanatory empty figure.

    Example:
    >>> figure = final_drift_bar_figure(recorder.frame(), layer_order=tree.paths())
    >>> [trace.name for trace in figure.data]
    ['Frozen', 'Trainable']
    """
    _check_kind(kind)
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    title = f"Final drift of each layer's {_KIND_WORDS[kind]}"
    rows = _kind_rows(drift, kind)
    if rows.empty:
        return _empty_figure(title, _empty_message(drift, kind))

    paths = _ordered_paths(rows["layer_path"].tolist(), order)
    frozen = _frozen_by_path(rows)
    final = rows.groupby("layer_path", sort=False).tail(1).set_index("layer_path").loc[paths]
    last_step = int(rows["step"].max())
    names = _display_paths(paths)
    title += f"<br><sup>At step {last_step} (epoch {int(final['epoch'].max())})</sup>"

    figure = go.Figure()
    for is_frozen, label, color in (
        (True, "Frozen", FROZEN_COLOR),
        (False, "Trainable", TRAINABLE_COLOR),
    ):
        chosen = [path for path in paths if frozen[path] is is_frozen]
        if not chosen:
            continue
        part = final.loc[chosen]
        figure.add_trace(
            go.Bar(
                x=part["relative_change"].to_numpy(dtype=np.float64),
                y=[names[path] for path in chosen],
                orientation="h",
                name=label,
                marker={"color": color},
                customdata=np.column_stack(
                    [
                        [_hover_text(path) for path in chosen],
                        part["max_abs_change"].to_numpy(dtype=np.float64),
                        part["step"].to_numpy(dtype=np.int64),
                        part["epoch"].to_numpy(dtype=np.int64),
                    ]
                ),
                hovertemplate=(
                    "<b>%{customdata[0]}</b> (" + label.lower() + ")"
                    "<br>Relative change %{x:.4g}"
                    "<br>Max abs change %{customdata[1]:.4g}"
                    "<br>Step %{customdata[2]} (epoch %{customdata[3]})"
                    "<extra></extra>"
                ),
            )
        )
    figure.update_yaxes(
        categoryorder="array",
        categoryarray=[names[path] for path in paths],
        autorange="reversed",
        title_text="Layer (model order)",
    )
    figure.update_xaxes(title_text=_RELATIVE_AXIS_TITLE[kind], rangemode="tozero")
    figure.update_layout(
        barmode="overlay",
        height=int(min(max(320, 24 * len(paths) + 160), 6000)),
    )
    return _base_layout(figure, title)
