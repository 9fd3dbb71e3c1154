"""Reads the drift frame for the figures: kinds, columns, checks, layer order, the final tables.

The drift frame is the one of `DriftRecorder.frame()`. A layer counts as *frozen* here when it
was effectively frozen at every recorded step (the `frozen` column is True on all its rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from models.drift import DRIFT_COLUMNS, DRIFT_KINDS, EFFECTIVE_KERNEL_KIND
from models.tree import STATE_KIND, WEIGHTS_KIND

KINDS = DRIFT_KINDS  # weights, state, and a LoRA layer's effective kernel
# The drift records' columns, as the core writes them (one owner: models.drift).
REQUIRED_DRIFT_COLUMNS = DRIFT_COLUMNS
TABLE_COLUMNS = (
    "Layer path",
    "Class",
    "Frozen",
    "Weights relative change",
    "Weights max abs change",
    "State relative change",
    "State max abs change",
    "Unchanged (weights and state)",
    "Parameters",
)
LORA_TABLE_COLUMNS = (
    "Layer path",
    "Adapter",
    "Frozen",
    "Adapter parameters",
    "Kernel parameters",
    "Adapter / kernel",
    "Effective kernel relative change",
    "Effective kernel max abs change",
)

_RELATIVE_AXIS_TITLE = {
    WEIGHTS_KIND: "Relative change ‖W<sub>t</sub> − W<sub>0</sub>‖ / ‖W<sub>0</sub>‖",
    STATE_KIND: "Relative change of the moving statistics",
    EFFECTIVE_KERNEL_KIND: "Relative change of kernel + (α/r)·a·b",
}
_KIND_WORDS = {
    WEIGHTS_KIND: "weights",
    STATE_KIND: "non-trainable state",
    EFFECTIVE_KERNEL_KIND: "effective kernel (LoRA layers)",
}


# ----------------------------------------------------------------------------- input checks
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, received {kind!r}.")


def _check_frame(
    frame: pd.DataFrame | None, columns: Sequence[str], argument: str, source: str
) -> pd.DataFrame:
    """Returns `frame` (an empty one for None or an empty frame) after checking its columns.

    Args:
        frame: The frame a figure was given.
        columns: The columns it must have.
        argument: The argument's name, for messages.
        source: What makes such a frame, e.g. "DriftRecorder.frame()".
    """
    if frame is None:
        return pd.DataFrame(columns=list(columns))
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`{argument}` must be a pandas DataFrame as returned by `{source}`, "
            f"received {type(frame).__name__}."
        )
    missing = [column for column in columns if column not in frame.columns]
    if missing and not frame.empty:
        raise ValueError(
            f"The {argument} frame lacks the columns {missing}; expected the columns of "
            f"`{source}`: {list(columns)}."
        )
    return pd.DataFrame(columns=list(columns)) if missing else frame


def _check_drift(drift: pd.DataFrame | None) -> pd.DataFrame:
    """Returns `drift` (an empty frame for None) after checking it is a drift frame."""
    return _check_frame(drift, REQUIRED_DRIFT_COLUMNS, "drift", "DriftRecorder.frame()")


def _check_layer_order(layer_order: Sequence[str] | None) -> list[str] | None:
    if layer_order is None:
        return None
    if isinstance(layer_order, str) or not all(isinstance(p, str) for p in layer_order):
        raise TypeError(
            "`layer_order` must be a list of layer paths (strings) in model order, e.g. "
            f"`LayerTree(model).paths()`, received {layer_order!r:.200}."
        )
    return list(layer_order)


# ---------------------------------------------------------------------------------- helpers
def _ordered_paths(paths: Sequence[str], layer_order: list[str] | None) -> list[str]:
    """Orders `paths` as `layer_order` does; paths it does not name follow in their own order."""
    unique = list(dict.fromkeys(paths))
    if layer_order is None:
        return unique
    present = set(unique)
    ordered = [path for path in dict.fromkeys(layer_order) if path in present]
    listed = set(ordered)
    return ordered + [path for path in unique if path not in listed]


def _frozen_by_path(rows: pd.DataFrame) -> dict[str, bool]:
    """Maps each layer path to whether it was frozen at every recorded step."""
    if rows.empty:
        return {}
    frozen = rows.groupby("layer_path", sort=False)["frozen"].all()
    return {str(path): bool(value) for path, value in frozen.items()}


def _display_paths(paths: Sequence[str]) -> dict[str, str]:
    """Maps paths to shorter display names: the top model's name is dropped when all share it."""
    roots = {path.split("/", 1)[0] for path in paths}
    if len(roots) == 1 and all("/" in path for path in paths):
        return {path: path.split("/", 1)[1] for path in paths}
    return {path: path for path in paths}


def final_drift_table(
    drift: pd.DataFrame | None, layer_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Summarises the drift at the last recorded step, one row per layer, for display.

    Args:
        drift: The drift frame of `DriftRecorder.frame()`.
        layer_order: Layer paths in model order; None keeps the frame's order.

    Returns:
        A DataFrame with the columns of `TABLE_COLUMNS`: "Layer path", "Class", "Frozen" (frozen
        at every recorded step), "Weights relative change", "Weights max abs change", "State
        relative change", "State max abs change" (NaN for a layer without that kind),
        "Unchanged (weights and state)" (bitwise equal to the start, every kind it holds) and
        "Parameters" (weights and state together); rows in model order.

    Example:
    >>> final_drift_table(recorder.frame(), layer_order=tree.paths()).iloc[0]["Layer path"]
    'transfer_model/feature_extractor/conv_1'
    """
    drift = _check_drift(drift)
    order = _check_layer_order(layer_order)
    if drift.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    paths = _ordered_paths(drift["layer_path"].tolist(), order)
    frozen = _frozen_by_path(drift)
    last = (
        drift.sort_values("step", kind="stable").groupby(["layer_path", "kind"], sort=False).tail(1)
    )
    by_kind = {kind: last[last["kind"] == kind].set_index("layer_path") for kind in KINDS}
    records = []
    for path in paths:
        layer_rows = last[last["layer_path"] == path]
        record = {
            "Layer path": path,
            "Class": str(layer_rows["class_name"].iloc[0]),
            "Frozen": frozen[path],
        }
        for kind, word in ((WEIGHTS_KIND, "Weights"), (STATE_KIND, "State")):
            frame = by_kind[kind]
            present = path in frame.index
            record[f"{word} relative change"] = (
                float(frame.at[path, "relative_change"]) if present else math.nan
            )
            record[f"{word} max abs change"] = (
                float(frame.at[path, "max_abs_change"]) if present else math.nan
            )
        record["Unchanged (weights and state)"] = bool(layer_rows["unchanged"].all())
        own = layer_rows[layer_rows["kind"] != EFFECTIVE_KERNEL_KIND]  # computed, not stored
        record["Parameters"] = int(own["num_params"].sum())
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    return table.astype({"Frozen": bool, "Unchanged (weights and state)": bool, "Parameters": int})


def lora_drift_table(
    drift: pd.DataFrame | None,
    adapters: Mapping[str, Any],
    adapter_parameters: Mapping[str, int],
    layer_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Summarises each LoRA layer at the last recorded step: how far its function moved, per size.

    The effective kernel, `kernel + (alpha / rank) * a @ b`, is what the layer computes with;
    its drift is set next to the adapters' own size, the price of that motion.

    Args:
        drift: The drift frame of `DriftRecorder.frame()` (effective-kernel rows included).
        adapters: The run's adapters, path -> `models.lora.LoraSetting` (its `rank` and
            `effective_alpha` are read).
        adapter_parameters: Each adapter's parameters (`a` plus `b`), path -> count.
        layer_order: Layer paths in model order; None keeps the frame's order.

    Returns:
        A DataFrame with the columns of `LORA_TABLE_COLUMNS`, one row per LoRA layer that has
        effective-kernel records: "Adapter" ("r4 α8"), "Frozen" (adapters frozen throughout),
        "Adapter / kernel" (the adapters' parameters over the kernel's, a fraction).

    Example:
    >>> lora_drift_table(run.drift, run.adapters, run.adapter_parameters).iloc[0]["Adapter"]
    'r2 α2'
    """
    drift = _check_drift(drift)
    rows = drift[drift["kind"] == EFFECTIVE_KERNEL_KIND]
    if rows.empty:
        return pd.DataFrame(columns=list(LORA_TABLE_COLUMNS))
    frozen = _frozen_by_path(rows)
    last = rows.sort_values("step", kind="stable").groupby("layer_path", sort=False).tail(1)
    last = last.set_index("layer_path")
    records = []
    for path in _ordered_paths(last.index.tolist(), _check_layer_order(layer_order)):
        setting = adapters.get(path)
        kernel = int(last.at[path, "num_params"])
        size = int(adapter_parameters.get(path, 0))
        records.append(
            {
                "Layer path": path,
                "Adapter": "" if setting is None else (
                    f"r{setting.rank} α{setting.effective_alpha:g}"
                ),
                "Frozen": frozen[path],
                "Adapter parameters": size,
                "Kernel parameters": kernel,
                "Adapter / kernel": size / kernel if kernel else math.nan,
                "Effective kernel relative change": float(last.at[path, "relative_change"]),
                "Effective kernel max abs change": float(last.at[path, "max_abs_change"]),
            }
        )  # fmt: skip
    table = pd.DataFrame.from_records(records, columns=list(LORA_TABLE_COLUMNS))
    return table.astype({"Frozen": bool, "Adapter parameters": int, "Kernel parameters": int})
