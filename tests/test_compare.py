"""Tests for run comparison: the overlay figures and the Compare runs tab."""

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from components.figures import (
    COMPARISON_PALETTE,
    comparison_curves_figure,
    comparison_drift_figure,
)
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
