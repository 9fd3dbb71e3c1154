"""What the whole server shares: model templates, datasets, training slots, runs, sessions.

`st.cache_resource` holds one copy of each for every session. Nothing here is ever frozen,
compiled or trained: each session builds its own model from a template (see
`models.workspace.Workspace`).
"""

from __future__ import annotations

import os

import streamlit as st

from components.connections import connection_open
from models.catalogue import load_template
from models.datasets import ImageDataset, load_bundled_dataset
from models.download import ProgressCallback
from models.executor import Executor, executor_from_environment
from models.keras_datasets import load_keras_dataset
from models.run_store import RunStore
from models.sessions import SessionRegistry
from models.template import ModelTemplate
from models.training import TrainingSlots

SLOTS_ENVIRONMENT_VARIABLE = "FREEZELAB_TRAINING_SLOTS"


@st.cache_resource(show_spinner="Loading the base model...")
def cached_template(key: str) -> ModelTemplate:
    """One read-only template per bundled base model for the whole server (config + weights)."""
    return load_template(key)


@st.cache_resource(show_spinner="Loading the dataset...")
def cached_dataset(key: str) -> ImageDataset:
    """One read-only copy of each bundled dataset for the whole server."""
    return load_bundled_dataset(key)


@st.cache_resource(show_spinner="Building the keras.applications model...", max_entries=12)
def cached_application(
    key: str, input_size: int, pretrained: bool, _on_progress: ProgressCallback | None = None
) -> ModelTemplate:
    """keras.applications templates, shared read-only (ImageNet weights from the Keras cache).

    The leading underscore keeps the progress callback out of the cache key.
    """
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
    configured = os.environ.get(SLOTS_ENVIRONMENT_VARIABLE, "").strip()
    return TrainingSlots(int(configured) if configured.isdigit() and int(configured) > 0 else None)


@st.cache_resource(show_spinner="Connecting to the training executor...")
def training_executor() -> Executor:
    """Where this server's runs train: here (default) or on Ray (FREEZELAB_EXECUTOR=ray).

    Chosen once per server process (`models.executor.executor_from_environment`); Ray is
    connected once, never on a rerun. Ray unreachable falls back to local training, and the
    executor's description says why.
    """
    return executor_from_environment(training_slots())


@st.cache_resource
def run_store() -> RunStore:
    """Ended runs on disk (FREEZELAB_RUNS_DIR, default ./runs), pruned by size."""
    return RunStore()


@st.cache_resource
def session_registry() -> SessionRegistry:
    """Every URL session of this server, and the reaper of their orphaned jobs (started once).

    FREEZELAB_ORPHAN_GRACE_S sets the grace period, FREEZELAB_MEMORY_BUDGET the memory budget.
    A page counts as open while its websocket is (Streamlit's runtime says so).
    """
    registry = SessionRegistry(connection_open=connection_open)
    registry.start_reaper()
    return registry
