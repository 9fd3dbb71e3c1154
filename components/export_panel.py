"""The Export step: Keras code for the current set-up, downloads, config restore, share links."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from components import state
from components.state import escape_markdown, show_error
from models.export import (
    BASE_MODEL_BUTTON,
    base_model_file,
    download_file_name,
    drift_csv_bytes,
    generate_code,
    model_file_bytes,
    run_config,
    run_config_bytes,
)
from models.presets import HIDEABLE_CONTROLS, preset_for, preset_link
from models.training import TrainingConfig
from models.workspace import Workspace


@dataclass(frozen=True)
class RestoreRequest:
    """A run config JSON the user uploaded to restore a plan and settings (raw bytes)."""

    data: bytes
    filename: str


def render_export(
    workspace: Workspace,
    config: TrainingConfig,
    *,
    show_code: bool,
    training: bool,
) -> RestoreRequest | None:
    """Renders "Show code", the downloads and the config upload.

    Args:
        workspace: The session's workspace (model, plan, dataset, runs).
        config: The training settings currently chosen.
        show_code: False when an instructor's link hides the code.
        training: True while a run trains (the model file waits for the end).

    Returns:
        A `RestoreRequest` when a config file was uploaded, else None.
    """
    template, dataset, tree = workspace.template, workspace.dataset, workspace.tree
    plan = tree.frozen_paths()
    base_file = base_model_file(template)
    if show_code:
        st.markdown(
            "**Keras code for this set-up**: the same model (layer names included), freeze "
            "plan and training settings, to run outside FreezeLab."
        )
        try:
            code = generate_code(
                template,
                dataset.input_shape,
                dataset.num_classes,
                plan,
                config,
                dataset_key=dataset.name,
                tree=tree,
            )
        except (ValueError, TypeError) as error:
            show_error(f"The code could not be generated: {error}")
        else:
            st.code(code, language="python")
            st.download_button(
                "Download the code (.py)",
                code,
                file_name="freezelab_setup.py",
                mime="text/x-python",
                key="download_code",
            )
            if base_file is not None:
                st.caption(
                    "The script loads the pretrained base from "
                    f"**{escape_markdown(base_file.name)}** in its own folder: download it below "
                    f"with **{BASE_MODEL_BUTTON}** and put it next to the script."
                )
    run = workspace.latest_run
    st.markdown("**Downloads**")
    columns = st.columns(4)
    configuration = run_config(
        template,
        dataset.name,
        dataset.title,
        plan,
        config,
        tree.totals(),
        run_id=run.run_id if run else None,
        adapters=workspace.lora_plan(),
    )
    columns[0].download_button(
        "Run config (.json)",
        run_config_bytes(configuration),
        file_name=download_file_name("config", run.run_id if run else None),
        mime="application/json",
        key="download_config",
        help="Model, dataset, freeze plan, LoRA adapters and settings; upload it later to "
        "restore them.",
    )
    model: Callable[[], bytes] = lambda: model_file_bytes(workspace.model)  # noqa: E731
    columns[1].download_button(
        "Trained model (.keras)",
        model,
        file_name=download_file_name("model", run.run_id if run else None),
        mime="application/octet-stream",
        disabled=training,
        key="download_model",
    )
    if base_file is not None:
        columns[3].download_button(
            BASE_MODEL_BUTTON,
            base_file.read_bytes,
            file_name=base_file.name,
            mime="application/octet-stream",
            key="download_base_model",
            help="The pretrained base the exported script loads: put it next to the script.",
        )
    if run is not None:
        columns[2].download_button(
            "Drift of the latest run (.csv)",
            lambda: drift_csv_bytes(run.job.drift_frame()),
            file_name=download_file_name("drift", run.run_id),
            mime="text/csv",
            key="download_drift_export",
        )
    st.markdown("**Restore a freeze plan, LoRA adapters and settings**")
    upload = st.file_uploader(
        "A FreezeLab run config (.json)", type=["json"], disabled=training, key="config_upload"
    )
    if upload is not None and state.first_sight("config_upload", upload.file_id):
        return RestoreRequest(upload.getvalue(), upload.name)
    return None


def render_share_link(workspace: Workspace, config: TrainingConfig, base_url: str) -> None:
    """Builds an instructor link that opens FreezeLab on this model, data, plan and settings.

    Args:
        workspace: The session's workspace.
        config: The training settings to share.
        base_url: The app's address as the learners reach it.
    """
    st.markdown("**Share this set-up with a room** (an instructor link)")
    hidden = st.multiselect(
        "Hide these controls for learners",
        sorted(HIDEABLE_CONTROLS),
        key="share_hidden",
        help="Like TensorFlow Playground: learners start from the same screen with fewer knobs.",
    )
    title = st.text_input("Title shown to the room", max_chars=120, key="share_title")
    message = st.text_input("Message shown to the room", max_chars=500, key="share_message")
    preset, notices = preset_for(
        workspace.template.key,
        workspace.dataset.name,
        tree=workspace.tree,
        config=config,
        hidden=hidden,
        title=title,
        message=message,
    )
    for notice in notices:
        st.caption(escape_markdown(notice))
    st.code(preset_link(preset, base_url), language=None)
