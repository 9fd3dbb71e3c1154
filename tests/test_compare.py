"""Tests for run comparison: the overlay figures and the Compare runs tab."""

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from components.compare_step import PRETRAINING_COLUMN
from components.figures import (
    COMPARISON_PALETTE,
    comparison_curves_figure,
    comparison_drift_figure,
)
from models.catalogue import load_pretrained_model
from models.datasets import load_bundled_dataset
from models.layer_rates import LayerRates
from models.lora import LoraSetting, copy_weights_merging_adapters
from models.training import TrainingConfig
from tests.app_helpers import open_tab

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def table(values: dict[str, float], frozen: set[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Layer path": list(values),
            "Frozen": [path in frozen for path in values],
            "Weights relative change": list(values.values()),
        }
    )


def test_curves_overlay_every_run_with_its_own_colour():
    figure = comparison_curves_figure(
        {
            "frozen base": {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "accuracy": [0.5, 0.6],
                            "val_accuracy": [0.4, 0.55]},
            "fine-tuned": {"loss": [0.9, 0.3], "val_loss": [1.0, 0.4], "accuracy": [0.6, 0.9],
                           "val_accuracy": [0.5, 0.85]},
        }
    )  # fmt: skip
    assert len(figure.data) == 8
    colours = {trace.legendgroup: trace.line.color for trace in figure.data}
    assert colours == {"frozen base": COMPARISON_PALETTE[0], "fine-tuned": COMPARISON_PALETTE[1]}
    validation = [
        t
        for t in figure.data
        if t.name == "fine-tuned" and t.line.dash == "solid" and t.xaxis == "x"
    ]
    assert list(validation[0].y) == [1.0, 0.4]
    # The legend names each run once; the subtitle says which line style is which.
    in_legend = [trace.name for trace in figure.data if trace.showlegend is not False]
    assert in_legend == ["frozen base", "fine-tuned"]
    assert "solid: validation" in figure.layout.title.text


def test_empty_comparison_says_so():
    figure = comparison_curves_figure({"a": {}})
    assert figure.layout.annotations and "No finished epochs" in figure.layout.annotations[0].text
    assert "No drift" in comparison_drift_figure({"a": pd.DataFrame()}).layout.annotations[0].text


def test_drift_bars_group_runs_in_model_order_and_mark_frozen_layers():
    order = ["m", "m/base/conv", "m/base/bn", "m/head"]
    first = table(
        {"m/head": 0.9, "m/base/conv": 0.0, "m/base/bn": 0.0}, {"m/base/conv", "m/base/bn"}
    )
    second = table({"m/base/conv": 0.2, "m/head": 0.7, "m/base/bn": 0.1}, set())
    figure = comparison_drift_figure({"one": first, "two": second}, layer_order=order)
    assert [trace.name for trace in figure.data] == ["one", "two"]
    assert list(figure.data[0].x) == [0.0, 0.0, 0.9]
    assert list(figure.data[1].x) == [0.2, 0.1, 0.7]
    assert list(figure.data[0].marker.pattern.shape) == ["/", "/", ""]


def test_compare_tab_shows_two_runs_side_by_side():
    at = AppTest.from_file(APP, default_timeout=120).run()
    workspace = at.session_state["workspace"]
    workspace.bulk_action("freeze_base")
    workspace.start_run(TrainingConfig(epochs=1), background=False)
    workspace.bulk_action("unfreeze_all")
    workspace.start_run(TrainingConfig(epochs=1, learning_rate=1e-3), background=False)
    open_tab(at, "Compare runs")
    frames = [frame.value for frame in at.dataframe if "Run" in frame.value.columns]
    assert len(frames) == 1
    compared = frames[0]
    assert list(compared["Run"]) == ["Run 1", "Run 2"]
    assert compared["Trainable params"].tolist() == [165, 14293]
    # Run 1's proof is the one taken when it ended, not a comparison with today's weights
    # (run 2 fine-tuned the base afterwards).
    assert bool(compared["Frozen layers unchanged"].iloc[0]) is True
    at.text_input(key="run_name_1").set_value("frozen base").run()
    renamed = next(f.value for f in at.dataframe if "Run" in f.value.columns)
    assert renamed["Run"].iloc[0] == "frozen base"


def keras_pretraining_accuracy(base) -> float:
    """Independent reference: the bundled model whole, its base replaced, scored by Keras."""
    reference = load_pretrained_model()
    target = reference.get_layer("feature_extractor")
    for layer in base.layers:  # each layer's own variables, LoRA adapters merged
        copy_weights_merging_adapters(layer, target.get_layer(layer.name))
    data = load_bundled_dataset("digits_0_4")
    reference.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
    return float(reference.evaluate(data.x, data.y, verbose=0, return_dict=True)["accuracy"])


def test_the_four_levers_compare_with_speed_and_forgetting_measured_like_keras():
    at = AppTest.from_file(APP, default_timeout=120).run()
    workspace = at.session_state["workspace"]
    base_path = workspace.base_path
    levers = []
    workspace.bulk_action("freeze_base")
    levers.append(TrainingConfig(epochs=2, learning_rate=1e-2))
    workspace.start_run(levers[-1], background=False)
    forgetting = [keras_pretraining_accuracy(workspace.tree.layer(base_path))]
    convolutions = [p for p in workspace.tree.base_layer_paths(base_path) if "conv" in p]
    workspace.set_lora(dict.fromkeys(convolutions, LoraSetting(2)))
    workspace.bulk_action("unfreeze_all")  # FreezeLab keeps the LoRA kernels frozen
    workspace.start_run(levers[-1], background=False)
    forgetting.append(keras_pretraining_accuracy(workspace.tree.layer(base_path)))
    rates = LayerRates(decay_factor=0.1, layers_per_block=2, base_path=base_path)
    workspace.set_lora({})
    decayed = TrainingConfig(epochs=2, learning_rate=1e-2, layer_rates=rates)
    workspace.start_run(decayed, background=False)
    forgetting.append(keras_pretraining_accuracy(workspace.tree.layer(base_path)))
    open_tab(at, "Compare runs")
    assert not at.exception, [e.value for e in at.exception]
    compared = next(frame.value for frame in at.dataframe if "Run" in frame.value.columns)
    assert compared["LoRA adapters"].tolist() == [0, len(convolutions), 0]
    assert compared["Per-layer rates"].tolist()[:2] == ["", ""]
    assert "decay x0.1" in compared["Per-layer rates"].iloc[2]
    assert compared["Seconds per epoch"].gt(0).all()
    measured = compared[PRETRAINING_COLUMN].tolist()
    assert measured == pytest.approx(forgetting, abs=1e-6)
    assert measured[0] == 1.0  # a frozen base forgets nothing: its features are the same
    counts = [run.counts for run in workspace.runs]
    assert compared["Trainable params"].tolist() == [count.trainable for count in counts]
