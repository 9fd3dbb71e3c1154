"""FreezeLab dashboard: wires the Keras core (models/) to the Streamlit panels (components/)."""

import logging
import math
import os
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st

from components.export_panel import render_export, render_share_link
from components.layer_tree import frozen_plan_from_state, render_layer_tree
from components.lessons import render_lessons
from components.panels import (
    DataRequest,
    ModelRequest,
    UploadedModelInfo,
    download_progress,
    render_all_frozen_warning,
    render_bulk_actions,
    render_comparison,
    render_data_step,
    render_drift,
    render_freeze_legend,
    render_model_step,
    render_progress,
    render_run_summary,
    render_stored_runs,
    render_totals,
    render_training_controls,
    render_verification,
    show_error,
)
from components.pitfall_lab import render_pitfall_lab
from components.runtime import keep_keras_session
from components.state import notify, set_setting, setting, show_notices
from models.applications import APPLICATION_ENTRIES, WeightsUnavailableError
from models.catalogue import DEFAULT_MODEL, load_template
from models.datasets import (
    BUNDLED_DATASETS,
    DEFAULT_DATASET,
    ImageDataset,
    load_bundled_dataset,
)
from models.download import ProgressCallback
from models.export import parse_run_config, plan_from_config, run_config
from models.keras_datasets import KERAS_DATASETS, load_keras_dataset
from models.presets import Preset, parse_query, resolve_frozen_paths
from models.run_store import (
    SESSION_QUERY_PARAMETER,
    RunStore,
    StoredRun,
    is_valid_session_id,
    new_session_id,
)
from models.training import TrainingConfig, TrainingSlots
from models.transfer import describe_input_adaptation
from models.tree import LayerTree
from models.upload_data import (
    check_batch_fits,
    csv_columns,
    dense_base_template,
    load_csv_dataset,
    load_image_zip,
)
from models.upload_model import (
    cut_layer_choices,
    default_cut_layer,
    load_uploaded_model,
    uploaded_template,
)
from models.workspace import ModelTemplate, Workspace

keep_keras_session()

LOGGER = logging.getLogger("freezelab")
DEFAULT_CONFIG = TrainingConfig(epochs=3, batch_size=16, learning_rate=1e-2)
REFRESH_SECONDS = 1.0
DRIFT_REFRESH_SECONDS = 2.5
DRIFT_POINTS_PER_EPOCH = 5
ALL_FROZEN_KEY = "all_frozen_warning"  # True after Train was pressed with nothing trainable
TAB_KEY = "step_tab"  # session-state key of the open tab (tests and scripts may set it)
TAB_LABELS = ("1 · Model", "2 · Freeze", "3 · Data", "4 · Train", "5 · Drift", "Compare runs",
              "Export", "Pitfall lab", "Lessons")  # fmt: skip
TRAIN_TAB = TAB_LABELS[3]
DATASET_TITLES = {key: title for key, (title, _) in BUNDLED_DATASETS.items()}

st.set_page_config(page_title="FreezeLab", page_icon="❄", layout="wide")
# Streamlit leaves 6rem above the main column for its header; the tabs start right under it.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>")


# ------------------------------------------------------------------ shared, read-only
@st.cache_resource(show_spinner="Loading the base model...")
def cached_template(key: str) -> ModelTemplate:
    """One read-only template per base model for the whole server (config + weights)."""
    return load_template(key)


@st.cache_resource(show_spinner="Loading the dataset...")
def cached_dataset(key: str) -> ImageDataset:
    """One read-only copy of each bundled dataset for the whole server."""
    return load_bundled_dataset(key)


@st.cache_resource(show_spinner="Building the keras.applications model...", max_entries=12)
def cached_application(
    key: str, input_size: int, pretrained: bool, _on_progress: ProgressCallback | None = None
) -> ModelTemplate:
    """keras.applications templates, shared read-only (ImageNet weights from the Keras cache)."""
    return load_template(
        key, input_size=input_size, pretrained=pretrained, on_progress=_on_progress
    )


@st.cache_resource(show_spinner="Loading from the Keras cache...", max_entries=6)
def cached_keras_dataset(
    key: str, subset_size: int, _on_progress: ProgressCallback | None = None
) -> ImageDataset:
    """keras.datasets subsets, shared read-only (the underscore keeps the callback unhashed)."""
    return load_keras_dataset(key, subset_size, on_progress=_on_progress)


@st.cache_resource
def training_slots() -> TrainingSlots:
    """One limit on concurrent training jobs for the whole server (FREEZELAB_TRAINING_SLOTS)."""
    configured = os.environ.get("FREEZELAB_TRAINING_SLOTS", "").strip()
    return TrainingSlots(int(configured) if configured.isdigit() and int(configured) > 0 else None)


@st.cache_resource
def run_store() -> RunStore:
    """Finished runs on disk (FREEZELAB_RUNS_DIR, default ./runs), pruned by size."""
    return RunStore()


# ------------------------------------------------------------------------ per session
def workspace() -> Workspace:
    """This session's own model copy, plan and runs (created on first use, from the link)."""
    if "workspace" not in st.session_state:
        st.session_state.workspace = Workspace(
            cached_template(DEFAULT_MODEL), cached_dataset(DEFAULT_DATASET), slots=training_slots()
        )
        apply_preset(st.session_state.workspace)
        restore_stored_runs(st.session_state.workspace)
    return st.session_state.workspace


def session_id() -> str:
    """The id in the URL that keys this browser's runs on disk (created when missing)."""
    current = st.query_params.get(SESSION_QUERY_PARAMETER)
    if not current or not is_valid_session_id(current):
        current = new_session_id()
        st.query_params[SESSION_QUERY_PARAMETER] = current
    return current


def restore_stored_runs(current: Workspace) -> None:
    """After a refresh or reconnect: the runs this URL's session finished earlier."""
    try:
        stored, notices = run_store().load(session_id())
    except (OSError, ValueError) as error:
        stored, notices = [], [f"Earlier runs could not be read: {error}"]
    st.session_state.stored_runs = stored
    st.session_state.saved_run_ids = {run.run_id for run in stored}
    if stored:
        current.continue_run_ids_after(max(run.run_id for run in stored))
    if notices:
        notify(" ".join(notices))


def save_finished_runs(current: Workspace) -> None:
    """Keeps every run that has ended on disk once, so a refresh does not lose it."""
    saved: set[int] = st.session_state.setdefault("saved_run_ids", set())
    for run in current.runs:
        if run.run_id in saved or not run.job.progress().done:
            continue
        saved.add(run.run_id)
        try:
            record = StoredRun.from_run(
                run,
                run_config(
                    current.template,
                    current.dataset.name,
                    run.dataset_title,
                    run.frozen_paths,
                    run.config,
                    run.counts,
                    run_id=run.run_id,
                ),
            )
            run_store().save(session_id(), record)
            run_store().prune(keep=session_id())
        except (OSError, ValueError, TypeError) as error:
            LOGGER.warning("Could not keep run %s on disk: %s", run.run_id, error)


def apply_preset(current: Workspace) -> None:
    """Applies an instructor link's query parameters; invalid ones are ignored with a notice."""
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    preset, notices = parse_query(params)
    st.session_state.preset = preset
    if preset.is_empty:
        for notice in notices:
            notify(notice)
        return
    try:
        if preset.model is not None and preset.model != DEFAULT_MODEL:
            current.set_template(
                cached_application(
                    preset.model,
                    preset.input_size or APPLICATION_ENTRIES[preset.model].default_input_size,
                    preset.pretrained is not False,
                )
            )
    except (ValueError, TypeError, KeyError) as error:
        notices.append(f"The link's model could not be loaded: {error}")
    try:
        if preset.dataset is not None and preset.dataset != current.dataset.name:
            current.set_dataset(cached_dataset(preset.dataset))
    except (ValueError, TypeError) as error:
        notices.append(f"The link's dataset could not be used: {error}")
    try:
        action = preset.freeze_action()
        if action is not None:
            current.bulk_action(*action)
        else:
            plan, plan_notices = resolve_frozen_paths(preset, current.tree)
            notices.extend(plan_notices)
            if plan is not None:
                current.apply_plan(plan)
                current.revision += 1
    except (ValueError, TypeError) as error:
        notices.append(f"The link's freeze plan could not be applied: {error}")
    st.session_state.training_defaults = preset.training_config(DEFAULT_CONFIG)
    set_setting("validation_fraction", st.session_state.training_defaults.validation_fraction)
    for notice in notices:
        notify(notice)


def preset() -> Preset:
    """The instructor link of this session (empty when there was none)."""
    return st.session_state.get("preset") or Preset()


def training_defaults() -> TrainingConfig:
    """Settings shown first: the app's, a link's, or a restored config's."""
    return st.session_state.get("training_defaults") or DEFAULT_CONFIG


def tree_key(current: Workspace) -> str:
    """The tree component's key: a new one whenever something else changed the flags."""
    return f"layer_tree_{current.revision}"


def on_tree_change() -> None:
    """Applies the plan the user ticked in the tree, before the script draws the page."""
    current = workspace()
    try:
        plan = frozen_plan_from_state(st.session_state.get(tree_key(current)))
        if plan is not None:
            current.apply_plan(plan)
    except (TypeError, ValueError, RuntimeError) as error:
        notify(str(error))
        current.revision += 1  # remount the tree on the model's real flags


def handle_model_request(current: Workspace, request: ModelRequest) -> None:
    """Carries out the model step's request; errors are kept to show, the work stays."""
    st.session_state.model_error = None
    try:
        if request.kind == "bundled":
            current.set_template(cached_template(DEFAULT_MODEL))
        elif request.kind in ("application", "application_random"):
            st.session_state.weights_error = None
            try:
                template = cached_application(
                    request.key, request.input_size, request.pretrained, download_progress()
                )
            except WeightsUnavailableError as error:
                st.session_state.weights_error = str(error)
                return
            current.set_template(template)
        elif request.kind == "upload":
            model = load_uploaded_model(request.data, request.filename)
            st.session_state.uploaded_model = (request.filename, model)
            st.session_state.uploaded_info = UploadedModelInfo(
                filename=request.filename,
                num_layers=len(model.layers),
                num_params=LayerTree(model).totals().total,
                cut_choices=tuple(cut_layer_choices(model)),
                default_cut=default_cut_layer(model),
            )
        elif request.kind == "cut":
            filename, model = st.session_state.uploaded_model
            current.set_template(uploaded_template(model, request.cut_layer, filename))
        elif request.kind == "reset":
            current.reset_weights()
    except (ValueError, TypeError, RuntimeError) as error:
        st.session_state.model_error = str(error)


def handle_data_request(current: Workspace, request: DataRequest) -> None:
    """Carries out the data step's request, switching to a fitting base model if needed."""
    st.session_state.data_error = None
    try:
        notes: list[str] = []
        if request.kind == "bundled":
            dataset = cached_dataset(request.key)
        elif request.kind == "keras":
            dataset = cached_keras_dataset(
                request.key, request.subset_size, download_progress()
            )
        elif request.kind == "zip":
            dataset, notes = load_image_zip(
                request.data, image_size=request.image_size, filename=request.filename
            )
        else:
            dataset, notes = load_csv_dataset(
                request.data, request.label_column, filename=request.filename
            )
        tabular_data = len(dataset.input_shape) == 1
        tabular_model = len(current.template.input_shape) == 1
        if tabular_data:
            current.configure(dense_base_template(dataset), dataset)
            notes = [*notes, "Base model: a new Dense base for these features (step 1)."]
        elif tabular_model:
            current.configure(cached_template(DEFAULT_MODEL), dataset)
            notes = [*notes, "Base model switched to the bundled digits CNN: the Dense base "
                     "only takes tables."]  # fmt: skip
        else:
            current.set_dataset(dataset)
        st.session_state.data_notes = list(notes)
    except (ValueError, TypeError, RuntimeError) as error:
        st.session_state.data_error = str(error)


def handle_restore(current: Workspace, data: bytes) -> None:
    """Restores a freeze plan and settings from an uploaded run config."""
    try:
        config = parse_run_config(data)
        plan, notices = plan_from_config(config, current.tree, template_key=current.template.key)
        current.apply_plan(plan)
        current.revision += 1  # remount the tree on the restored flags
        st.session_state.training_defaults = config.training
        set_setting("validation_fraction", config.training.validation_fraction)
        notify("Restored the freeze plan and settings.", "success")
        for notice in notices:
            notify(notice)
    except (ValueError, TypeError, RuntimeError) as error:
        st.session_state.export_error = str(error)


def live_ids(current: Workspace) -> set[int]:
    """Run ids of the runs held in memory (the rest are only on disk)."""
    return {run.run_id for run in current.runs}


def live_or_static(function, live: bool, every: float = REFRESH_SECONDS) -> None:
    """Runs `function` as an auto-refreshing fragment while training, else once."""
    if live:
        st.fragment(run_every=every)(function)()
    else:
        function()


def rerun_when_run_ends(current: Workspace) -> None:
    """From a fragment: one full rerun when the latest run has just ended."""
    run = current.latest_run
    if (
        run is not None
        and run.job.progress().done
        and st.session_state.get("ended_run_shown") != run.run_id
    ):
        st.session_state.ended_run_shown = run.run_id
        st.rerun()


def with_drift_resolution(config: TrainingConfig, num_samples: int) -> TrainingConfig:
    """Records drift about DRIFT_POINTS_PER_EPOCH times an epoch, so curves show the motion."""
    num_train = num_samples * (1 - config.validation_fraction)
    batches = max(1, math.ceil(num_train / config.batch_size))
    return replace(config, drift_every_batches=max(1, batches // DRIFT_POINTS_PER_EPOCH))


# ----------------------------------------------------------------------------- page
def main() -> None:
    """Draws the page: sidebar run panel, then the five steps as tabs."""
    current = workspace()
    training = current.is_training
    save_finished_runs(current)
    link = preset()
    if link.title:
        st.header(link.title, anchor=False)
    if link.message:
        st.info(link.message)
    show_notices()

    with st.sidebar:
        st.title("❄ FreezeLab")
        st.caption("Freeze layers, train, and see which weights moved.")
        totals = current.tree.totals()
        st.markdown(
            f"**Model** {current.template.title}  \n**Data** {current.dataset.title}  \n"
            f"**Trainable** {totals.trainable:,} of {totals.total:,} parameters "
            f"({totals.trainable_fraction:.1%})"
        )
        st.subheader("4 · Train")
        intent = render_training_controls(
            training_defaults(),
            training=training,
            show_settings=not link.hides("settings"),
            validation_fraction=setting(
                "validation_fraction", training_defaults().validation_fraction
            ),
        )
    if intent.stop:
        current.stop()
    start = intent.start
    if start and not intent.phases and current.tree.totals().trainable == 0:
        st.session_state[ALL_FROZEN_KEY] = True  # say so instead of a fit that changes nothing
        start = False
    if st.session_state.get(ALL_FROZEN_KEY) and not training:
        with st.sidebar:
            choice = render_all_frozen_warning(current.base_path.rsplit("/", 1)[-1])
        if choice is not None:
            st.session_state[ALL_FROZEN_KEY] = False
            if choice != "fix":
                st.rerun()  # the warning goes at once
            current.bulk_action("unfreeze_all")
            current.bulk_action("freeze_base")
            start = True
    if current.tree.totals().trainable > 0:
        st.session_state[ALL_FROZEN_KEY] = False
    if start and intent.config is not None:
        config = intent.config
        fit = check_batch_fits(
            current.dataset.num_samples, config.batch_size, config.validation_fraction
        )
        if fit.reduced:
            config = replace(config, batch_size=fit.batch_size)
            notify(fit.message)
        try:
            config = with_drift_resolution(config, current.dataset.num_samples)
            if intent.phases:
                current.start_schedule(intent.phases, config)
            else:
                current.start_run(config)
        except (ValueError, RuntimeError) as error:
            show_error(f"Training could not start: {error}")
        else:
            st.session_state[TAB_KEY] = TRAIN_TAB  # show the live progress
            st.rerun()

    # Lazy tabs: only the open tab's content runs, so a rerun costs one tab, not nine (30
    # people on one server), and a closed tab's live refresh does not run at all.
    tabs = st.tabs(TAB_LABELS, key=TAB_KEY, on_change="rerun")
    (model_tab, freeze_tab, data_tab, train_tab, drift_tab, compare_tab, export_tab) = tabs[:7]
    pitfall_tab, lessons_tab = tabs[7:]
    with model_tab:
        if model_tab.open:
            if st.session_state.get("model_error"):
                show_error(st.session_state.model_error)
            model_request = render_model_step(
                current.template,
                APPLICATION_ENTRIES,
                uploaded=st.session_state.get("uploaded_info"),
                weights_error=st.session_state.get("weights_error"),
                disabled=training,
                allow_change=not link.hides("model"),
                allow_upload=not link.hides("upload"),
            )
            if model_request is not None:
                handle_model_request(current, model_request)
                st.rerun()

    with freeze_tab:
        if freeze_tab.open:
            render_totals(current.tree.totals())
            bulk = None
            if not link.hides("freeze"):
                bulk = render_bulk_actions(
                    current.tree.nodes(),
                    current.base_path,
                    current.tree.base_layer_paths(current.base_path),
                    disabled=training,
                )
            if bulk is not None:
                current.bulk_action(bulk.action, bulk.argument)
                st.rerun()
            if training:
                st.info("The freeze plan is locked while training runs. Stop the run to change it.")
            render_freeze_legend()
            wanted = render_layer_tree(
                current.tree.nodes(), key=tree_key(current), on_change=on_tree_change
            )
            if wanted is not None and wanted != current.tree.frozen_paths() and not training:
                # A plan set through session state (scripts, tests) rather than a click.
                current.apply_plan(wanted)
                st.rerun()

    with data_tab:
        if data_tab.open:
            if st.session_state.get("data_error"):
                show_error(st.session_state.data_error)
            data_request, _ = render_data_step(
                current.dataset,
                DATASET_TITLES,
                KERAS_DATASETS,
                setting("validation_fraction", training_defaults().validation_fraction),
                notes=st.session_state.get("data_notes", []),
                csv_columns_of=csv_columns,
                disabled=training,
                allow_change=not link.hides("data"),
                allow_upload=not link.hides("upload"),
                model_input=getattr(describe_input_adaptation(current.model), "text", None),
            )
            if data_request is not None:
                handle_data_request(current, data_request)
                st.rerun()

    with train_tab:
        if train_tab.open:
            if current.latest_run is None:
                st.info("Press **▶ Train** in the sidebar. Progress and live curves appear here.")
            else:

                def train_view() -> None:
                    run = current.latest_run
                    render_run_summary(run)
                    boundaries = (
                        run.job.phase_boundaries() if hasattr(run.job, "phase_boundaries") else None
                    )
                    render_progress(
                        run.job.progress(), key=f"run{run.run_id}_curves", boundaries=boundaries
                    )
                    if run.job.progress().done and run.job.recorder.started:
                        render_verification(run.job.verification())
                        st.caption("Every layer's drift and the full proof: step **5 · Drift**.")
                    rerun_when_run_ends(current)

                live_or_static(train_view, training)

    with drift_tab:
        if drift_tab.open:
            if current.latest_run is None:
                st.info(
                    "After training, this step shows how far every layer moved, and proves that "
                    "every frozen layer stayed bitwise unchanged."
                )
            else:

                def drift_view() -> None:
                    run = current.latest_run
                    render_drift(run, live=not run.job.progress().done)

                live_or_static(drift_view, training, every=DRIFT_REFRESH_SECONDS)

    with compare_tab:
        if compare_tab.open:
            render_comparison(current.runs, disabled=training)
            render_stored_runs(
                [
                    r
                    for r in st.session_state.get("stored_runs", [])
                    if r.run_id not in live_ids(current)
                ]
            )
    with export_tab:
        if export_tab.open:
            if st.session_state.get("export_error"):
                show_error(st.session_state.pop("export_error"))
            chosen = intent.config or training_defaults()
            restore = render_export(
                current, chosen, show_code=not link.hides("code"), training=training
            )
            if restore is not None:
                handle_restore(current, restore.data)
                st.rerun()
            render_share_link(current, chosen, st.context.url or "http://localhost:8501/")
    with pitfall_tab:
        if pitfall_tab.open:
            render_pitfall_lab()
    with lessons_tab:
        if lessons_tab.open:
            render_lessons()


try:
    main()
except Exception as error:  # no traceback ever reaches a user
    LOGGER.exception("Unexpected error in the FreezeLab page")
    st.error(
        f"Something went wrong ({type(error).__name__}: {error}). Your model, plan and runs are "
        "kept; try the last action again, or reload the page."
    )
