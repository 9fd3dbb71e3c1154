"""Tests for models/dense_base.py: the Dense base trains on a table and refuses images."""

import keras
import numpy as np
import pytest

from models.dense_base import dense_base_for_features, dense_base_template
from models.training import TrainingConfig
from models.transfer import build_transfer_model
from models.tree import LayerTree
from models.upload_tables import load_csv_dataset
from models.workspace import Workspace

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def test_dense_base_trains_on_a_csv_dataset_in_a_workspace():
    rows = ["x1,x2,x3,label"]
    rng = np.random.default_rng(0)
    for index in range(60):
        label = index % 2
        values = rng.normal(loc=100 * label, scale=5, size=3)
        rows.append(",".join(f"{value:.3f}" for value in values) + f",{'ab'[label]}")
    dataset, _ = load_csv_dataset("\n".join(rows).encode(), "label")
    template = dense_base_template(dataset)
    assert not template.pretrained and "not pretrained" in template.title
    workspace = Workspace(template, dataset)
    names = [layer.name for layer in workspace.model.layers]
    assert names == ["features", "dense_base", "head_dropout", "classifier"]
    # The standardising layer maps the raw columns to mean 0, variance 1.
    standardize = workspace.model.get_layer("dense_base").get_layer("standardize")
    standardized = np.asarray(standardize(dataset.x))
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=0), 1, atol=1e-3)
    run = workspace.start_run(TrainingConfig(epochs=3, batch_size=16), background=False)
    assert run.job.progress().state == "finished"
    assert LayerTree(workspace.model).totals().total == (
        sum(int(np.prod(w.shape)) for w in workspace.model.weights)
    )


def test_tabular_data_and_image_models_do_not_mix():
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="cnn")
    with pytest.raises(ValueError, match=r"expects images of shape \(8, 8, 1\).*feature vectors"):
        build_transfer_model(base, (5,), 2)
    dense = dense_base_for_features(4)
    with pytest.raises(ValueError, match="expects feature vectors of shape"):
        build_transfer_model(dense, (8, 8, 1), 2)
    with pytest.raises(ValueError, match="expects 4 features per sample, but the data has 5"):
        build_transfer_model(dense, (5,), 2)
    with pytest.raises(ValueError, match="needs both mean and variance"):
        dense_base_for_features(4, mean=[0, 0, 0, 0])
