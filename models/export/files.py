"""Download files: the trained model as `.keras` bytes, drift records as CSV, the base's file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import pandas as pd

from models.catalogue import bundled_model_path
from models.template import ModelKind, ModelTemplate, parse_model_key

BASE_MODEL_BUTTON = "Base model (.keras)"  # the Export tab's button for `base_model_file`


def model_file_bytes(model: keras.Model) -> bytes:
    """Saves a model as a `.keras` file and returns its bytes (for a download button).

    Call it only while the model is not training (e.g. after the run finished).

    Args:
        model: A Keras model.

    Returns:
        The bytes of `model.save("model.keras")`; `keras.saving.load_model` reads them back
        (FreezeLab's own layers need `import models.layers` first).

    Example:
    >>> data = model_file_bytes(workspace.model)
    >>> data[:2]
    b'PK'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model_file_bytes expects a keras.Model (e.g. workspace.model); received "
            f"{type(model).__name__}."
        )
    with tempfile.TemporaryDirectory(prefix="freezelab_export_") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def base_model_file(template: ModelTemplate) -> Path | None:
    """The pretrained base's file that the exported script loads, for a download button.

    The script of the bundled model loads `bundled_digits_cnn.keras` from its own folder;
    the Export tab offers this file under `BASE_MODEL_BUTTON`. Other bases need no file
    from FreezeLab: keras.applications builds them (and downloads ImageNet weights itself),
    the Dense base is written out in the script, and an uploaded model is the learner's own.

    Args:
        template: The model's template (`workspace.template`).

    Returns:
        The path of the file to offer (its name is the one the script expects), or None.

    Example:
    >>> base_model_file(bundled_template()).name
    'bundled_digits_cnn.keras'
    """
    if not isinstance(template, ModelTemplate):
        raise TypeError(
            f"template must be a ModelTemplate (e.g. workspace.template); received "
            f"{type(template).__name__}."
        )
    try:
        key = parse_model_key(template.key)
    except ValueError:
        return None
    return bundled_model_path(key.catalogue_key) if key.kind is ModelKind.BUNDLED else None


def drift_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The drift records as UTF-8 CSV bytes (floats written exactly), for a download button.

    Args:
        frame: A drift DataFrame (`run.job.drift_frame()`).

    Returns:
        CSV bytes with a header row and no index column.

    Example:
    >>> drift_csv_bytes(run.job.drift_frame()).splitlines()[0]
    b'step,epoch,layer_path,layer_name,class_name,kind,relative_change,...'
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"drift_csv_bytes expects a pandas DataFrame (run.job.drift_frame()); received "
            f"{type(frame).__name__}."
        )
    return frame.to_csv(index=False).encode("utf-8")


def download_file_name(kind: str, run_id: int | None = None) -> str:
    """A file name for a download: "freezelab_run3_model.keras", "freezelab_plan_code.py"...

    Args:
        kind: "model" (.keras), "drift" (.csv), "config" (.json) or "code" (.py).
        run_id: The run's number, or None for the current plan.

    Returns:
        The file name.

    Example:
    >>> download_file_name("drift", 3)
    'freezelab_run3_drift.csv'
    """
    extensions = {"model": ".keras", "drift": ".csv", "config": ".json", "code": ".py"}
    if kind not in extensions:
        raise ValueError(f"Unknown download kind {kind!r}; expected one of {sorted(extensions)}.")
    stem = "plan" if run_id is None else f"run{int(run_id)}"
    return f"freezelab_{stem}_{kind}{extensions[kind]}"
