"""Step 3 · Data: where the data comes from, its numbers, class balance and samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from components.common import format_count
from components.state import escape_markdown, kept_widget, show_error
from models.checks import human_size
from models.limits import VALIDATION_FRACTION_RANGE
from models.splits import train_validation_split

DATA_SOURCES = ("Bundled (offline)", "keras.datasets", "Zip of class folders", "CSV table")


# --------------------------------------------------------------------------- 3 Data
def _thumbnail(image: np.ndarray, size: int = 72) -> Image.Image:
    """One image (uint8 pixels, or floats in [0, 1]) as a `size` x `size` picture."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels * 255.0, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(pixels).resize((size, size), Image.NEAREST)


def memory_text(dataset: Any) -> str:
    """What a dataset holds in memory, e.g. "In memory: 1.83 MiB, uint8 8×8×3".

    Args:
        dataset: An `ImageDataset` or `TabularDataset` (anything with `nbytes` and `x`).

    Returns:
        One line: the bytes of its arrays, the images' dtype and the shape of one sample.

    Example:
    >>> memory_text(load_bundled_dataset("digits_5_9"))
    'In memory: 236,544 bytes, float32 8×8×1'
    """
    shape = tuple(int(size) for size in dataset.x.shape[1:])
    sample = "×".join(str(size) for size in shape)
    if len(shape) == 1:
        sample = f"{shape[0]} features"
    return f"In memory: {human_size(dataset.nbytes)}, {dataset.x.dtype} {sample}"


def _image_size_help(max_stored_size: int | None) -> str:
    """The image-size control's help: what is stored, and what the choice changes."""
    if max_stored_size is None:
        limit = "the model's input size (8×8 for the bundled CNN)"
    else:
        limit = f"the model's input size, here {max_stored_size}×{max_stored_size}"
    return (
        f"Images are stored as uint8 pixels, at most at {limit}: the model would shrink "
        "larger images anyway, so a larger choice is stored at that size and costs no "
        "memory. A smaller choice makes the images coarser and saves memory."
    )


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
    max_stored_size: int | None = None,
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
            help=_image_size_help(max_stored_size),
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
    max_stored_size: int | None = None,
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
        max_stored_size: The largest image side an upload is stored at (the base's input
            size, `largest_useful_image_size(template.input_shape)`), for the image-size
            control's help; None when unknown.

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
            max_stored_size=max_stored_size,
        )
        if allow_change
        else None
    )
    st.markdown(f"**In use: {escape_markdown(dataset.title)}**")
    st.caption(f"{escape_markdown(dataset.description)} {memory_text(dataset)}.")
    if notes:
        with st.expander(f"Notes from loading ({len(notes)})", expanded=True):
            st.text("\n".join(notes))
    fraction = kept_widget(
        st.slider,
        "Validation split",
        default=float(validation_fraction),
        min_value=VALIDATION_FRACTION_RANGE[0],
        max_value=VALIDATION_FRACTION_RANGE[1],
        step=0.05,
        disabled=disabled,
        key="validation_fraction",
        help="Share of each class held out to measure accuracy on unseen data (stratified).",
    )
    num_validation = 0
    if fraction > 0:
        try:
            # The split of sample numbers: the same sizes and errors, no copy of the images.
            indices = np.arange(dataset.num_samples)
            _, _, x_validation, _ = train_validation_split(indices, dataset.y, fraction, 0)
            num_validation = len(x_validation)
        except ValueError as error:
            show_error(str(error))
    columns = st.columns(4)
    columns[0].metric("Classes", dataset.num_classes)
    columns[1].metric("Training samples", format_count(dataset.num_samples - num_validation))
    columns[2].metric("Validation samples", format_count(num_validation))
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
