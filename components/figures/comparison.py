"""Run comparison figures: several runs' curves overlaid and their final drift side by side."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.figures.drift_frame import (
    _RELATIVE_AXIS_TITLE,
    WEIGHTS_KIND,
    _check_layer_order,
    _display_paths,
    _ordered_paths,
)
from components.figures.layout import _as_floats, _base_layout, _empty_figure

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
