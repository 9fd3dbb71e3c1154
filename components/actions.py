"""What the dashboard does with the user's intent: each handler takes the workspace and a request.

The step panels only draw and return plain requests; these functions carry them out on the
session's `Workspace`, keep what must be shown (notices, errors, notes) through
`components.state`, and never draw anything themselves, except a download's progress bar. Bad
input never loses work: a handler that fails leaves the model, plan and runs as they were and
says why. Each handler is importable and tested on its own (tests/test_actions.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace

import streamlit as st

from components import state, url_session
from components.advisor_panel import APPLY_TOP_N, PROBE, AdvisorIntent
from components.common import count_progress, download_progress
from components.data_step import DataRequest
from components.layer_tree import frozen_plan_from_state, lora_toggle_from_state
from components.lora_panel import REMOVE_ALL, LoraIntent, chosen_setting
from components.model_step import ModelRequest, UploadedModelInfo
from components.resources import (
    cached_application,
    cached_dataset,
    cached_keras_dataset,
    cached_template,
    session_registry,
)
from components.train_step import TrainIntent
from models.applications import APPLICATION_ENTRIES, WeightsUnavailableError
from models.catalogue import BUNDLED_MODEL_KEYS, DEFAULT_MODEL
from models.datasets import ImageDataset
from models.dense_base import dense_base_template
from models.export import (
    lora_from_config,
    parse_run_config,
    plan_from_config,
    training_from_config,
)
from models.plans import FreezePlan, PlanKind
from models.presets import (
    Preset,
    parse_query,
    resolve_frozen_paths,
    resolve_layer_rates,
    resolve_lora,
)
from models.session_record import DataSource
from models.sessions import dataset_bytes
from models.snapshot import RunSnapshot
from models.splits import check_batch_fits
from models.training import TrainingConfig
from models.tree import LayerTree
from models.upload_images import largest_useful_image_size, load_image_zip
from models.upload_model import (
    cut_layer_choices,
    default_cut_layer,
    load_uploaded_model,
    uploaded_template,
)
from models.upload_tables import TabularDataset, load_csv_dataset
from models.workspace import Workspace

LOGGER = logging.getLogger("freezelab")
DEFAULT_CONFIG = TrainingConfig(epochs=3, batch_size=16, learning_rate=1e-2)
DRIFT_POINTS_PER_EPOCH = 5
TRAIN_TAB = url_session.TRAIN_TAB
FAILURES = (ValueError, TypeError, RuntimeError)  # what bad input raises in the core


# ------------------------------------------------------------------------ the session
session_id = url_session.session_id
preset = url_session.preset


def open_workspace() -> Workspace:
    """This session's own model copy, plan and runs, found again after a refresh.

    Returns:
        The session's `Workspace` (see `components.url_session.open_workspace`); a new one
        starts on the bundled model and data, then takes the instructor link's settings.
    """
    return url_session.open_workspace(apply_preset)


def training_defaults() -> TrainingConfig:
    """Settings shown first: the app's, a link's, or a restored config's."""
    return state.get(state.TRAINING_DEFAULTS) or DEFAULT_CONFIG


def set_training_defaults(config: TrainingConfig) -> None:
    """Makes `config` the settings the controls show (the split included)."""
    state.put(state.TRAINING_DEFAULTS, config)
    state.set_setting("validation_fraction", config.validation_fraction)


def apply_preset(workspace: Workspace, params: Mapping[str, list[str]]) -> None:
    """Applies an instructor link's query parameters; invalid ones are ignored with a notice.

    Args:
        workspace: The session's workspace.
        params: The page address's query parameters, name -> values.
    """
    link, notices = parse_query(params)
    state.put(state.PRESET, link)
    if not link.is_empty:
        notices.extend(_apply_link_choices(workspace, link))
        rates, rate_notices = resolve_layer_rates(link, workspace.tree)
        notices.extend(rate_notices)
        try:
            config = replace(link, layer_rates=rates).training_config(DEFAULT_CONFIG)
        except ValueError as error:  # the rates are too high for the default learning rate
            notices.append(f"The link's per-layer learning rates were left out: {error}")
            config = replace(link, layer_rates=None).training_config(DEFAULT_CONFIG)
        set_training_defaults(config)
    for notice in notices:
        state.notify(notice)


def _apply_link_choices(workspace: Workspace, link: Preset) -> list[str]:
    """Model, dataset, LoRA adapters and plan of a link; returns why any could not be used."""
    notices: list[str] = []
    try:
        if link.model in BUNDLED_MODEL_KEYS and link.model != DEFAULT_MODEL:
            workspace.set_template(cached_template(link.model))
        elif link.model is not None and link.model != DEFAULT_MODEL:
            size = link.input_size or APPLICATION_ENTRIES[link.model].default_input_size
            workspace.set_template(
                cached_application(link.model, size, link.pretrained is not False)
            )
    except (*FAILURES, KeyError) as error:
        notices.append(f"The link's model could not be loaded: {error}")
    try:
        if link.dataset is not None and link.dataset != workspace.dataset.name:
            workspace.set_dataset(cached_dataset(link.dataset))
    except FAILURES as error:
        notices.append(f"The link's dataset could not be used: {error}")
    notices.extend(_apply_link_lora(workspace, link))
    try:
        named = link.freeze_plan()
        if named is not None:
            workspace.bulk_action(named)
        else:
            plan, plan_notices = resolve_frozen_paths(link, workspace.tree)
            notices.extend(plan_notices)
            if plan is not None:
                workspace.apply_plan(plan)
    except FAILURES as error:
        notices.append(f"The link's freeze plan could not be applied: {error}")
    return notices


def _apply_link_lora(workspace: Workspace, link: Preset) -> list[str]:
    """A link's LoRA adapters (recipes and layers); returns why any could not be used."""
    try:
        adapters, notices = resolve_lora(link, workspace.tree, workspace.base_path)
        if adapters is not None:
            workspace.set_lora(adapters)
    except FAILURES as error:
        return [f"The link's LoRA adapters could not be applied: {error}"]
    return notices


# ------------------------------------------------------------------------------- runs
def run_snapshots(workspace: Workspace) -> list[RunSnapshot]:
    """Every run of this session as snapshots: kept on disk from earlier visits, then live.

    Returns:
        Snapshots ordered by run id; a run held in memory is read live, not from disk.
    """
    live = {run.run_id: RunSnapshot.of(run) for run in workspace.runs}
    stored = [run for run in state.get(state.STORED_RUNS, []) if run.run_id not in live]
    return sorted([*stored, *live.values()], key=lambda snapshot: snapshot.run_id)


def rename_runs(workspace: Workspace, renames: Mapping[int, str]) -> None:
    """Gives runs the names the user typed, live runs and runs kept on disk alike.

    Args:
        workspace: The session's workspace.
        renames: Run id -> new name.
    """
    if not renames:
        return
    identifier = session_id()
    for run in workspace.runs:
        if run.run_id in renames:
            run.name = renames[run.run_id]  # a run still training is saved with it when it ends
            if run.ending is not None:
                snapshot = RunSnapshot.of(run, workspace.run_config(run))
                url_session.keep_snapshot(identifier, snapshot)
    stored = state.get(state.STORED_RUNS, [])
    for index, snapshot in enumerate(stored):
        if snapshot.run_id in renames:
            stored[index] = replace(snapshot, name=renames[snapshot.run_id])
            url_session.keep_snapshot(identifier, stored[index])


# ------------------------------------------------------------------------------ steps
def tree_key(workspace: Workspace) -> str:
    """The tree component's key: a new one whenever something else changed the flags."""
    return f"layer_tree_{workspace.revision}"


def on_tree_change() -> None:
    """Applies the plan the user ticked in the tree, before the script draws the page."""
    workspace = open_workspace()
    try:
        plan = frozen_plan_from_state(state.get(tree_key(workspace)))
        if plan is not None:
            workspace.apply_plan(plan, from_tree=True)
    except FAILURES as error:
        state.notify(str(error))
        workspace.refresh_views()  # remount the tree on the model's real flags


def on_tree_lora_toggle() -> None:
    """Adds or removes the LoRA adapter of the layer whose chip was clicked in the tree.

    A layer without an adapter gets one with the rank and alpha the LoRA panel shows; a layer
    with one loses it (what it learned is merged into its kernel).
    """
    workspace = open_workspace()
    try:
        path = lora_toggle_from_state(state.get(tree_key(workspace)))
        if path is None:
            return
        adapted = path in workspace.lora_plan()
        workspace.set_layer_lora(path, None if adapted else chosen_setting())
        workspace.refresh_views()
    except FAILURES as error:
        state.notify(f"LoRA was not changed: {error}")
        workspace.refresh_views()


def handle_lora(workspace: Workspace, intent: LoraIntent) -> None:
    """Carries out a LoRA panel button: a bulk recipe, or removing every adapter.

    An error (a layer Keras cannot adapt, a run training) is shown; nothing changes then.
    """
    try:
        if intent.recipe == REMOVE_ALL:
            workspace.set_lora({})
            state.notify("Removed every LoRA adapter; what they learned is merged into the "
                         "kernels.", "success")  # fmt: skip
            return
        count = workspace.lora_bulk(intent.recipe, intent.setting)
        state.notify(f"{intent.setting} on {count} layer(s).", "success")
    except FAILURES as error:
        state.notify(f"LoRA was not changed: {error}")


def handle_advisor(workspace: Workspace, intent: AdvisorIntent) -> None:
    """Carries out an advisor button: rank the layers, or apply a plan to the tree.

    An error (data the model cannot take, a run training, a backend without gradients) is
    shown; the plan and the kept advice do not change then.
    """
    try:
        if intent.action == PROBE:
            with st.spinner("Probing a few batches with everything trainable..."):
                advice = workspace.advise(intent.budget)
            state.notify(f"Ranked {len(advice.ranking)} units of the base.", "success")
            return
        plan = workspace.apply_advice(top_n=intent.action == APPLY_TOP_N)
        state.notify(f"Applied: {plan.message()}", "success")
    except (*FAILURES, NotImplementedError) as error:
        state.notify(f"The advisor could not do that: {error}")


def handle_model_request(workspace: Workspace, request: ModelRequest) -> None:
    """Carries out the model step's request; an error is shown in that step, the work stays.

    Args:
        workspace: The session's workspace.
        request: What the user asked (see `ModelRequest`).
    """
    state.clear_notices("model")
    try:
        if request.kind == "bundled":
            workspace.set_template(cached_template(request.key or DEFAULT_MODEL))
        elif request.kind in ("application", "application_random"):
            _load_application(workspace, request)
        elif request.kind == "upload":
            with st.spinner("Checking and loading the model file (safe mode)..."):
                _read_upload(request)
            url_session.keep_upload("model", request.data)
        elif request.kind == "cut":
            filename, model = state.get(state.UPLOADED_MODEL)
            with st.spinner("Building the base model from your file..."):
                workspace.set_template(uploaded_template(model, request.cut_layer, filename))
        elif request.kind == "reset":
            workspace.reset_weights()
    except FAILURES as error:
        state.notify(str(error), "error", place="model")


def _load_application(workspace: Workspace, request: ModelRequest) -> None:
    state.pop(state.WEIGHTS_MISSING)
    try:
        template = cached_application(
            request.key, request.input_size, request.pretrained, download_progress()
        )
    except WeightsUnavailableError as error:
        state.put(state.WEIGHTS_MISSING, str(error))  # the step offers random initialisation
        return
    workspace.set_template(template)


def _read_upload(request: ModelRequest) -> None:
    model = load_uploaded_model(request.data, request.filename)
    state.put(state.UPLOADED_MODEL, (request.filename, model))
    state.put(
        state.UPLOADED_INFO,
        UploadedModelInfo(
            filename=request.filename,
            num_layers=len(model.layers),
            num_params=LayerTree(model).totals().total,
            cut_choices=tuple(cut_layer_choices(model)),
            default_cut=default_cut_layer(model),
        ),
    )


def handle_data_request(workspace: Workspace, request: DataRequest) -> None:
    """Carries out the data step's request, switching to a fitting base model if needed.

    Args:
        workspace: The session's workspace.
        request: What the user asked (see `DataRequest`).
    """
    state.clear_notices("data")
    try:
        dataset, notes = _load_dataset(workspace, request)
        session_registry().make_room(session_id(), dataset_bytes(dataset))
        state.put(state.DATA_NOTES, [*notes, *_use_dataset(workspace, dataset)])
    except FAILURES as error:
        state.notify(str(error), "error", place="data")
        return
    state.put(state.DATA_SOURCE, _data_source(request, dataset))
    if request.data is not None:
        url_session.keep_upload("data", request.data)


def _load_dataset(
    workspace: Workspace, request: DataRequest
) -> tuple[ImageDataset | TabularDataset, list[str]]:
    if request.kind == "bundled":
        return cached_dataset(request.key), []
    if request.kind == "keras":
        return cached_keras_dataset(request.key, request.subset_size, download_progress()), []
    if request.kind == "zip":
        return load_image_zip(
            request.data,
            image_size=request.image_size,
            max_stored_size=stored_image_size(workspace),
            max_dataset_bytes=max(session_registry().allowance(session_id()), 1),
            filename=request.filename,
            on_progress=count_progress("images"),
        )
    with st.spinner("Reading the table and checking every column..."):
        return load_csv_dataset(request.data, request.label_column, filename=request.filename)


def stored_image_size(workspace: Workspace) -> int | None:
    """The largest image side worth keeping for this workspace's uploads (None: no limit).

    Images go to an image base: this one, or the bundled CNN when a Dense base is loaded.
    """
    template = workspace.template
    if len(template.input_shape) != 3:
        template = cached_template(DEFAULT_MODEL)
    return largest_useful_image_size(template.input_shape)


def _data_source(request: DataRequest, dataset: ImageDataset | TabularDataset) -> DataSource:
    """How to load the same dataset again (a rebuilt session)."""
    if request.kind == "bundled":
        return DataSource("bundled", key=dataset.name)
    if request.kind == "keras":
        return DataSource("keras", key=request.key, subset_size=request.subset_size)
    return DataSource(
        request.kind,
        filename=request.filename,
        image_size=request.image_size,
        label_column=request.label_column,
    )


def _use_dataset(workspace: Workspace, dataset: ImageDataset | TabularDataset) -> list[str]:
    """Switches the workspace to `dataset`; returns notes on a base model that changed."""
    tabular_data = len(dataset.input_shape) == 1
    if tabular_data:
        workspace.configure(dense_base_template(dataset), dataset)
        return ["Base model: a new Dense base for these features (step 1)."]
    if len(workspace.template.input_shape) == 1:
        workspace.configure(cached_template(DEFAULT_MODEL), dataset)
        return ["Base model switched to the bundled digits CNN: the Dense base only takes tables."]
    workspace.set_dataset(dataset)
    return []


def handle_restore(workspace: Workspace, data: bytes) -> None:
    """Restores a freeze plan, LoRA adapters and settings from an uploaded run config.

    The model gets exactly the config's adapters (none when it has none: an adapter removed
    leaves what it learned merged into its kernel), then the config's plan; per-layer rates
    that name layers the model lacks are left out with a notice.

    Args:
        workspace: The session's workspace.
        data: The uploaded JSON file's bytes.
    """
    try:
        config = parse_run_config(data)
        adapters, notices = lora_from_config(config, workspace.tree)
        workspace.set_lora(adapters)
        plan, plan_notices = plan_from_config(
            config, workspace.tree, template_key=workspace.template.key
        )
        workspace.apply_plan(plan)
        training, training_notices = training_from_config(config, workspace.tree)
        set_training_defaults(training)
    except FAILURES as error:
        state.notify(str(error), "error", place="export")
        return
    what = "freeze plan, LoRA adapters and settings" if adapters else "freeze plan and settings"
    state.notify(f"Restored the {what}.", "success")
    for notice in [*plan_notices, *notices, *training_notices]:
        state.notify(notice)


# ---------------------------------------------------------------------------- training
def with_drift_resolution(config: TrainingConfig, num_samples: int) -> TrainingConfig:
    """Records drift about DRIFT_POINTS_PER_EPOCH times an epoch, so curves show the motion."""
    num_train = num_samples * (1 - config.validation_fraction)
    batches = max(1, math.ceil(num_train / config.batch_size))
    return replace(config, drift_every_batches=max(1, batches // DRIFT_POINTS_PER_EPOCH))


def handle_training(
    workspace: Workspace, intent: TrainIntent, all_frozen_choice: str | None
) -> bool:
    """Carries out Start, Stop and the answer to the all-frozen warning.

    Pressing Train with every layer frozen (0 trainable parameters) starts nothing: the fit
    could change no weight. The sidebar then says so (`state.ALL_FROZEN_WARNING`) and offers
    the usual fix, freezing only the base, which trains at once.

    Args:
        workspace: The session's workspace.
        intent: What the training controls returned.
        all_frozen_choice: "fix" or "dismiss" from the all-frozen warning, or None.

    Returns:
        True when a run started (the page then opens the Train tab).
    """
    if intent.stop:
        workspace.stop()
    start = intent.start
    if start and not intent.phases and workspace.tree.totals().trainable == 0:
        state.put(state.ALL_FROZEN_WARNING, True)
        start = False
    if all_frozen_choice is not None:
        state.put(state.ALL_FROZEN_WARNING, False)
        if all_frozen_choice == "fix":
            workspace.bulk_action(FreezePlan(PlanKind.NONE))
            workspace.bulk_action(FreezePlan(PlanKind.BASE))
            start = True
    if workspace.tree.totals().trainable > 0:
        state.put(state.ALL_FROZEN_WARNING, False)
    if not start or intent.config is None:
        return False
    return _start(workspace, intent.config, intent.phases)


def _start(workspace: Workspace, config: TrainingConfig, phases: tuple | None) -> bool:
    fit = check_batch_fits(
        workspace.dataset.num_samples, config.batch_size, config.validation_fraction
    )
    if fit.reduced:
        config = replace(config, batch_size=fit.batch_size)
        state.notify(fit.message)
    try:
        config = with_drift_resolution(config, workspace.dataset.num_samples)
        if phases:
            workspace.start_schedule(phases, config)
        else:
            workspace.start_run(config)
    except (ValueError, RuntimeError) as error:
        state.notify(f"Training could not start: {error}", "error")
        return False
    state.put(state.STEP_TAB, TRAIN_TAB)  # show the live progress
    return True
