"""Build the plotly figures and tables of FreezeLab's drift and training views from plain data.

Every builder takes plain pandas/Python data (the drift frame of `DriftRecorder.frame()`, the
history dicts of `TrainingProgress`) and returns a `plotly.graph_objects.Figure` (or a
DataFrame); nothing here calls Streamlit, so the same figures work in a notebook.

A layer counts as *frozen* here when it was effectively frozen at every recorded step (the
`frozen` column is True on all its rows): such a layer should stay exactly at zero drift, and it
is drawn in grey. A layer that trained in any recorded fit is drawn in colour.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

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

WEIGHTS_KIND = "weights"
STATE_KIND = "state"
KINDS = (WEIGHTS_KIND, STATE_KIND)
REQUIRED_DRIFT_COLUMNS = (
    "step",
    "epoch",
    "layer_path",
    "layer_name",
    "class_name",
    "kind",
    "relative_change",
    "max_abs_change",
    "unchanged",
    "frozen",
    "num_params",
)
TABLE_COLUMNS = (
    "Layer path",
    "Class",
    "Frozen",
    "Weights relative change",
    "Weights max abs change",
    "State relative change",
    "State max abs change",
    "Unchanged (weights and state)",
    "Parameters",
)

_FONT_SIZE = 15
_NBSP = "\u00a0"
_RELATIVE_AXIS_TITLE = {
    WEIGHTS_KIND: "Relative change ‖W<sub>t</sub> − W<sub>0</sub>‖ / ‖W<sub>0</sub>‖",
    STATE_KIND: "Relative change of the moving statistics",
}
_KIND_WORDS = {WEIGHTS_KIND: "weights", STATE_KIND: "non-trainable state"}
_STATE_TITLE = (
    "Non-trainable state drift: BatchNorm moving mean/variance"
    "<br><sup>Moves when the BN layer trains, stays at zero when frozen</sup>"
)


# ----------------------------------------------------------------------------- input checks
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, received {kind!r}.")


def _check_drift(drift: pd.DataFrame | None) -> pd.DataFrame:
    """Returns `drift` (an empty frame for None) after checking it is a drift frame."""
    if drift is None:
        return pd.DataFrame(columns=list(REQUIRED_DRIFT_COLUMNS))
    if not isinstance(drift, pd.DataFrame):
        raise TypeError(
            "`drift` must be a pandas DataFrame as returned by `DriftRecorder.frame()`, "
            f"received {type(drift).__name__}."
        )
    missing = [column for column in REQUIRED_DRIFT_COLUMNS if column not in drift.columns]
    if missing and not drift.empty:
        raise ValueError(
            f"The drift frame lacks the columns {missing}; expected the columns of "
            f"`DriftRecorder.frame()`: {list(REQUIRED_DRIFT_COLUMNS)}."
        )
    if missing:
        return pd.DataFrame(columns=list(REQUIRED_DRIFT_COLUMNS))
    return drift


def _check_layer_order(layer_order: Sequence[str] | None) -> list[str] | None:
    if layer_order is None:
        return None
    if isinstance(layer_order, str) or not all(isinstance(p, str) for p in layer_order):
        raise TypeError(
            "`layer_order` must be a list of layer paths (strings) in model order, e.g. "
            f"`LayerTree(model).paths()`, received {layer_order!r:.200}."
        )
    return list(layer_order)


# ---------------------------------------------------------------------------------- helpers
def _ordered_paths(paths: Sequence[str], layer_order: list[str] | None) -> list[str]:
    """Orders `paths` as `layer_order` does; paths it does not name follow in their own order."""
    unique = list(dict.fromkeys(paths))
    if layer_order is None:
        return unique
    present = set(unique)
    ordered = [path for path in dict.fromkeys(layer_order) if path in present]
    listed = set(ordered)
    return ordered + [path for path in unique if path not in listed]


def _frozen_by_path(rows: pd.DataFrame) -> dict[str, bool]:
    """Maps each layer path to whether it was frozen at every recorded step."""
    if rows.empty:
        return {}
    frozen = rows.groupby("layer_path", sort=False)["frozen"].all()
    return {str(path): bool(value) for path, value in frozen.items()}


def _display_paths(paths: Sequence[str]) -> dict[str, str]:
    """Maps paths to shorter display names: the top model's name is dropped when all share it."""
    roots = {path.split("/", 1)[0] for path in paths}
    if len(roots) == 1 and all("/" in path for path in paths):
        return {path: path.split("/", 1)[1] for path in paths}
    return {path: path for path in paths}


def _hover_text(text: str) -> str:
    """Makes an untrusted layer name safe to place inside a plotly hover template."""
    return html.escape(str(text), quote=False).replace("%{", "%\u200b{")


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
    return "No trainable-type weights in this model."


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
        kind: "weights" (kernels, biases, gamma, beta) or "state" (e.g. BatchNorm moving
            statistics).
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
    if max_layers is not None and (
        isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1
    ):
        raise ValueError(f"`max_layers` must be None or a whole number >= 1, got {max_layers!r}.")
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
        kind: "weights" or "state".
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
        kind: "weights" or "state".
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


# --------------------------------------------------------------------------- training curves
def _accuracy_key(history: Mapping[str, Sequence[float]]) -> str | None:
    if "accuracy" in history:
        return "accuracy"
    candidates = [key for key in history if "acc" in key and not key.startswith("val_")]
    return candidates[0] if candidates else None


def _as_floats(values: Sequence[float]) -> list[float]:
    return [float(value) if value is not None else math.nan for value in values]


def training_curves_figure(
    history: Mapping[str, Sequence[float]] | None,
    batch_history: Mapping[str, Sequence[float]] | None = None,
    batches_per_epoch: int | None = None,
) -> go.Figure:
    """Plots loss (left) and accuracy (right) per epoch, training and validation.

    The x axis is the epoch, starting at 1 (the value after that epoch). When `batch_history`
    is given, the per-batch training values are drawn faintly behind: at fractional epochs
    (batches seen / batches per epoch) when `batches_per_epoch` is known, so the faint curve
    ends an epoch exactly at that epoch's point; otherwise against a separate "Batches seen"
    axis at the top, as long as its steps increase. Keras reports, after each batch, the mean
    of the metric over the epoch so far, which is what the faint curve shows.

    Args:
        history: Per-epoch metrics, e.g. `TrainingProgress.history`:
            `{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}`.
        batch_history: Optional per-batch metrics, `TrainingProgress.batch_history`:
            `{"step": [...], "loss": [...], "accuracy": [...]}`.
        batches_per_epoch: Batches in one epoch (`TrainingProgress.batches_per_epoch`).

    Returns:
        A `plotly.graph_objects.Figure` with two subplots side by side, or one with an
        explanatory annotation when nothing has been recorded yet.

    Example:
    >>> progress = job.progress()
    >>> figure = training_curves_figure(
    ...     progress.history, progress.batch_history, progress.batches_per_epoch)
    >>> sorted({trace.name for trace in figure.data})[:2]
    ['Training accuracy', 'Training loss']
    """
    title = "Training curves"
    for name, value in (("history", history), ("batch_history", batch_history)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(
                f"`{name}` must be a dict of metric name to list of values, received "
                f"{type(value).__name__}."
            )
    if batches_per_epoch is not None and (
        isinstance(batches_per_epoch, bool)
        or not isinstance(batches_per_epoch, int | np.integer)
        or batches_per_epoch < 1
    ):
        raise ValueError(
            f"`batches_per_epoch` must be None or a whole number >= 1, got {batches_per_epoch!r}."
        )
    history = dict(history or {})
    batch_history = dict(batch_history or {})
    has_epochs = any(len(values) for values in history.values())
    batch_steps = _as_floats(batch_history.get("step", []))
    has_batches = bool(batch_steps) and any(
        len(batch_history.get(key, [])) for key in ("loss", "accuracy")
    )
    if not has_epochs and not has_batches:
        return _empty_figure(
            title, "No training history yet: start training to see loss and accuracy."
        )

    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1
    )
    accuracy_key = _accuracy_key(history) or _accuracy_key(batch_history)
    metrics = (("loss", "loss", 1), (accuracy_key, "accuracy", 2))

    # Faint per-batch values first, so the epoch curves are drawn on top.
    if has_batches:
        if batches_per_epoch:
            batch_x = [step / batches_per_epoch for step in batch_steps]
            x_label = "Epoch %{x:.3f}"
            axis = None
        elif all(b > a for a, b in itertools.pairwise(batch_steps)):
            batch_x = batch_steps
            x_label = "Batches seen %{x}"
            axis = "top"
        else:
            batch_x, axis = None, None
        if batch_x is not None:
            for key, word, column in metrics:
                values = batch_history.get(key, []) if key else []
                if not len(values):
                    continue
                count = min(len(values), len(batch_x))
                trace = go.Scatter(
                    x=batch_x[:count],
                    y=_as_floats(values[:count]),
                    mode="lines",
                    name=f"Training {word} per batch",
                    legendgroup="batch",
                    line={"color": TRAINABLE_COLOR, "width": 1},
                    opacity=0.35,
                    hovertemplate=(
                        f"{x_label}<br>Training {word} (epoch mean so far) %{{y:.4g}}"
                        "<extra></extra>"
                    ),
                )
                if axis == "top":
                    # A "Batches seen" axis along the top of this subplot, over its epoch axis.
                    suffix = "" if column == 1 else str(column)
                    overlay = str(column + 2)
                    trace.update(xaxis=f"x{overlay}", yaxis=f"y{suffix}")
                    figure.add_trace(trace)
                    figure.layout[f"xaxis{overlay}"] = {
                        "overlaying": f"x{suffix}",
                        "anchor": f"y{suffix}",
                        "side": "top",
                        "title": {"text": "Batches seen"},
                        "showgrid": False,
                    }
                else:
                    figure.add_trace(trace, row=1, col=column)

    num_epochs = 0
    for key, word, column in metrics:
        for prefix, label, color, dash in (
            ("", "Training", TRAINABLE_COLOR, "solid"),
            ("val_", "Validation", VALIDATION_COLOR, "dash"),
        ):
            values = history.get(prefix + key, []) if key else []
            if not len(values):
                continue
            epochs = list(range(1, len(values) + 1))
            num_epochs = max(num_epochs, len(values))
            figure.add_trace(
                go.Scatter(
                    x=epochs,
                    y=_as_floats(values),
                    mode="lines+markers" if len(values) <= 60 else "lines",
                    name=f"{label} {word}",
                    legendgroup=label.lower(),
                    line={"color": color, "width": 2.5, "dash": dash},
                    marker={"size": 8, "color": color},
                    hovertemplate=(f"Epoch %{{x}}<br>{label} {word} %{{y:.4g}}<extra></extra>"),
                ),
                row=1,
                col=column,
            )

    for column in (1, 2):
        figure.update_xaxes(title_text="Epoch", row=1, col=column)
        if 0 < num_epochs <= 20:
            figure.update_xaxes(tick0=1, dtick=1, row=1, col=column)
    figure.update_yaxes(title_text="Loss", row=1, col=1)
    figure.update_yaxes(title_text="Accuracy", row=1, col=2)
    if accuracy_key is None:
        figure.add_annotation(
            text="No accuracy recorded",
            xref="x2 domain",
            yref="y2 domain",
            x=0.5,
            y=0.5,
            showarrow=False,
        )
    figure.update_layout(height=440, hovermode="closest")
    return _base_layout(figure, title)


# ------------------------------------------------------------------------------------ table
def final_drift_table(
    drift: pd.DataFrame | None, layer_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Summarises the drift at the last recorded step, one row per layer, for display.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        layer_order: Layer paths in model order; None keeps the frame's order.

    Returns:
        A DataFrame with the columns of `TABLE_COLUMNS`: "Layer path", "Class", "Frozen" (frozen
        at every recorded step), "Weights relative change", "Weights max abs change", "State
        relative change", "State max abs change" (NaN for a layer without that kind),
        "Unchanged (weights and state)" (bitwise equal to the start, every kind it holds) and
        "Parameters" (weights and state together); rows in model order.

    Example:
    >>> final_drift_table(recorder.frame(), layer_order=tree.paths()).iloc[0]["Layer path"]
    'transfer_model/feature_extractor/conv_1'
    """
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    if drift.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    paths = _ordered_paths(drift["layer_path"].tolist(), order)
    frozen = _frozen_by_path(drift)
    last = (
        drift.sort_values("step", kind="stable").groupby(["layer_path", "kind"], sort=False).tail(1)
    )
    by_kind = {kind: last[last["kind"] == kind].set_index("layer_path") for kind in KINDS}
    records = []
    for path in paths:
        layer_rows = last[last["layer_path"] == path]
        record = {
            "Layer path": path,
            "Class": str(layer_rows["class_name"].iloc[0]),
            "Frozen": frozen[path],
        }
        for kind, word in ((WEIGHTS_KIND, "Weights"), (STATE_KIND, "State")):
            frame = by_kind[kind]
            present = path in frame.index
            record[f"{word} relative change"] = (
                float(frame.at[path, "relative_change"]) if present else math.nan
            )
            record[f"{word} max abs change"] = (
                float(frame.at[path, "max_abs_change"]) if present else math.nan
            )
        record["Unchanged (weights and state)"] = bool(layer_rows["unchanged"].all())
        record["Parameters"] = int(layer_rows["num_params"].sum())
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    return table.astype({"Frozen": bool, "Unchanged (weights and state)": bool, "Parameters": int})


# ------------------------------------------------------------------------- run comparison
COMPARISON_PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa")


def comparison_curves_figure(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> go.Figure:
    """Overlays the loss and accuracy curves of several runs (validation solid, training dotted).

    Args:
        histories: Run name -> per-epoch history ({"loss": [...], "val_accuracy": [...]}).

    Returns:
        A figure with two subplots (loss, accuracy) and up to four traces per run.

    Example:
    >>> comparison_curves_figure({"Run 1": {"loss": [1.0, 0.5]}, "Run 2": {"loss": [0.9, 0.7]}})
    """
    title = "Runs compared: loss and accuracy<br><sup>solid: validation · dotted: training</sup>"
    if not any(any(len(v) for v in history.values()) for history in histories.values()):
        return _empty_figure(title, "No finished epochs to compare yet.")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for (name, history), color in zip(
        histories.items(), itertools.cycle(COMPARISON_PALETTE), strict=False
    ):
        label = html.escape(str(name))
        in_legend = False  # one legend entry per run; a click on it toggles all its curves
        for metric, column in (("loss", 1), ("accuracy", 2)):
            for prefix, dash, part in (("val_", "solid", "validation"), ("", "dot", "training")):
                values = _as_floats(history.get(prefix + metric, []))
                if not values:
                    continue
                figure.add_trace(
                    go.Scatter(
                        x=list(range(1, len(values) + 1)),
                        y=values,
                        mode="lines+markers",
                        name=label,
                        legendgroup=label,
                        showlegend=not in_legend,
                        line={"color": color, "dash": dash},
                        hovertemplate=f"{label}<br>{part} {metric}: %{{y:.4g}}<br>"
                        "epoch %{x}<extra></extra>",
                    ),
                    row=1,
                    col=column,
                )
                in_legend = True
    figure.update_xaxes(title_text="Epoch", dtick=1)
    figure.update_yaxes(title_text="Loss", row=1, col=1)
    figure.update_yaxes(title_text="Accuracy", row=1, col=2)
    return _base_layout(figure, title)


def comparison_drift_figure(
    finals: Mapping[str, pd.DataFrame], layer_order: Sequence[str] | None = None
) -> go.Figure:
    """Groups the final weight drift per layer of several runs, one bar colour per run.

    Args:
        finals: Run name -> `final_drift_table` of that run.
        layer_order: Layer paths in model order (layers missing from a run are left empty).

    Returns:
        A horizontal grouped bar chart; frozen bars of a run are drawn hatched.
    """
    title = "Runs compared: final drift of each layer's weights"
    tables = {name: table for name, table in finals.items() if not table.empty}
    if not tables:
        return _empty_figure(title, "No drift recorded in these runs.")
    paths: list[str] = []
    for table in tables.values():
        paths.extend(p for p in table["Layer path"] if p not in paths)
    order = _ordered_paths(paths, _check_layer_order(layer_order))
    display = _display_paths(order)
    figure = go.Figure()
    for (name, table), color in zip(
        tables.items(), itertools.cycle(COMPARISON_PALETTE), strict=False
    ):
        by_path = table.set_index("Layer path")
        values = [
            float(by_path.loc[p, "Weights relative change"]) if p in by_path.index else None
            for p in order
        ]
        frozen = [bool(by_path.loc[p, "Frozen"]) if p in by_path.index else False for p in order]
        label = html.escape(str(name))
        figure.add_trace(
            go.Bar(
                y=[display[p] for p in order],
                x=values,
                orientation="h",
                name=label,
                marker={"color": color, "pattern": {"shape": ["/" if f else "" for f in frozen]}},
                hovertemplate=f"{label}<br>%{{y}}<br>relative change %{{x:.4g}}<extra></extra>",
            )
        )
    figure.update_layout(barmode="group", height=max(320, 28 * len(order) * len(tables) // 2))
    figure.update_yaxes(autorange="reversed", title_text="Layer (model order)")
    figure.update_xaxes(title_text=_RELATIVE_AXIS_TITLE[WEIGHTS_KIND])
    return _base_layout(figure, title)
