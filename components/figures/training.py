"""Training curves: loss and accuracy per epoch, training and validation, per-batch values faint."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.figures.layout import (
    TRAINABLE_COLOR,
    VALIDATION_COLOR,
    _as_floats,
    _base_layout,
    _empty_figure,
)
from models.validation import check_whole_number

# (history key, word shown, subplot column): loss on the left, accuracy on the right.
_Metrics = tuple[tuple[str | None, str, int], ...]


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
    batches_per_epoch = _check_training_inputs(history, batch_history, batches_per_epoch)
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
    metrics: _Metrics = (("loss", "loss", 1), (accuracy_key, "accuracy", 2))
    # Faint per-batch values first, so the epoch curves are drawn on top.
    if has_batches:
        _add_batch_traces(figure, batch_history, batch_steps, batches_per_epoch, metrics)
    num_epochs = _add_epoch_traces(figure, history, metrics)
    _label_axes(figure, num_epochs, accuracy_key)
    figure.update_layout(height=440, hovermode="closest")
    return _base_layout(figure, title)


# ----------------------------------------------------------------------------------- steps
def _check_training_inputs(
    history: object, batch_history: object, batches_per_epoch: object
) -> int | None:
    """Checks the arguments of `training_curves_figure`; returns `batches_per_epoch` as an int."""
    for name, value in (("history", history), ("batch_history", batch_history)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(
                f"`{name}` must be a dict of metric name to list of values, received "
                f"{type(value).__name__}."
            )
    return check_whole_number("batches_per_epoch", batches_per_epoch, 1, allow_none=True)


def _accuracy_key(history: Mapping[str, Sequence[float]]) -> str | None:
    if "accuracy" in history:
        return "accuracy"
    candidates = [key for key in history if "acc" in key and not key.startswith("val_")]
    return candidates[0] if candidates else None


def _batch_positions(
    batch_steps: list[float], batches_per_epoch: int | None
) -> tuple[list[float], str, bool] | None:
    """Where per-batch values go: (x values, hover label, on a top "Batches seen" axis).

    At fractional epochs when `batches_per_epoch` is known; otherwise at the steps themselves on
    an axis of their own, as long as they increase; None when they cannot be placed (steps that
    restart each epoch).
    """
    if batches_per_epoch:
        return [step / batches_per_epoch for step in batch_steps], "Epoch %{x:.3f}", False
    if all(b > a for a, b in itertools.pairwise(batch_steps)):
        return batch_steps, "Batches seen %{x}", True
    return None


def _add_batch_traces(
    figure: go.Figure,
    batch_history: Mapping[str, Sequence[float]],
    batch_steps: list[float],
    batches_per_epoch: int | None,
    metrics: _Metrics,
) -> None:
    """Adds the faint per-batch training curves (the epoch mean so far, as Keras logs it)."""
    positions = _batch_positions(batch_steps, batches_per_epoch)
    if positions is None:
        return
    batch_x, x_label, on_top = positions
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
                f"{x_label}<br>Training {word} (epoch mean so far) %{{y:.4g}}<extra></extra>"
            ),
        )
        if on_top:
            _add_on_batches_axis(figure, trace, column)
        else:
            figure.add_trace(trace, row=1, col=column)


def _add_on_batches_axis(figure: go.Figure, trace: go.Scatter, column: int) -> None:
    """Adds `trace` against a "Batches seen" axis along the top of subplot `column`."""
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


def _add_epoch_traces(
    figure: go.Figure, history: Mapping[str, Sequence[float]], metrics: _Metrics
) -> int:
    """Adds the training (solid) and validation (dashed) curves per epoch; returns the epochs."""
    num_epochs = 0
    for key, word, column in metrics:
        for prefix, label, color, dash in (
            ("", "Training", TRAINABLE_COLOR, "solid"),
            ("val_", "Validation", VALIDATION_COLOR, "dash"),
        ):
            values = history.get(prefix + key, []) if key else []
            if not len(values):
                continue
            num_epochs = max(num_epochs, len(values))
            figure.add_trace(
                go.Scatter(
                    x=list(range(1, len(values) + 1)),
                    y=_as_floats(values),
                    mode="lines+markers" if len(values) <= 60 else "lines",
                    name=f"{label} {word}",
                    legendgroup=label.lower(),
                    line={"color": color, "width": 2.5, "dash": dash},
                    marker={"size": 8, "color": color},
                    hovertemplate=f"Epoch %{{x}}<br>{label} {word} %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=column,
            )
    return num_epochs


def _label_axes(figure: go.Figure, num_epochs: int, accuracy_key: str | None) -> None:
    """Titles both subplots' axes, one tick per epoch up to 20, and notes a missing accuracy."""
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
