"""Streamlit panels of the dashboard's steps: each renders plain data, returns the user's intent."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from components.figures import (
    comparison_curves_figure,
    comparison_drift_figure,
    drift_heatmap_figure,
    drift_lines_figure,
    final_drift_bar_figure,
    final_drift_table,
    state_drift_figure,
    training_curves_figure,
)
from components.state import escape_markdown, kept_widget, show_error
from models.datasets import train_validation_split
from models.download import ProgressCallback, progress_text
from models.drift import VerificationResult
from models.schedule import gradual_schedule, two_phase_schedule
from models.training import OPTIMIZERS, JobState, TrainingConfig, TrainingProgress
from models.tree import LayerNode, ParameterCounts
from models.workspace import ModelTemplate, Run

LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
BATCH_SIZES = (8, 16, 32, 64, 128)
MAX_LINE_LAYERS = 40
SCHEDULE_MODES = ("One run", "Two phases", "Gradual unfreezing")


# ------------------------------------------------------------------------------ intents
@dataclass(frozen=True)
class BulkIntent:
    """A bulk freezing action the user asked for (see `Workspace.bulk_action`)."""

    action: str
    argument: Any = None


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


# ----------------------------------------------------------------------------- helpers
def _format_count(value: int) -> str:
    return f"{value:,}"


def render_totals(counts: ParameterCounts) -> None:
    """Shows Keras-summary-style totals: trainable, non-trainable, total, % trainable.

    Args:
        counts: The model's `ParameterCounts`.
    """
    columns = st.columns(4)
    columns[0].metric("Trainable params", _format_count(counts.trainable))
    columns[1].metric("Non-trainable params", _format_count(counts.non_trainable))
    columns[2].metric("Total params", _format_count(counts.total))
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


# ------------------------------------------------------------------------- 1 Model
MODEL_SOURCES = ("Bundled (offline)", "keras.applications", "Your own .keras / .h5 file")
DATA_SOURCES = ("Bundled (offline)", "keras.datasets", "Zip of class folders", "CSV table")


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked of the model step.

    Attributes:
        kind: "bundled", "application", "application_random" (continue without ImageNet
            weights), "upload" (a new file), "cut" (use the uploaded model cut at a layer),
            or "reset" (restore the template's weights).
        key: Catalogue key for the applications.
        input_size: Input height/width for the applications.
        pretrained: Whether to load ImageNet weights.
        data: Uploaded file bytes.
        filename: Uploaded file name.
        cut_layer: The last layer of the base, for "cut".
    """

    kind: str
    key: str | None = None
    input_size: int | None = None
    pretrained: bool = True
    data: bytes | None = None
    filename: str | None = None
    cut_layer: str | None = None


@dataclass(frozen=True)
class UploadedModelInfo:
    """Plain facts about a model file the user uploaded (for the cut-layer picker)."""

    filename: str
    num_layers: int
    num_params: int
    cut_choices: tuple[str, ...]
    default_cut: str


def render_model_card(template: ModelTemplate) -> None:
    """Shows the base model in use: title, pretrained or not, parameters, layers, input."""
    with st.container(border=True):
        badge = (
            ":green-badge[pretrained]"
            if template.pretrained
            else ":orange-badge[not pretrained: random initialisation]"
        )
        st.markdown(f"**{escape_markdown(template.title)}** {badge}")
        st.caption(escape_markdown(template.description))
        columns = st.columns(3)
        columns[0].metric("Base parameters", _format_count(template.num_params))
        columns[1].metric("Base layers", _format_count(template.num_layers))
        columns[2].metric("Input size", " x ".join(str(s) for s in template.input_shape))


def render_model_step(
    template: ModelTemplate,
    applications: Mapping[str, Any],
    *,
    uploaded: UploadedModelInfo | None,
    weights_error: str | None,
    disabled: bool,
    allow_change: bool = True,
    allow_upload: bool = True,
) -> ModelRequest | None:
    """Renders where the base model comes from, its card, and returns what the user asked.

    Args:
        template: The template in use.
        applications: Catalogue key -> `ApplicationEntry` (title, sizes, params, layers).
        uploaded: The model file this session uploaded, if any.
        weights_error: The last "ImageNet weights unavailable" message, if any.
        disabled: True while training runs.
        allow_change: False when an instructor's link hides the model choice.
        allow_upload: False when an instructor's link hides uploads.

    Returns:
        A `ModelRequest`, or None when nothing was asked.
    """
    request: ModelRequest | None = None
    sources = MODEL_SOURCES if allow_upload else MODEL_SOURCES[:2]
    source = (
        kept_widget(
            st.radio,
            "Where the base model comes from",
            options=sources,
            default=sources[0],
            horizontal=True,
            disabled=disabled,
            key="model_source",
        )
        if allow_change
        else None
    )
    if source is None:
        pass
    elif source == MODEL_SOURCES[0]:
        if st.button("Use the bundled digits CNN", disabled=disabled, key="use_bundled_model"):
            request = ModelRequest("bundled")
    elif source == MODEL_SOURCES[1]:
        keys = list(applications)
        key = kept_widget(
            st.selectbox,
            "keras.applications model",
            options=keys,
            default=keys[0],
            format_func=lambda k: applications[k].title,
            disabled=disabled,
            key="application_key",
        )
        entry = applications[key]
        st.caption(escape_markdown(entry.description))
        left, middle, right = st.columns(3)
        left.metric("Parameters (no top)", _format_count(entry.num_params))
        middle.metric("Layers", _format_count(entry.num_layers))
        sizes = list(entry.input_sizes)
        size = kept_widget(
            right.selectbox,
            "Input size (px)",
            options=sizes,
            default=entry.default_input_size,
            disabled=disabled,
            key=f"application_size_{key}",
            help="Smaller is much faster on a CPU; ImageNet weights exist for the listed sizes.",
        )
        pretrained = kept_widget(
            st.checkbox,
            "Use ImageNet weights (from the Keras cache, or downloaded)",
            default=True,
            disabled=disabled,
            key="application_pretrained",
        )
        if st.button(f"Load {entry.title}", type="primary", disabled=disabled, key="load_app"):
            request = ModelRequest(
                "application", key=key, input_size=int(size), pretrained=pretrained
            )
        if weights_error:
            show_error(weights_error)
            if st.button(
                "Continue with random initialisation (not pretrained)",
                disabled=disabled,
                key="application_random",
            ):
                request = ModelRequest(
                    "application_random", key=key, input_size=int(size), pretrained=False
                )
    else:
        upload = st.file_uploader(
            "A Keras model file (.keras, or legacy .h5); loaded in Keras's safe mode",
            type=["keras", "h5", "hdf5"],
            disabled=disabled,
            key="model_upload",
        )
        if upload is not None and st.session_state.get("model_upload_seen") != upload.file_id:
            st.session_state.model_upload_seen = upload.file_id
            request = ModelRequest("upload", data=upload.getvalue(), filename=upload.name)
        if uploaded is not None and request is None:
            st.markdown(
                f"**{escape_markdown(uploaded.filename)}**: {uploaded.num_layers} layers, "
                f"{_format_count(uploaded.num_params)} parameters"
            )
            choices = list(uploaded.cut_choices)
            cut = kept_widget(
                st.selectbox,
                "Last layer of the base (a new head replaces everything after it)",
                options=choices,
                default=uploaded.default_cut,
                disabled=disabled,
                key="cut_layer",
            )
            if st.button("Use as base model", type="primary", disabled=disabled, key="use_cut"):
                request = ModelRequest("cut", filename=uploaded.filename, cut_layer=cut)

    st.markdown("**In use**")
    render_model_card(template)
    st.caption(
        "FreezeLab adds a new head for the chosen dataset (pooling if needed, dropout, a Dense "
        "classifier) and, when the data's size or channels differ, resizing, channel "
        "conversion and the model family's preprocessing in front of the base. The base stays "
        "one nested model in the tree."
    )
    if st.button(
        "Reset weights to the template",
        disabled=disabled,
        help="Restore the base's original weights and start a new head; the freeze plan stays.",
        key="reset_weights",
    ):
        request = ModelRequest("reset")
    return request


# ------------------------------------------------------------------------- 2 Freeze
def render_bulk_actions(
    nodes: Sequence[LayerNode], base_path: str, base_layer_paths: Sequence[str], *, disabled: bool
) -> BulkIntent | None:
    """Renders the bulk freezing buttons.

    Args:
        nodes: The model's nodes (for the "freeze up to" menu).
        base_path: Path of the base model node.
        base_layer_paths: The base's direct layers (for "unfreeze top N").
        disabled: True while training runs.

    Returns:
        A `BulkIntent`, or None when no button was clicked.
    """
    base_name = base_path.rsplit("/", 1)[-1]
    intent: BulkIntent | None = None
    columns = st.columns(4)
    if columns[0].button(
        f"Freeze base ({base_name})",
        type="primary",
        disabled=disabled,
        width="stretch",
        help="base.trainable = False: the classic feature-extraction set-up.",
    ):
        intent = BulkIntent("freeze_base")
    if columns[1].button("Freeze all", disabled=disabled, width="stretch"):
        intent = BulkIntent("freeze_all")
    if columns[2].button("Unfreeze all", disabled=disabled, width="stretch"):
        intent = BulkIntent("unfreeze_all")
    if columns[3].button(
        "Freeze all BatchNorm",
        disabled=disabled,
        width="stretch",
        help="Frozen BatchNormalization runs in inference mode: its moving statistics stay fixed.",
    ):
        intent = BulkIntent("freeze_batch_norm")

    left, right = st.columns(2)
    with left:
        paths = [node.path for node in nodes[1:]]
        target = kept_widget(
            st.selectbox,
            "Freeze everything up to and including",
            help=(
                "Sets trainable = False on the chosen layer and on every layer before it in "
                "model order (nested layers included), and True on every layer after it. "
                "Layers without weights (activations, pooling) have nothing to freeze: choosing "
                "one freezes the same weights as choosing the last layer with weights before it."
            ),
            options=paths,
            default=base_path,
            format_func=lambda path: path.split("/", 1)[-1],
            disabled=disabled,
            key="freeze_up_to_target",
        )
        if st.button("Apply freeze up to", disabled=disabled, key="apply_freeze_up_to"):
            intent = BulkIntent("freeze_up_to", target)
    with right:
        count = len(base_layer_paths)
        top = kept_widget(
            st.number_input,
            f"Unfreeze the top N of the base's {count} layers with weights",
            help=(
                "The Keras fine-tuning recipe: base.trainable = True, then every layer below "
                "the top N layers with weights is frozen. Only layers with trainable weights "
                "(convolutions, dense, BatchNormalization) are counted; layers without weights "
                "(activations, pooling, dropout) have nothing to train, so they are skipped in "
                "the count and follow their place: frozen below the cut, trainable above it."
            ),
            default=min(2, count),
            min_value=0,
            max_value=max(count, 0),
            step=1,
            disabled=disabled,
            key="unfreeze_top_count",
        )
        if st.button("Apply unfreeze top N", disabled=disabled, key="apply_unfreeze_top"):
            intent = BulkIntent("unfreeze_top", int(top))
    return intent


def render_freeze_legend() -> None:
    """Explains the tree's checkboxes and badges in one caption."""
    st.caption(
        "☑ = frozen (`layer.trainable = False`). Ticking a model or a layer with sublayers "
        "freezes everything under it, as Keras does; a half-filled box means mixed children. "
        "**BN**: BatchNormalization (frozen = inference mode, moving statistics fixed). "
        "**parent frozen, still trains**: Keras 3 only checks the *top* model's flag, so a layer "
        "set back to trainable inside a frozen nested model is still trained by `fit`."
    )


# --------------------------------------------------------------------------- 3 Data
def _thumbnail(image: np.ndarray, size: int = 72) -> Image.Image:
    pixels = np.clip(np.asarray(image) * 255.0, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(pixels).resize((size, size), Image.NEAREST)


def sample_indices(labels: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """Picks up to `per_class` sample indices of every class, in class order.

    Args:
        labels: Integer labels.
        per_class: How many samples of each class.
        seed: Seed of the choice.

    Returns:
        Indices into the dataset.
    """
    generator = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(labels):
        candidates = np.flatnonzero(labels == label)
        take = min(per_class, len(candidates))
        chosen.extend(int(i) for i in generator.choice(candidates, size=take, replace=False))
    return chosen


@dataclass(frozen=True)
class DataRequest:
    """What the user asked of the data step.

    Attributes:
        kind: "bundled", "keras" (keras.datasets), "zip" or "csv".
        key: Dataset key for "bundled" and "keras".
        subset_size: Samples to keep for "keras".
        data: Uploaded bytes for "zip" and "csv".
        filename: Uploaded file name.
        image_size: Side of the square images a zip is resized to.
        label_column: The CSV's label column.
    """

    kind: str
    key: str | None = None
    subset_size: int | None = None
    data: bytes | None = None
    filename: str | None = None
    image_size: int | None = None
    label_column: str | None = None


def _render_data_source(
    bundled: Mapping[str, str],
    keras_datasets: Mapping[str, str],
    current_key: str,
    csv_columns_of: Any,
    *,
    disabled: bool,
    allow_upload: bool = True,
) -> DataRequest | None:
    sources = DATA_SOURCES if allow_upload else DATA_SOURCES[:2]
    source = kept_widget(
        st.radio, "Where the data comes from", options=sources, default=sources[0],
        horizontal=True, disabled=disabled, key="data_source",
    )  # fmt: skip
    if source == DATA_SOURCES[0]:
        keys = list(bundled)
        choice = st.selectbox(
            "Bundled dataset",
            keys,
            index=keys.index(current_key) if current_key in keys else 0,
            format_func=lambda key: bundled[key],
            disabled=disabled,
            key="dataset_choice",
        )
        if choice != current_key:
            return DataRequest("bundled", key=choice)
        return None
    if source == DATA_SOURCES[1]:
        keys = list(keras_datasets)
        key = kept_widget(
            st.selectbox, "keras.datasets", options=keys, default=keys[0],
            format_func=lambda k: keras_datasets[k], disabled=disabled, key="keras_dataset_key",
        )  # fmt: skip
        subset = kept_widget(
            st.number_input, "Samples to use (a stratified subset keeps training fast on a CPU)",
            default=2_000, min_value=100, max_value=60_000, step=500, disabled=disabled,
            key="keras_dataset_subset",
        )  # fmt: skip
        if st.button("Load dataset", type="primary", disabled=disabled, key="load_keras_data"):
            return DataRequest("keras", key=key, subset_size=int(subset))
        return None
    if source == DATA_SOURCES[2]:
        upload = st.file_uploader(
            "A zip with one folder per class (class_name/*.png or *.jpg)",
            type=["zip"], disabled=disabled, key="zip_upload",
        )  # fmt: skip
        size = kept_widget(
            st.select_slider, "Resize images to (px)", options=(16, 32, 48, 64, 96, 128),
            default=64, disabled=disabled, key="zip_image_size",
        )  # fmt: skip
        if upload is not None and st.button(
            "Load images", type="primary", disabled=disabled, key="load_zip"
        ):
            return DataRequest(
                "zip", data=upload.getvalue(), filename=upload.name, image_size=int(size)
            )
        return None
    upload = st.file_uploader(
        "A CSV table: numeric feature columns and one label column",
        type=["csv", "tsv", "txt"], disabled=disabled, key="csv_upload",
    )  # fmt: skip
    if upload is None:
        return None
    try:
        columns = csv_columns_of(upload.getvalue())
    except ValueError as error:
        show_error(str(error))
        return None
    label = kept_widget(
        st.selectbox, "Label column", options=columns, default=columns[-1], disabled=disabled,
        key="csv_label",
    )  # fmt: skip
    st.caption("A CSV trains a small Dense base (two Dense + BatchNormalization blocks).")
    if st.button("Load table", type="primary", disabled=disabled, key="load_csv"):
        return DataRequest("csv", data=upload.getvalue(), filename=upload.name, label_column=label)
    return None


def render_data_step(
    dataset: Any,
    bundled: Mapping[str, str],
    keras_datasets: Mapping[str, str],
    validation_fraction: float,
    *,
    notes: Sequence[str],
    csv_columns_of: Any,
    disabled: bool,
    allow_change: bool = True,
    allow_upload: bool = True,
    model_input: str | None = None,
) -> tuple[DataRequest | None, float]:
    """Renders the data source picker, the dataset's numbers, class balance and samples.

    Args:
        dataset: The dataset in use (`ImageDataset` or `TabularDataset`).
        bundled: Bundled dataset key -> title.
        keras_datasets: keras.datasets key -> title.
        validation_fraction: The current validation share.
        notes: Notes from loading the dataset (skipped files, dropped rows...).
        csv_columns_of: Function returning a CSV's column names (for the label picker).
        disabled: True while training runs.
        allow_change: False when an instructor's link hides the data choice.
        allow_upload: False when an instructor's link hides uploads.
        model_input: The resolution the model sees next to the data's own
            (`models.transfer.describe_input_adaptation(model).text`), or None.

    Returns:
        `(request, validation_fraction)`: what the user asked (or None) and the split.
    """
    request = (
        _render_data_source(
            bundled,
            keras_datasets,
            dataset.name,
            csv_columns_of,
            disabled=disabled,
            allow_upload=allow_upload,
        )
        if allow_change
        else None
    )
    st.markdown(f"**In use: {escape_markdown(dataset.title)}**")
    st.caption(escape_markdown(dataset.description))
    if notes:
        with st.expander(f"Notes from loading ({len(notes)})", expanded=True):
            st.text("\n".join(notes))
    fraction = kept_widget(
        st.slider,
        "Validation split",
        default=float(validation_fraction),
        min_value=0.0,
        max_value=0.5,
        step=0.05,
        disabled=disabled,
        key="validation_fraction",
        help="Share of each class held out to measure accuracy on unseen data (stratified).",
    )
    num_validation = 0
    if fraction > 0:
        try:
            _, _, x_validation, _ = train_validation_split(dataset.x, dataset.y, fraction, 0)
            num_validation = len(x_validation)
        except ValueError as error:
            show_error(str(error))
    columns = st.columns(4)
    columns[0].metric("Classes", dataset.num_classes)
    columns[1].metric("Training samples", _format_count(dataset.num_samples - num_validation))
    columns[2].metric("Validation samples", _format_count(num_validation))
    shape = dataset.input_shape
    columns[3].metric(
        "Image size" if len(shape) == 3 else "Features", " x ".join(str(s) for s in shape)
    )
    if model_input:
        st.caption(escape_markdown(model_input))
    left, right = st.columns([1, 2])
    with left:
        st.markdown("**Class balance**")
        counts = dataset.class_counts()
        st.bar_chart(pd.DataFrame({"samples": counts.values}, index=counts.index.astype(str)))
    with right:
        indices = sample_indices(dataset.y, per_class=2)
        if len(shape) == 3:
            st.markdown("**Samples**")
            st.image(
                [_thumbnail(dataset.x[i]) for i in indices],
                caption=[dataset.class_names[int(dataset.y[i])] for i in indices],
            )
        else:
            st.markdown("**Sample rows**")
            table = pd.DataFrame(dataset.x[indices], columns=list(dataset.feature_names))
            table.insert(0, "label", [dataset.class_names[int(dataset.y[i])] for i in indices])
            st.dataframe(table, hide_index=True, width="stretch")
    return request, fraction


# -------------------------------------------------------------------------- 4 Train
def render_training_controls(
    defaults: TrainingConfig,
    *,
    training: bool,
    validation_fraction: float,
    show_settings: bool = True,
) -> TrainIntent:
    """Renders the training settings and the Start / Stop buttons.

    Args:
        defaults: Settings to show first (the app's, an instructor link's, a restored one's).
        training: Whether a run is in progress (Start disabled, Stop enabled).
        validation_fraction: From the data step.
        show_settings: False when an instructor's link hides the settings (defaults are used).

    Returns:
        A `TrainIntent`.
    """
    if show_settings:
        epochs = st.number_input(
            "Epochs", min_value=1, max_value=200, value=defaults.epochs, disabled=training
        )
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
    else:
        epochs, learning_rate = defaults.epochs, defaults.learning_rate
        batch_size, optimizer = defaults.batch_size, defaults.optimizer
        st.caption(
            f"Settings chosen by the instructor: {epochs} epochs, learning rate "
            f"{learning_rate:g}, batch {batch_size}, {optimizer}."
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
                min_value=1, max_value=200, default=2 if mode == "Two phases" else 1,
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
                    min_value=0, max_value=500, default=0, disabled=training, key="fine_tune_top",
                )  # fmt: skip
            else:
                steps = kept_widget(
                    st.number_input, "Unfreezing steps", min_value=1, max_value=20, default=3,
                    disabled=training, key="gradual_steps",
                )  # fmt: skip
                block = kept_widget(
                    st.number_input, "Base layers added per step (top first)", min_value=1,
                    max_value=500, default=3, disabled=training, key="gradual_block",
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


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}" if minutes else f"{rest} s"


def render_progress(
    progress: TrainingProgress,
    key: str = "training_curves",
    boundaries: Sequence[tuple[str, int, int]] | None = None,
) -> None:
    """Shows a run's progress bar, timing, message and live loss/accuracy curves.

    Args:
        progress: A `TrainingProgress` snapshot.
        key: Stable key of the chart, so live refreshes update it in place.
        boundaries: `(phase name, first epoch, first step)` of a schedule's phases.
    """
    batches = progress.batches_per_epoch
    shown_epoch = min(progress.epoch + (0 if progress.done else 1), progress.epochs)
    text = f"Epoch {shown_epoch}/{progress.epochs}"
    if batches and not progress.done:
        text += f" · batch {progress.batch}/{batches}"
    text += (
        f" · elapsed {_format_seconds(progress.elapsed_seconds)}"
        f" · left {_format_seconds(progress.eta_seconds)}"
    )
    st.progress(progress.fraction_done, text=text)
    if progress.state is JobState.FINISHED:
        st.success(progress.message)
    elif progress.state is JobState.CANCELLED:
        st.warning(progress.message)
    elif progress.state is JobState.FAILED:
        st.error(progress.message)
    else:
        st.info(progress.message)
    figure = training_curves_figure(
        progress.history, progress.batch_history, batches_per_epoch=progress.batches_per_epoch
    )
    for name, first_epoch, _ in boundaries or []:
        if first_epoch > 0:
            figure.add_vline(
                x=first_epoch + 0.5, line_dash="dot", line_color="#888",
                annotation_text=name, annotation_position="top left",
            )  # fmt: skip
    st.plotly_chart(figure, width="stretch", key=key)


def render_execution_plan(run: Run) -> None:
    """Says which training path ran (cached frozen prefix or plain fit) and why."""
    plan = getattr(run.job, "execution_plan", None)
    if plan is None:
        return
    icon = ":material/bolt:" if plan.cached else ":material/info:"
    st.caption(f"{icon} {escape_markdown(plan.message())}")


def render_run_summary(run: Run) -> None:
    """Shows what a run was: model, data, settings, freeze plan and parameter counts."""
    config = run.config
    frozen = sorted(path.split("/", 1)[-1] for path in run.frozen_paths if "/" in path)
    st.markdown(
        f"**{run.label}** · {run.model_title} on {run.dataset_title} · batch {config.batch_size}"
        f" · {config.optimizer} · validation {config.validation_fraction:.0%} · "
        f"{_format_count(run.counts.trainable)} trainable of "
        f"{_format_count(run.counts.total)} parameters"
    )
    shown = ", ".join(frozen[:12]) + (f" and {len(frozen) - 12} more" if len(frozen) > 12 else "")
    st.caption(f"Frozen flags at the start: {escape_markdown(shown) or 'none'}")
    render_execution_plan(run)


# -------------------------------------------------------------------------- 5 Drift
def render_verification(result: VerificationResult) -> None:
    """Shows the bitwise proof: a green banner, or a red alarm naming every changed layer."""
    if result.num_checked == 0:
        st.info(result.message())
    elif result.all_unchanged:
        st.success(result.message(), icon=":material/verified:")
    else:
        st.error(result.message(), icon=":material/gpp_bad:")


def render_drift(run: Run, *, live: bool = False) -> None:
    """Renders every drift view of a run: banner, lines, heatmap, final bars, state, table.

    Args:
        run: The run to show.
        live: True while the run trains (the proof is shown once it ends).
    """
    drift = run.job.drift_frame()
    if drift.empty:
        st.info("Drift appears here once training starts.")
        return
    if live:
        st.info(
            "Training is running: drift so far. The heatmap, final drift, BatchNorm state and "
            "the bitwise proof appear when it ends."
        )
    else:
        render_verification(run.job.verification())
    order = run.layer_order
    prefix = f"run{run.run_id}"
    many = drift.layer_path.nunique() > MAX_LINE_LAYERS
    lines = drift_lines_figure(
        drift, "weights", layer_order=order, max_layers=MAX_LINE_LAYERS if many else None
    )
    boundaries = run.job.phase_boundaries() if hasattr(run.job, "phase_boundaries") else []
    for name, _, first_step in boundaries:
        if first_step > 0:
            lines.add_vline(
                x=first_step, line_dash="dot", line_color="#888", annotation_text=name,
                annotation_position="top left",
            )  # fmt: skip
    st.plotly_chart(lines, width="stretch", key=f"{prefix}_drift_lines")
    if live:
        return  # keep live refreshes light: the training thread needs the CPU more
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            drift_heatmap_figure(drift, "weights", layer_order=order, depths=run.depths),
            width="stretch",
            key=f"{prefix}_drift_heatmap",
        )
    with right:
        st.plotly_chart(
            final_drift_bar_figure(drift, "weights", layer_order=order),
            width="stretch",
            key=f"{prefix}_drift_bars",
        )
    st.subheader("Non-trainable state (BatchNorm moving statistics)")
    st.plotly_chart(
        state_drift_figure(drift, layer_order=order), width="stretch", key=f"{prefix}_state"
    )
    st.subheader("Final drift per layer")
    table = final_drift_table(drift, layer_order=order)
    st.dataframe(table, hide_index=True, width="stretch")
    buffer = io.StringIO()
    drift.to_csv(buffer, index=False)
    st.download_button(
        "Download drift CSV (every record)",
        buffer.getvalue(),
        file_name=f"freezelab_run{run.run_id}_drift.csv",
        mime="text/csv",
        key=f"{prefix}_download_drift",
    )


# ----------------------------------------------------------------------- compare runs
def _last(history: Mapping[str, Sequence[float]], key: str) -> float | None:
    values = history.get(key) or []
    return float(values[-1]) if values else None


def comparison_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: settings, freeze plan size, parameter counts, final metrics, proof.

    Args:
        runs: Runs to compare.

    Returns:
        A DataFrame ready for display.
    """
    rows = []
    for run in runs:
        progress = run.job.progress()
        history = progress.history
        verification = run.job.verification() if run.job.recorder.started else None
        rows.append(
            {
                "Run": run.display_name,
                "Model": run.model_title,
                "Data": run.dataset_title,
                "Epochs": progress.epoch,
                "Learning rate": run.config.learning_rate,
                "Optimizer": run.config.optimizer,
                "Frozen flags": len(run.frozen_paths),
                "Trainable params": run.counts.trainable,
                "Total params": run.counts.total,
                "Train loss": _last(history, "loss"),
                "Train accuracy": _last(history, "accuracy"),
                "Validation loss": _last(history, "val_loss"),
                "Validation accuracy": _last(history, "val_accuracy"),
                "State": progress.state.value,
                "Frozen layers unchanged": (
                    None if verification is None else verification.all_unchanged
                ),
            }
        )
    return pd.DataFrame(rows)


def render_comparison(runs: Sequence[Run], *, disabled: bool) -> None:
    """Compares up to four runs of the session: names, settings, curves and final drift.

    Args:
        runs: The session's kept runs (oldest first).
        disabled: True while training runs (renaming waits).
    """
    ended = [run for run in runs if run.job.progress().done]
    if len(ended) < 2:
        st.info(
            "Finish two or more runs (for example the base frozen, then fine-tuned) to compare "
            "them here. The last four runs of the session are kept."
        )
        if not ended:
            return
    with st.expander("Name the runs", expanded=False):
        for run in ended:
            run.name = st.text_input(
                f"Name of run {run.run_id} ({run.label})",
                value=run.name,
                max_chars=40,
                disabled=disabled,
                key=f"run_name_{run.run_id}",
            )
    by_id = {run.run_id: run for run in ended}
    chosen = st.multiselect(
        "Runs to compare",
        list(by_id),
        default=list(by_id),
        format_func=lambda run_id: by_id[run_id].display_name,
        max_selections=4,
        key="compare_runs",
    )
    selected = [by_id[run_id] for run_id in chosen if run_id in by_id]
    if not selected:
        return
    st.dataframe(comparison_table(selected), hide_index=True, width="stretch")
    histories = {run.display_name: run.job.progress().history for run in selected}
    st.plotly_chart(comparison_curves_figure(histories), width="stretch", key="compare_curves")
    finals = {
        run.display_name: final_drift_table(run.job.drift_frame(), layer_order=run.layer_order)
        for run in selected
    }
    st.plotly_chart(
        comparison_drift_figure(finals, layer_order=selected[-1].layer_order),
        width="stretch",
        key="compare_drift",
    )


def render_stored_runs(stored: Sequence[Any]) -> None:
    """Shows runs kept on disk from earlier visits of this URL (after a refresh or reconnect).

    Args:
        stored: `models.run_store.StoredRun` records not held in memory any more.
    """
    if not stored:
        return
    st.subheader("Runs kept from earlier visits")
    st.caption(
        "Finished runs are saved on this server under the `session` id in the page address, so "
        "a refresh or reconnect keeps them. Old sessions are pruned when the folder grows."
    )
    rows = []
    for record in stored:
        last = {key: (values[-1] if values else None) for key, values in record.history.items()}
        verification = record.verification
        rows.append(
            {
                "Run": record.label,
                "Model": record.model_title,
                "Data": record.dataset_title,
                "State": record.state,
                "Trainable params": record.counts.trainable,
                "Total params": record.counts.total,
                "Validation accuracy": last.get("val_accuracy"),
                "Frozen layers unchanged": None
                if verification is None
                else verification.all_unchanged,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.plotly_chart(
        comparison_curves_figure({record.label: record.history for record in stored}),
        width="stretch",
        key="stored_curves",
    )
    st.plotly_chart(
        comparison_drift_figure(
            {
                record.label: final_drift_table(record.drift, layer_order=list(record.layer_order))
                for record in stored
            },
            layer_order=list(stored[-1].layer_order),
        ),
        width="stretch",
        key="stored_drift",
    )
