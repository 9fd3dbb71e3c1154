"""Step 4 · Train: the training controls, the live progress and a run's summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from components.common import format_count, format_seconds
from components.drift_step import render_verification
from components.figures import (
    training_curves_figure,
)
from components.layer_rates_panel import render_layer_rates_controls
from components.state import Notice, escape_markdown, kept_widget, show, show_error
from models.job import PhaseBoundary, RunEnding
from models.limits import (
    EPOCHS_RANGE,
    LAYERS_PER_STEP_RANGE,
    TOP_LAYERS_RANGE,
    UNFREEZE_STEPS_RANGE,
)
from models.schedule import gradual_schedule, two_phase_schedule
from models.snapshot import RunSnapshot
from models.training import OPTIMIZERS, JobState, TrainingConfig, TrainingProgress
from models.tree import ParameterCounts, format_paths

LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
BATCH_SIZES = (8, 16, 32, 64, 128)
SCHEDULE_MODES = ("One run", "Two phases", "Gradual unfreezing")


@dataclass(frozen=True)
class TrainIntent:
    """What the user asked of training in this run of the script.

    Attributes:
        config: The settings from the controls (None when they are invalid).
        start: Start was clicked.
        stop: Stop was clicked.
        phases: A two-phase schedule (feature extraction, then fine-tuning), or None.
    """

    config: TrainingConfig | None
    start: bool = False
    stop: bool = False
    phases: tuple | None = None


# -------------------------------------------------------------------------- 4 Train
def render_training_controls(
    defaults: TrainingConfig,
    *,
    training: bool,
    validation_fraction: float,
    show_settings: bool = True,
    base_path: str | None = None,
) -> TrainIntent:
    """Renders the training settings and the Start / Stop buttons.

    Args:
        defaults: Settings to show first (the app's, an instructor link's, a restored one's).
        training: Whether a run is in progress (Start disabled, Stop enabled).
        validation_fraction: From the data step.
        show_settings: False when an instructor's link hides the settings (defaults are used).
        base_path: The base model's path, for the per-layer learning rates (its multiplier and
            decay blocks); None offers decay over the model's default base only.

    Returns:
        A `TrainIntent`.
    """
    if show_settings:
        epochs = st.number_input("Epochs", *EPOCHS_RANGE, value=defaults.epochs, disabled=training)
        rates = sorted({*LEARNING_RATES, defaults.learning_rate})
        learning_rate = st.select_slider(
            "Learning rate",
            options=rates,
            value=defaults.learning_rate,
            format_func=lambda value: f"{value:g}",
            disabled=training,
            help="About 1e-2 to train a new head; 1e-4 or lower to fine-tune a pretrained base.",
        )
        left, right = st.columns(2)
        sizes = sorted({*BATCH_SIZES, defaults.batch_size})
        batch_size = left.selectbox(
            "Batch size", sizes, index=sizes.index(defaults.batch_size), disabled=training
        )
        optimizers = sorted(OPTIMIZERS)
        optimizer = right.selectbox(
            "Optimizer", optimizers, index=optimizers.index(defaults.optimizer), disabled=training
        )
        layer_rates = render_layer_rates_controls(
            defaults.layer_rates, base_path, disabled=training
        )
    else:
        epochs, learning_rate = defaults.epochs, defaults.learning_rate
        batch_size, optimizer = defaults.batch_size, defaults.optimizer
        layer_rates = defaults.layer_rates
        st.caption(
            f"Settings chosen by the instructor: {epochs} epochs, learning rate "
            f"{learning_rate:g}, batch {batch_size}, {optimizer}"
            + ("." if layer_rates is None else f"; {layer_rates}.")
        )
    config: TrainingConfig | None
    try:
        config = TrainingConfig(
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            optimizer=optimizer,
            validation_fraction=float(validation_fraction),
            seed=defaults.seed,
            drift_every_batches=defaults.drift_every_batches,
            layer_rates=layer_rates,
        )
    except (TypeError, ValueError) as error:
        st.error(str(error))
        config = None
    phases = None
    if show_settings:
        mode = kept_widget(
            st.radio,
            "Schedule",
            options=SCHEDULE_MODES,
            default=SCHEDULE_MODES[0],
            horizontal=True,
            disabled=training,
            key="schedule_mode",
            help="Two phases: train the head on a frozen base, then fine-tune with a low "
            "learning rate (each phase recompiled; charts mark where phase 2 starts).",
        )
        if mode != "One run":
            fine_epochs = kept_widget(
                st.number_input,
                "Fine-tuning epochs" if mode == "Two phases" else "Epochs per unfreezing step",
                min_value=EPOCHS_RANGE[0], max_value=EPOCHS_RANGE[1],
                default=2 if mode == "Two phases" else 1,
                disabled=training, key=f"fine_tune_epochs_{mode}",
            )  # fmt: skip
            fine_rate = kept_widget(
                st.select_slider, "Fine-tuning learning rate", options=LEARNING_RATES,
                default=1e-4, format_func=lambda value: f"{value:g}", disabled=training,
                key="fine_tune_rate",
            )  # fmt: skip
            if mode == "Two phases":
                top = kept_widget(
                    st.number_input, "Unfreeze the top N layers of the base (0 = all)",
                    min_value=TOP_LAYERS_RANGE[0], max_value=TOP_LAYERS_RANGE[1], default=0,
                    disabled=training, key="fine_tune_top",
                )  # fmt: skip
            else:
                steps = kept_widget(
                    st.number_input, "Unfreezing steps", min_value=UNFREEZE_STEPS_RANGE[0],
                    max_value=UNFREEZE_STEPS_RANGE[1], default=3,
                    disabled=training, key="gradual_steps",
                )  # fmt: skip
                block = kept_widget(
                    st.number_input, "Base layers added per step (top first)",
                    min_value=LAYERS_PER_STEP_RANGE[0], max_value=LAYERS_PER_STEP_RANGE[1],
                    default=3, disabled=training, key="gradual_block",
                )  # fmt: skip
            try:
                if mode == "Two phases":
                    phases = two_phase_schedule(
                        int(epochs), float(learning_rate), int(fine_epochs), float(fine_rate),
                        int(top),
                    )  # fmt: skip
                else:
                    phases = gradual_schedule(
                        int(epochs), float(learning_rate), int(steps), int(block),
                        int(fine_epochs), float(fine_rate),
                    )  # fmt: skip
            except ValueError as error:
                show_error(str(error))
    start_column, stop_column = st.columns(2)
    start = start_column.button(
        "▶ Train",
        type="primary",
        disabled=training or config is None,
        width="stretch",
        key="start_training",
    )
    stop = stop_column.button("■ Stop", disabled=not training, width="stretch", key="stop_training")
    return TrainIntent(config=config, start=start, stop=stop, phases=phases)


def render_all_frozen_warning(base_name: str) -> str | None:
    """Says that every layer is frozen, so training could change nothing, and offers the fix.

    Args:
        base_name: The base model's name, for the fix's label.

    Returns:
        "fix" (freeze only the base, then train), "dismiss", or None when nothing was clicked.
    """
    st.warning(
        "Every layer is frozen (0 trainable parameters), so training would change no weight: "
        "its loss curves would show only noise. "
        f"The usual set-up freezes only the base ({escape_markdown(base_name)}) and trains "
        "the new head on top of it.",
        icon=":material/ac_unit:",
    )
    left, right = st.columns(2)
    if left.button(
        "Freeze only the base and train", type="primary", width="stretch", key="fix_all_frozen"
    ):
        return "fix"
    if right.button("Keep my plan", width="stretch", key="dismiss_all_frozen"):
        return "dismiss"
    return None


def render_progress(
    progress: TrainingProgress,
    key: str = "training_curves",
    boundaries: Sequence[PhaseBoundary] = (),
) -> None:
    """Shows a run's progress bar, timing, message and live loss/accuracy curves.

    Args:
        progress: A `TrainingProgress` snapshot.
        key: Stable key of the chart, so live refreshes update it in place.
        boundaries: Where each phase of a schedule begins (marked on the curves).
    """
    st.progress(progress.fraction_done, text=progress_text(progress))
    kinds = {JobState.FINISHED: "success", JobState.CANCELLED: "warning", JobState.FAILED: "error"}
    show(Notice(progress.message, kinds.get(progress.state, "info")))
    figure = training_curves_figure(
        progress.history, progress.batch_history, batches_per_epoch=progress.batches_per_epoch
    )
    for boundary in boundaries:
        if boundary.first_epoch > 0:
            figure.add_vline(
                x=boundary.first_epoch + 0.5, line_dash="dot", line_color="#888",
                annotation_text=boundary.name, annotation_position="top left",
            )  # fmt: skip
    st.plotly_chart(figure, width="stretch", key=key)


def progress_text(progress: TrainingProgress) -> str:
    """One line of where a run is, e.g. "Epoch 2/3 · batch 12/45 · elapsed 8 s · left 4 s"."""
    batches = progress.batches_per_epoch
    shown_epoch = min(progress.epoch + (0 if progress.done else 1), progress.epochs)
    text = f"Epoch {shown_epoch}/{progress.epochs}"
    if batches and not progress.done:
        text += f" · batch {progress.batch}/{batches}"
    if progress.state is JobState.RUNNING and not progress.batch_history.get("step"):
        text += " · compiling the training step"  # the first batch waits for the trace
    return (
        f"{text} · elapsed {format_seconds(progress.elapsed_seconds)}"
        f" · left {format_seconds(progress.eta_seconds)}"
    )


def render_run_status(name: str, progress: TrainingProgress) -> None:
    """The sidebar's one-line status of the run training now (shown on every tab).

    Args:
        name: The run's name, e.g. "Run 3".
        progress: Its `TrainingProgress`.
    """
    st.progress(progress.fraction_done, text=f"{escape_markdown(name)} · {progress_text(progress)}")
    if progress.state is JobState.PENDING:
        st.caption(escape_markdown(progress.message))


def render_run_summary(run: RunSnapshot) -> None:
    """Shows what a run was: model, data, settings, freeze plan, counts and training path."""
    settings = run.settings
    frozen = sorted(path.split("/", 1)[-1] for path in run.frozen_paths if "/" in path)
    st.markdown(
        f"**{escape_markdown(run.label)}** · {escape_markdown(run.model_title)} on "
        f"{escape_markdown(run.dataset_title)} · batch {settings.batch_size} · "
        f"{settings.optimizer} · validation {settings.validation_fraction:.0%} · "
        f"{format_count(run.counts.trainable)} trainable of {format_count(run.counts.total)} "
        "parameters"
    )
    st.caption(f"Frozen flags at the start: {escape_markdown(format_paths(frozen, 12)) or 'none'}")
    if run.ending is RunEnding.ORPHANED:
        st.caption(
            ":material/link_off: Ended as **orphaned**: its page was closed longer than the "
            "grace period, so the server stopped it, freed its training slot and kept it."
        )
    if run.execution_note:
        icon = ":material/bolt:" if run.execution_cached else ":material/info:"
        st.caption(f"{icon} {escape_markdown(run.execution_note)}")


def render_run(run: RunSnapshot) -> None:
    """The Train step's view of a run: summary, progress and curves, and its proof once ended.

    Args:
        run: The run's snapshot (live or ended).
    """
    render_run_summary(run)
    render_progress(run.progress, key=f"run{run.run_id}_curves", boundaries=run.phase_boundaries)
    if run.verification is not None:
        render_verification(run.verification)
        st.caption("Every layer's drift and the full proof: step **5 · Drift**.")


@dataclass(frozen=True)
class RunPanelIntent:
    """What the user asked in the sidebar's run panel.

    Attributes:
        train: The training controls' intent (settings, Start, Stop, schedule).
        all_frozen_choice: "fix" or "dismiss" from the all-frozen warning, or None.
    """

    train: TrainIntent
    all_frozen_choice: str | None = None


def render_run_panel(
    summary: RunPanelSummary,
    defaults: TrainingConfig,
    *,
    training: bool,
    validation_fraction: float,
    show_settings: bool,
    all_frozen_warning: bool,
) -> RunPanelIntent:
    """Draws the sidebar: what is loaded, the live parameter counts and the training controls.

    Args:
        summary: The model, data and counts to show.
        defaults: Settings to show first.
        training: Whether a run is in progress.
        validation_fraction: From the data step.
        show_settings: False when an instructor's link hides the settings.
        all_frozen_warning: Whether Train was pressed with nothing trainable.

    Returns:
        A `RunPanelIntent`.
    """
    with st.sidebar:
        st.title("❄ FreezeLab")
        st.caption("Freeze layers, train, and see which weights moved.")
        totals = summary.counts
        st.markdown(
            f"**Model** {escape_markdown(summary.model_title)}  \n"
            f"**Data** {escape_markdown(summary.dataset_title)}  \n"
            f"**Trainable** {format_count(totals.trainable)} of {format_count(totals.total)} "
            f"parameters ({totals.trainable_fraction:.1%})"
        )
        st.subheader("4 · Train")
        intent = render_training_controls(
            defaults,
            training=training,
            show_settings=show_settings,
            validation_fraction=validation_fraction,
            base_path=summary.base_path,
        )
        choice = None
        if all_frozen_warning and not training:
            choice = render_all_frozen_warning(summary.base_name)
    return RunPanelIntent(intent, choice)


@dataclass(frozen=True)
class RunPanelSummary:
    """What the run panel shows of the session: model, data, base and live counts."""

    model_title: str
    dataset_title: str
    base_name: str
    counts: ParameterCounts
    base_path: str | None = None
