"""Step 1 · Model: where the base model comes from, its card, and what the user asked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from components import state
from components.common import format_count
from components.state import escape_markdown, kept_widget, show_error
from models.catalogue import DEFAULT_MODEL, MODEL_CATALOGUE
from models.template import ModelTemplate

# ------------------------------------------------------------------------- 1 Model
MODEL_SOURCES = ("Bundled (offline)", "keras.applications", "Your own .keras / .h5 file")


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked of the model step.

    Attributes:
        kind: "bundled", "application", "application_random" (continue without ImageNet
            weights), "upload" (a new file), "cut" (use the uploaded model cut at a layer),
            or "reset" (restore the template's weights).
        key: Catalogue key: of the keras.applications model, or of the bundled model for
            "bundled" (a key of `models.catalogue.MODEL_CATALOGUE`; None means the default).
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
        columns[0].metric("Base parameters", format_count(template.num_params))
        columns[1].metric("Base layers", format_count(template.num_layers))
        columns[2].metric("Input size", " x ".join(str(s) for s in template.input_shape))


def _render_applications(
    applications: Mapping[str, Any], weights_error: str | None, *, disabled: bool
) -> ModelRequest | None:
    """The keras.applications picker: model, input size, ImageNet weights or not."""
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
    left.metric("Parameters (no top)", format_count(entry.num_params))
    middle.metric("Layers", format_count(entry.num_layers))
    size = kept_widget(
        right.selectbox,
        "Input size (px)",
        options=list(entry.input_sizes),
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
    request = None
    if st.button(f"Load {entry.title}", type="primary", disabled=disabled, key="load_app"):
        request = ModelRequest("application", key=key, input_size=int(size), pretrained=pretrained)
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
    return request


def _render_bundled(
    bundled: Mapping[str, str], current_key: str, *, disabled: bool
) -> ModelRequest | None:
    """The bundled models' picker (offline, pretrained on digits 0-4) and its button."""
    keys = list(bundled)
    key = kept_widget(
        st.selectbox,
        "Bundled model",
        options=keys,
        default=current_key if current_key in keys else DEFAULT_MODEL,
        format_func=lambda k: bundled[k],
        disabled=disabled,
        key="bundled_model_key",
    )
    if st.button("Use this bundled model", disabled=disabled, key="use_bundled_model"):
        return ModelRequest("bundled", key=key)
    return None


def _render_upload(uploaded: UploadedModelInfo | None, *, disabled: bool) -> ModelRequest | None:
    """The model file uploader, then the cut layer of the uploaded model."""
    upload = st.file_uploader(
        "A Keras model file (.keras, or legacy .h5); loaded in Keras's safe mode",
        type=["keras", "h5", "hdf5"],
        disabled=disabled,
        key="model_upload",
    )
    if upload is not None and state.first_sight("model_upload", upload.file_id):
        return ModelRequest("upload", data=upload.getvalue(), filename=upload.name)
    if uploaded is None:
        return None
    st.markdown(
        f"**{escape_markdown(uploaded.filename)}**: {uploaded.num_layers} layers, "
        f"{format_count(uploaded.num_params)} parameters"
    )
    cut = kept_widget(
        st.selectbox,
        "Last layer of the base (a new head replaces everything after it)",
        options=list(uploaded.cut_choices),
        default=uploaded.default_cut,
        disabled=disabled,
        key="cut_layer",
    )
    if st.button("Use as base model", type="primary", disabled=disabled, key="use_cut"):
        return ModelRequest("cut", filename=uploaded.filename, cut_layer=cut)
    return None


def render_model_step(
    template: ModelTemplate,
    applications: Mapping[str, Any],
    *,
    uploaded: UploadedModelInfo | None,
    weights_error: str | None,
    disabled: bool,
    allow_change: bool = True,
    allow_upload: bool = True,
    bundled: Mapping[str, str] = MODEL_CATALOGUE,
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
        bundled: Bundled model key -> menu title (default: `models.catalogue.MODEL_CATALOGUE`).

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
    if source == MODEL_SOURCES[0]:
        request = _render_bundled(bundled, template.key, disabled=disabled)
    elif source == MODEL_SOURCES[1]:
        request = _render_applications(applications, weights_error, disabled=disabled)
    elif source == MODEL_SOURCES[2]:
        request = _render_upload(uploaded, disabled=disabled)

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
