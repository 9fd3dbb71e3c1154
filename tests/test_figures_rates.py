"""The per-layer learning-rate figures and the LoRA drift table, from real drift frames."""

import pandas as pd
import pytest

from components.figures import (
    LORA_TABLE_COLUMNS,
    graded_motion_figure,
    layer_rates_figure,
    lora_drift_table,
)
from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.layer_rates import LayerRates, layer_multipliers, layer_rates_frame
from models.lora import LoraSetting
from models.training import TrainingConfig
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def decayed_run():
    workspace = Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
    workspace.set_lora({"transfer_model/classifier": LoraSetting(2)})
    rates = LayerRates(decay_factor=0.1, layers_per_block=2, base_path=BASE)
    config = TrainingConfig(epochs=2, batch_size=64, learning_rate=1e-2, layer_rates=rates)
    run = workspace.start_run(config, background=False)
    return workspace, run


def test_the_graded_motion_follows_the_multipliers_in_model_order(decayed_run):
    workspace, run = decayed_run
    expected = layer_multipliers(run.config.layer_rates, workspace.tree)
    figure = graded_motion_figure(run.job.drift_frame(), run.layer_multipliers, run.layer_order)
    bars, line = figure.data
    assert (bars.name, line.name) == ("Final drift", "Multiplier")
    order = [p for p in run.layer_order if p in run.layer_multipliers]
    assert list(line.y) == [expected[path] for path in order]
    drift = {path.split("/", 1)[1]: value for path, value in zip(order, bars.y, strict=True)}
    # Ten times the rate, more motion: the top block moved more than the lowest one.
    assert drift["feature_extractor/conv3"] > drift["feature_extractor/conv1"]


def test_the_rates_figure_draws_the_rate_of_each_layer_with_weights(decayed_run):
    workspace, run = decayed_run
    frame = layer_rates_frame(run.config.layer_rates, workspace.tree, 1e-2)
    (bars,) = layer_rates_figure(frame).data
    assert len(bars.y) == len(frame) and list(bars.y) == list(frame["learning_rate"])
    with pytest.raises(ValueError, match="the columns"):
        layer_rates_figure(pd.DataFrame({"path": []}))


def test_the_lora_table_reads_the_effective_kernel_and_the_adapters_size(decayed_run):
    _, run = decayed_run
    table = lora_drift_table(run.job.drift_frame(), run.adapters, run.adapter_parameters)
    assert list(table.columns) == list(LORA_TABLE_COLUMNS)
    (row,) = table.to_dict("records")
    assert row["Adapter"] == "r2 α2" and row["Kernel parameters"] == 32 * 5
    assert row["Adapter parameters"] == 32 * 2 + 2 * 5 and not row["Frozen"]
    assert lora_drift_table(None, {}, {}).empty
