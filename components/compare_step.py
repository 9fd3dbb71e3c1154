"""Compare runs: the session's runs side by side, live or kept on disk, one view for both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from components.figures import (
    comparison_curves_figure,
    comparison_drift_figure,
    final_drift_table,
)
from models.snapshot import RunSnapshot

MAX_COMPARED = 4
PRETRAINING_COLUMN = "Digits 0-4 accuracy after (forgetting)"


def _last(history: Mapping[str, Sequence[float]], key: str) -> float | None:
    values = history.get(key) or []
    return float(values[-1]) if values else None


def comparison_table(runs: Sequence[RunSnapshot]) -> pd.DataFrame:
    """One row per run: settings, levers, parameter counts, speed, final metrics, forgetting, proof.

    The levers are the freeze plan (its size), LoRA adapters and per-layer learning rates;
    "forgetting" is a bundled base's accuracy on the digits 0-4 it was pretrained on, measured
    with its original classifier after the run (`models.forgetting`; empty for other bases).

    Args:
        runs: Snapshots of the runs to compare.

    Returns:
        A DataFrame ready for display.

    Example:
    >>> comparison_table([RunSnapshot.of(run) for run in workspace.runs])
    """
    rows = []
    for run in runs:
        history = run.history
        rows.append(
            {
                "Run": run.display_name,
                "Model": run.model_title,
                "Data": run.dataset_title,
                "Epochs": run.progress.epoch,
                "Learning rate": run.settings.learning_rate,
                "Optimizer": run.settings.optimizer,
                "Frozen flags": len(run.frozen_paths),
                "LoRA adapters": len(run.adapters),
                "Per-layer rates": (
                    "" if run.settings.layer_rates is None else str(run.settings.layer_rates)
                ),
                "Trainable params": run.counts.trainable,
                "Total params": run.counts.total,
                "Seconds per epoch": run.seconds_per_epoch,
                "Train loss": _last(history, "loss"),
                "Train accuracy": _last(history, "accuracy"),
                "Validation loss": _last(history, "val_loss"),
                "Validation accuracy": _last(history, "val_accuracy"),
                PRETRAINING_COLUMN: run.pretraining_accuracy,
                "State": run.state.value if run.ending is None else run.ending.value,
                "Frozen layers unchanged": (
                    None if run.verification is None else run.verification.all_unchanged
                ),
            }
        )
    return pd.DataFrame(rows)


def _render_names(runs: Sequence[RunSnapshot], *, disabled: bool) -> dict[int, str]:
    renames: dict[int, str] = {}
    with st.expander("Name the runs", expanded=False):
        for run in runs:
            name = st.text_input(
                f"Name of run {run.run_id} ({run.label})",
                value=run.name,
                max_chars=40,
                disabled=disabled,
                key=f"run_name_{run.run_id}",
            )
            if name != run.name:
                renames[run.run_id] = name
    return renames


def render_comparison(runs: Sequence[RunSnapshot], *, disabled: bool) -> dict[int, str]:
    """Compares the session's ended runs: names, settings, curves and final drift.

    Runs of this visit and runs kept on disk from earlier visits (after a refresh) are the
    same snapshots, so they are listed, named and compared alike.

    Args:
        runs: Snapshots of the session's runs (oldest first); those still training are skipped.
        disabled: True while training runs (renaming waits).

    Returns:
        The names the user changed, run id -> new name (empty when none changed).
    """
    ended = [run for run in runs if run.done]
    if len(ended) < 2:
        st.info(
            "Finish two or more runs (for example the base frozen, then fine-tuned) to compare "
            "them here. Runs are kept on this server under the `session` id in the page "
            "address, so a refresh or reconnect keeps them."
        )
        if not ended:
            return {}
    renames = _render_names(ended, disabled=disabled)
    by_id = {run.run_id: run for run in ended}
    chosen = st.multiselect(
        "Runs to compare",
        list(by_id),
        default=list(by_id)[-MAX_COMPARED:],
        format_func=lambda run_id: renames.get(run_id) or by_id[run_id].display_name,
        max_selections=MAX_COMPARED,
        key="compare_runs",
    )
    selected = [by_id[run_id] for run_id in chosen if run_id in by_id]
    if not selected:
        return renames
    st.caption(
        "Four levers on the same task: freeze the base (step 2, *Freeze base*), LoRA adapters "
        "on a frozen base (step 2, the *+ LoRA* chips or recipes), full fine-tuning (nothing "
        "frozen, a low learning rate) and layer-wise decay (step 4, *Per-layer learning "
        "rates*). On a bundled base, the last column is how well the base still reads the "
        "digits 0-4 it was pretrained on, with its original classifier: what it forgot."
    )
    st.dataframe(comparison_table(selected), hide_index=True, width="stretch")
    histories = {run.display_name: run.history for run in selected}
    st.plotly_chart(comparison_curves_figure(histories), width="stretch", key="compare_curves")
    finals = {
        run.display_name: final_drift_table(run.drift, layer_order=list(run.layer_order))
        for run in selected
    }
    st.plotly_chart(
        comparison_drift_figure(finals, layer_order=list(selected[-1].layer_order)),
        width="stretch",
        key="compare_drift",
    )
    return renames
