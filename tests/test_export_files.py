"""Tests for models/export/files.py: the model, drift and base model downloads."""

import math

import keras
import pandas as pd
import pytest

from models.bundled import BUNDLED_MODEL_PATH
from models.export.files import (
    base_model_file,
    download_file_name,
    drift_csv_bytes,
    model_file_bytes,
)
from models.workspace import Workspace


def _counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    frozen = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)
    return trainable, frozen


def test_base_model_file_offers_the_bundled_model_only(bundled, mobilenet):
    file = base_model_file(bundled)
    assert file == BUNDLED_MODEL_PATH and file.name == "bundled_digits_cnn.keras"
    assert file.read_bytes()[:2] == b"PK"
    assert base_model_file(mobilenet) is None
    with pytest.raises(TypeError, match="ModelTemplate"):
        base_model_file("bundled_digits_cnn")


def test_model_file_bytes_load_back(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    data = model_file_bytes(workspace.model)
    assert data[:2] == b"PK"
    from models.upload_model import load_uploaded_model

    loaded = load_uploaded_model(data, "model.keras")
    assert _counts(loaded) == _counts(workspace.model)
    with pytest.raises(TypeError, match=r"keras\.Model"):
        model_file_bytes("model")


def test_drift_csv_bytes_and_file_names():
    frame = pd.DataFrame({"step": [0, 1], "relative_change": [0.0, 0.1 + 0.2]})
    data = drift_csv_bytes(frame)
    assert data.splitlines()[0] == b"step,relative_change"
    back = pd.read_csv(pd.io.common.BytesIO(data), float_precision="round_trip")
    assert back["relative_change"].iloc[1] == 0.1 + 0.2
    assert download_file_name("drift", 3) == "freezelab_run3_drift.csv"
    assert download_file_name("code") == "freezelab_plan_code.py"
    with pytest.raises(ValueError, match="Unknown download kind"):
        download_file_name("zip")
