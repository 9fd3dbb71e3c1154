"""FreezeLab dashboard: routes the sidebar and the open tab to the step panels and the actions."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st

from components.warm_up import server_is_warm  # the standard library only

st.set_page_config(page_title="FreezeLab", page_icon="❄", layout="wide")
# Streamlit leaves 6rem above the main column for its header; the tabs start right under it.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>")
# Until the server is warm (TensorFlow, Keras, the bundled model: seconds after a start), say
# so at once; the page completes by itself.
warming = None if server_is_warm() else st.empty()
if warming is not None:
    warming.info("❄ FreezeLab is warming up TensorFlow and Keras (first visit after a start)...")

from components import actions, state, url_session  # noqa: E402  (the shell shows first)
from components.advisor_panel import render_advisor_panel  # noqa: E402
from components.common import live_or_static, render_totals, rerun_when_ended  # noqa: E402
from components.compare_step import render_comparison  # noqa: E402
from components.data_step import render_data_step  # noqa: E402
from components.drift_step import render_drift  # noqa: E402
from components.export_panel import render_export, render_share_link  # noqa: E402
from components.freeze_step import render_bulk_actions, render_freeze_legend  # noqa: E402
from components.layer_rates_panel import render_layer_rates_table  # noqa: E402
from components.layer_tree import render_layer_tree  # noqa: E402
from components.lessons import render_lessons  # noqa: E402
from components.lora_panel import render_lora_panel  # noqa: E402
from components.model_step import render_model_step  # noqa: E402
from components.pitfall_lab import render_pitfall_lab  # noqa: E402
from components.runtime import keep_keras_session  # noqa: E402
from components.train_step import (  # noqa: E402
    RunPanelSummary,
    render_run,
    render_run_panel,
    render_run_status,
)
from models.applications import APPLICATION_ENTRIES  # noqa: E402
from models.datasets import BUNDLED_DATASETS  # noqa: E402
from models.executor import LocalExecutor  # noqa: E402
from models.keras_datasets import KERAS_DATASETS  # noqa: E402
from models.layer_rates import layer_rates_frame  # noqa: E402
from models.snapshot import RunSnapshot  # noqa: E402
from models.transfer import describe_input_adaptation  # noqa: E402
from models.upload_tables import csv_columns  # noqa: E402
from models.workspace import Workspace  # noqa: E402

keep_keras_session()
if warming is not None:
    warming.empty()

LOGGER = logging.getLogger("freezelab")
REFRESH_SECONDS = 1.0
HEARTBEAT_SECONDS = 2.0  # the run status; also a sign of life where no socket can be seen
DRIFT_REFRESH_SECONDS = 2.5
TAB_LABELS = ("1 · Model", "2 · Freeze", "3 · Data", actions.TRAIN_TAB, "5 · Drift",
              "Compare runs", "Export", "Pitfall lab", "Lessons")  # fmt: skip
DATASET_TITLES = {key: title for key, (title, _) in BUNDLED_DATASETS.items()}


def sidebar(workspace: Workspace, training: bool) -> None:
    """The run panel: what is loaded, live counts, the training controls and their outcome."""
    defaults = actions.training_defaults()
    panel = render_run_panel(
        RunPanelSummary(
            workspace.template.title,
            workspace.dataset.title,
            workspace.base_path.rsplit("/", 1)[-1],
            workspace.tree.totals(),
            workspace.base_path,
        ),
        defaults,
        training=training,
        validation_fraction=state.setting("validation_fraction", defaults.validation_fraction),
        show_settings=not actions.preset().hides("settings"),
        all_frozen_warning=bool(state.get(state.ALL_FROZEN_WARNING)),
    )
    state.put(state.CHOSEN_CONFIG, panel.train.config)
    warned = bool(state.get(state.ALL_FROZEN_WARNING))
    started = actions.handle_training(workspace, panel.train, panel.all_frozen_choice)
    if started or panel.all_frozen_choice or bool(state.get(state.ALL_FROZEN_WARNING)) != warned:
        st.rerun()  # show the live run, or the warning's new state
    executor = workspace.executor
    if executor.name != "local" or executor.description != LocalExecutor().description:
        st.sidebar.caption(f"Training runs on {executor.description}")
    if training:
        with st.sidebar:
            live_or_static(lambda: heartbeat(workspace), True, every=HEARTBEAT_SECONDS)


def heartbeat(workspace: Workspace) -> None:
    """While a run trains: tells the server this page is open, and shows the run's status."""
    url_session.touch()
    run = workspace.latest_run
    progress = run.job.progress()
    render_run_status(run.display_name, progress)
    rerun_when_ended(run.run_id, progress.done)


def model_tab(workspace: Workspace, training: bool) -> None:
    link = actions.preset()
    state.show_notices("model")
    request = render_model_step(
        workspace.template,
        APPLICATION_ENTRIES,
        uploaded=state.get(state.UPLOADED_INFO),
        weights_error=state.get(state.WEIGHTS_MISSING),
        disabled=training,
        allow_change=not link.hides("model"),
        allow_upload=not link.hides("upload"),
    )
    if request is not None:
        actions.handle_model_request(workspace, request)
        st.rerun()


def freeze_tab(workspace: Workspace, training: bool) -> None:
    render_totals(workspace.tree.totals())
    if not actions.preset().hides("freeze"):
        tree = workspace.tree
        bulk = render_bulk_actions(
            tree.nodes(), workspace.base_path, tree.base_layer_paths(workspace.base_path),
            disabled=training,
        )  # fmt: skip
        if bulk is not None:
            workspace.bulk_action(bulk.plan)
            st.rerun()
    if training:
        st.info("The freeze plan is locked while training runs. Stop the run to change it.")
    nodes = workspace.tree.nodes()
    editable = not actions.preset().hides("freeze")
    if editable:
        default_budget, most = workspace.advisor_budget_bounds()
        advice = render_advisor_panel(workspace.advice, most, default_budget, disabled=training)
        if advice is not None:
            actions.handle_advisor(workspace, advice)
            st.rerun()
        lora = render_lora_panel(nodes, workspace.lora_target_counts(), disabled=training)
        if lora is not None:
            actions.handle_lora(workspace, lora)
            st.rerun()
    render_freeze_legend()
    key = actions.tree_key(workspace)
    wanted = render_layer_tree(
        nodes,
        key=key,
        on_change=actions.on_tree_change,
        on_lora_toggle=actions.on_tree_lora_toggle if editable and not training else None,
    )
    if wanted is not None and wanted != workspace.tree.frozen_paths() and not training:
        workspace.apply_plan(wanted)  # a plan set through session state (scripts, tests)
        st.rerun()


def data_tab(workspace: Workspace, training: bool) -> None:
    link = actions.preset()
    state.show_notices("data")
    request, _ = render_data_step(
        workspace.dataset,
        DATASET_TITLES,
        KERAS_DATASETS,
        state.setting("validation_fraction", actions.training_defaults().validation_fraction),
        notes=state.get(state.DATA_NOTES, []),
        csv_columns_of=csv_columns,
        disabled=training,
        allow_change=not link.hides("data"),
        allow_upload=not link.hides("upload"),
        model_input=getattr(describe_input_adaptation(workspace.model), "text", None),
        max_stored_size=actions.stored_image_size(workspace),
    )
    if request is not None:
        actions.handle_data_request(workspace, request)
        st.rerun()


def train_tab(workspace: Workspace, training: bool) -> None:
    if workspace.latest_run is None:
        st.info("Press **▶ Train** in the sidebar. Progress and live curves appear here.")
        layer_rates_preview(workspace)
        return
    if not training:
        layer_rates_preview(workspace)

    def view() -> None:
        snapshot = RunSnapshot.of(workspace.latest_run, include_drift=False)
        render_run(snapshot)
        rerun_when_ended(snapshot.run_id, snapshot.done)

    live_or_static(view, training, every=REFRESH_SECONDS)


def layer_rates_preview(workspace: Workspace) -> None:
    """The learning rate each layer will get with the chosen per-layer rates (if any)."""
    chosen = state.get(state.CHOSEN_CONFIG)
    if chosen is None or chosen.layer_rates is None:
        return
    try:
        frame = layer_rates_frame(chosen.layer_rates, workspace.tree, chosen.learning_rate)
    except ValueError as error:
        st.warning(f"The per-layer learning rates do not fit this model: {error}")
        return
    render_layer_rates_table(frame, key="layer_rates_preview")


def drift_tab(workspace: Workspace, training: bool) -> None:
    if workspace.latest_run is None:
        st.info(
            "After training, this step shows how far every layer moved, and proves that every "
            "frozen layer stayed bitwise unchanged."
        )
        return
    live_or_static(
        lambda: render_drift(RunSnapshot.of(workspace.latest_run)),
        training,
        every=DRIFT_REFRESH_SECONDS,
    )


def compare_tab(workspace: Workspace, training: bool) -> None:
    renames = render_comparison(actions.run_snapshots(workspace), disabled=training)
    if renames:
        actions.rename_runs(workspace, renames)
        st.rerun()  # every view shows the new names


def export_tab(workspace: Workspace, training: bool) -> None:
    state.show_notices("export")
    chosen = state.get(state.CHOSEN_CONFIG) or actions.training_defaults()
    link = actions.preset()
    restore = render_export(workspace, chosen, show_code=not link.hides("code"), training=training)
    if restore is not None:
        actions.handle_restore(workspace, restore.data)
        st.rerun()
    render_share_link(workspace, chosen, st.context.url or "http://localhost:8501/")


TABS = (model_tab, freeze_tab, data_tab, train_tab, drift_tab, compare_tab, export_tab,
        lambda *_: render_pitfall_lab(), lambda *_: render_lessons())  # fmt: skip


def main() -> None:
    """Draws the page: the sidebar's run panel, then the open tab (lazy tabs run one at a time)."""
    workspace = actions.open_workspace()
    training = workspace.is_training
    link = actions.preset()
    if link.title:
        st.header(link.title, anchor=False)
    if link.message:
        st.info(link.message)
    state.show_notices()
    sidebar(workspace, training)
    state.show_notices()  # what the run panel's actions just said (a run that could not start)
    # Lazy tabs: only the open tab's content runs, so a rerun costs one tab, not nine (30
    # people on one server), and a closed tab's live refresh does not run at all.
    tabs = st.tabs(TAB_LABELS, key=state.STEP_TAB, on_change="rerun")
    for tab, draw in zip(tabs, TABS, strict=True):
        if tab.open:
            with tab:
                draw(workspace, training)
    url_session.remember_session(workspace)


try:
    main()
except Exception as error:  # no traceback ever reaches a user
    LOGGER.exception("Unexpected error in the FreezeLab page")
    st.error(
        f"Something went wrong ({type(error).__name__}: {error}). Your model, plan and runs are "
        "kept; try the last action again, or reload the page."
    )
