"""This page's URL session: its workspace and runs outlive a refresh, a reconnect or a restart.

The `session` id in the page URL keys everything a learner made (see `models.sessions`):

- `open_workspace` finds the session's `Workspace` in the server's registry, so a refreshed or
  reconnected page reattaches to a running job (live progress, Stop works) and keeps its model,
  dataset, freeze plan and settings. A session the server no longer holds in memory (after a
  restart, or released to free memory) is rebuilt from its record on disk.
- Every run that ends (finished, stopped, failed, or orphaned by a page gone longer than the
  grace period) is saved to disk by the job's own completion, from the training thread, so
  nothing depends on a page being there to see it end.
- `remember_session` keeps the session's record (model, data, plan, settings) on disk after
  every run of the script, when it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import streamlit as st

from components import state
from components.connections import this_connection
from components.resources import (
    cached_application,
    cached_dataset,
    cached_keras_dataset,
    cached_template,
    run_store,
    session_registry,
    training_executor,
    training_slots,
)
from models.catalogue import DEFAULT_MODEL
from models.datasets import DEFAULT_DATASET
from models.dense_base import dense_base_template
from models.presets import Preset, parse_query
from models.run_store import SESSION_QUERY_PARAMETER, is_valid_session_id, new_session_id
from models.session_record import DataSource, SessionRecord
from models.sessions import keep_ended_runs
from models.snapshot import RunSnapshot
from models.template import ModelKind, ModelTemplate, parse_model_key
from models.training import TrainingConfig
from models.upload_images import largest_useful_image_size, load_image_zip
from models.upload_model import load_uploaded_model, uploaded_template
from models.upload_tables import load_csv_dataset
from models.workspace import Workspace

LOGGER = logging.getLogger("freezelab")
TRAIN_TAB = "4 · Train"
FAILURES = (ValueError, TypeError, RuntimeError, KeyError, OSError)


def session_id() -> str:
    """The id in the URL that keys this browser's session (created when missing)."""
    current = st.query_params.get(SESSION_QUERY_PARAMETER)
    if not current or not is_valid_session_id(current):
        current = new_session_id()
        st.query_params[SESSION_QUERY_PARAMETER] = current
    return current


def open_workspace(
    apply_link: Callable[[Workspace, Mapping[str, list[str]]], None] | None = None,
) -> Workspace:
    """This session's workspace: found again after a refresh, else rebuilt or created.

    Args:
        apply_link: Applies an instructor link's choices to a new workspace (the first visit
            of a session only; a refresh keeps what the learner changed since).

    Returns:
        The session's `Workspace`. On this page's first run, its page values are set: the
        instructor link, the runs kept on disk, the settings to show, and the Train tab when a
        run is training (the page reattaches to it).
    """
    identifier = session_id()
    session = session_registry().open(identifier, connection=this_connection())
    first_run_of_page = state.attach(session.values)
    created = False
    with session.lock:
        if session.workspace is None:
            session.workspace, created = _new_or_rebuilt(identifier, apply_link), True
    workspace = session.workspace
    state.put(state.WORKSPACE, workspace)
    if first_run_of_page:
        _open_page(workspace, created)
    return workspace


def touch() -> None:
    """Tells the server this page is still open (the heartbeat while a run trains)."""
    session_registry().touch(session_id())


def _new_or_rebuilt(
    identifier: str, apply_link: Callable[[Workspace, Mapping[str, list[str]]], None] | None
) -> Workspace:
    record = None
    try:
        record = run_store().load_record(identifier)
    except ValueError as error:
        state.notify(f"Your earlier choices could not be read ({error}); starting afresh.")
    workspace = None
    if record is not None:
        workspace = _rebuild(identifier, record)
    if workspace is None:
        workspace = Workspace(
            cached_template(DEFAULT_MODEL),
            cached_dataset(DEFAULT_DATASET),
            slots=training_slots(),
            executor=training_executor(),
        )
        if apply_link is not None and record is None:
            apply_link(workspace, _query())
    keep_ended_runs(workspace, run_store(), identifier)
    stored = _load_stored_runs(identifier)
    if stored:
        workspace.continue_run_ids_after(max(run.run_id for run in stored))
    return workspace


def _query() -> dict[str, list[str]]:
    return {key: st.query_params.get_all(key) for key in st.query_params}


def _rebuild(identifier: str, record: SessionRecord) -> Workspace | None:
    """The workspace a record describes; None (with a notice) when it cannot be rebuilt."""
    try:
        if record.data.kind == "csv":  # a table's Dense base is made for its features
            dataset = _dataset_of(identifier, record.data, None)
            template = _template_of(identifier, record.model_key, dataset)
        else:
            template = _template_of(identifier, record.model_key, None)
            dataset = _dataset_of(identifier, record.data, template)
        workspace = Workspace(
            template, dataset, slots=training_slots(), executor=training_executor()
        )
        paths = set(workspace.tree.paths())
        workspace.set_lora({p: s for p, s in record.adapters.items() if p in paths})
        workspace.apply_plan(set(record.frozen_paths) & paths)
    except FAILURES as error:
        state.notify(
            f"Your session's model and data could not be rebuilt ({error}); the default model "
            "and data are loaded instead. Your runs are kept."
        )
        return None
    state.put(state.SETTINGS, {**record.settings, **state.get(state.SETTINGS, {})})
    state.put(state.DATA_SOURCE, record.data)
    if record.training is not None and not state.has(state.CHOSEN_CONFIG):
        state.put(state.CHOSEN_CONFIG, record.training)
    return workspace


def _dataset_of(identifier: str, source: DataSource, template: ModelTemplate | None):
    if source.kind == "bundled":
        return cached_dataset(source.key)
    if source.kind == "keras":
        return cached_keras_dataset(source.key, source.subset_size)
    content = run_store().load_upload(identifier, "data")
    if source.kind == "zip":
        dataset, _ = load_image_zip(
            content,
            image_size=source.image_size,
            max_stored_size=largest_useful_image_size(template.input_shape),
            filename=source.filename,
        )
        return dataset
    dataset, _ = load_csv_dataset(content, source.label_column, filename=source.filename)
    return dataset


def _template_of(identifier: str, model_key: str, dataset) -> ModelTemplate:
    key = parse_model_key(model_key)
    if key.kind is ModelKind.BUNDLED:
        return cached_template(key.catalogue_key)
    if key.kind is ModelKind.APPLICATION:
        return cached_application(key.catalogue_key, key.input_size, key.pretrained)
    if key.kind is ModelKind.DENSE_BASE:
        return dense_base_template(dataset)
    model = load_uploaded_model(run_store().load_upload(identifier, "model"), key.filename)
    state.put(state.UPLOADED_MODEL, (key.filename, model))
    return uploaded_template(model, key.cut_layer, key.filename)


def _open_page(workspace: Workspace, created: bool) -> None:
    """A new page of the session (new tab, refresh, reconnect): its page values."""
    if not created:  # a new session took the link's choices (and said why any failed)
        link, _ = parse_query(_query())
        state.put(state.PRESET, link)
    chosen = state.get(state.CHOSEN_CONFIG)
    if isinstance(chosen, TrainingConfig):
        state.put(state.TRAINING_DEFAULTS, chosen)
    stored = _load_stored_runs(session_id())
    state.put(state.STORED_RUNS, stored)
    if workspace.is_training:
        state.put(state.STEP_TAB, TRAIN_TAB)
        if not created:
            run = workspace.latest_run
            state.notify(
                f"Your {run.display_name} is still training: this page is attached to it again "
                "(live progress below, ■ Stop works).",
                "info",
            )


def _load_stored_runs(identifier: str) -> list[RunSnapshot]:
    try:
        stored, notices = run_store().load(identifier)
    except (OSError, ValueError) as error:
        stored, notices = [], [f"Earlier runs could not be read: {error}"]
    if notices:
        state.notify(" ".join(notices))
    return stored


def preset() -> Preset:
    """The instructor link of this page (empty when there was none)."""
    return state.get(state.PRESET) or Preset()


# ------------------------------------------------------------------ keeping things on disk
def keep_snapshot(identifier: str, snapshot: RunSnapshot) -> None:
    """Saves an ended run's snapshot; a disk that refuses is logged, never raised."""
    try:
        run_store().save(identifier, snapshot)
    except (OSError, ValueError, TypeError) as error:
        LOGGER.warning("Could not keep run %s on disk: %s", snapshot.run_id, error)


def keep_upload(role: str, content: bytes) -> None:
    """Keeps an uploaded file ("data" or "model") so the session can be rebuilt with it."""
    try:
        if not run_store().save_upload(session_id(), role, content):
            LOGGER.info("Upload too large to keep for session %s.", session_id())
    except (OSError, ValueError) as error:
        LOGGER.warning("Could not keep the uploaded %s file: %s", role, error)


def remember_session(workspace: Workspace) -> None:
    """Keeps the session's record (model, data, plan, settings) on disk when it changed."""
    source = state.get(state.DATA_SOURCE)
    if not isinstance(source, DataSource):
        source = DataSource("bundled", key=workspace.dataset.name)
    chosen = state.get(state.CHOSEN_CONFIG)
    try:
        record = SessionRecord(
            model_key=workspace.template.key,
            data=source,
            frozen_paths=tuple(workspace.tree.frozen_paths()),
            settings=state.get(state.SETTINGS, {}),
            training=chosen if isinstance(chosen, TrainingConfig) else None,
            adapters=workspace.lora_plan(),
        )
        content = record.to_json()
        if state.get(state.RECORD_WRITTEN) == content:
            return
        run_store().save_record(session_id(), record)
        state.put(state.RECORD_WRITTEN, content)
    except (OSError, ValueError) as error:
        LOGGER.warning("Could not keep the session record: %s", error)


__all__ = [
    "keep_snapshot",
    "keep_upload",
    "open_workspace",
    "preset",
    "remember_session",
    "session_id",
    "touch",
]
