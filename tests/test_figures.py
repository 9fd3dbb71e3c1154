"""Tests for components.figures: drift and training figures checked against a real tiny fit."""

import ast
import math
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from components import figures
from components.figures import (
    FROZEN_COLOR,
    TRAINABLE_COLOR,
    drift_heatmap_figure,
    drift_lines_figure,
    final_drift_bar_figure,
    final_drift_table,
    state_drift_figure,
    training_curves_figure,
)
from models.drift import DRIFT_COLUMNS
from models.training import TrainingConfig, TrainingJob
from models.tree import STATE_KIND, WEIGHTS_KIND, LayerTree

FROZEN_PATHS = ("transfer_model/middle", "transfer_model/feature_extractor/bn_frozen")


def tiny_transfer_model() -> keras.Model:
    """A nested model: two BatchNorm layers (one to freeze) inside a feature extractor."""
    extractor = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="conv_1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(5, name="conv_2"),
            keras.layers.BatchNormalization(name="bn_frozen"),
        ],
        name="feature_extractor",
    )
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="middle")(extractor(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    return keras.Model(inputs, outputs, name="transfer_model")


@pytest.fixture(scope="module")
def trained():
    """A real synchronous training run with two frozen layers, drift every 2 batches."""
    keras.utils.set_random_seed(7)
    model = tiny_transfer_model()
    tree = LayerTree(model)
    for path in FROZEN_PATHS:
        tree.set_frozen(path, True)
    generator = np.random.default_rng(0)
    x = generator.normal(size=(80, 6)).astype("float32") * 3 + 1
    y = generator.integers(0, 3, size=80)
    config = TrainingConfig(
        epochs=3, batch_size=16, learning_rate=0.05, validation_fraction=0.2, drift_every_batches=2
    )
    job = TrainingJob(model, x, y, config=config, tree=tree)
    progress = job.run()
    assert progress.state.value == "finished", progress.message
    nodes = tree.nodes()
    return {
        "model": model,
        "tree": tree,
        "drift": job.drift_frame(),
        "progress": progress,
        "order": [node.path for node in nodes],
        "depths": {node.path: node.depth for node in nodes},
    }


def paths_with(trained, kind: str) -> list[str]:
    """Independent reference from Keras: layers (model order) holding variables of that kind."""
    tree, paths = trained["tree"], []
    for path in trained["order"]:
        layer = tree.layer(path)
        if isinstance(layer, keras.Model):
            continue  # a nested model's variables belong to its layers
        variables = layer.trainable_weights + layer.non_trainable_weights
        if kind == STATE_KIND:
            has = isinstance(layer, keras.layers.BatchNormalization)
        else:
            has = bool(variables)  # every layer here with variables has trainable-type ones
        if has:
            paths.append(path)
    return paths


def annotation_texts(figure: go.Figure) -> list[str]:
    return [annotation.text for annotation in figure.layout.annotations]


# ------------------------------------------------------------------------------- constants
def test_frozen_has_its_own_colour():
    assert FROZEN_COLOR != TRAINABLE_COLOR
    assert FROZEN_COLOR not in figures.TRAINABLE_PALETTE


@pytest.mark.parametrize(
    "path", sorted(Path(figures.__file__).parent.glob("*.py")), ids=lambda path: path.name
)
def test_figures_modules_never_import_streamlit_or_models(path):
    source = path.read_text()
    roots = set()
    # From models/ the figures take only the vocabulary they draw (drift columns, kinds) and the
    # argument checks; never a model, a job or Keras itself.
    vocabulary = (
        None,
        "models.validation",
        "models.drift",
        "models.tree",
        "models.diagnostics",
        "models.representation",
        "models.advisor",
    )
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module not in vocabulary:
            roots.add(node.module.split(".")[0])
    assert not roots & {"streamlit", "models", "keras", "tensorflow"}
    assert not re.search(r"\bst\.", source)


# ------------------------------------------------------------------------------ drift lines
def test_lines_one_trace_per_layer_in_model_order_frozen_dashed_grey(trained):
    drift = trained["drift"]
    figure = drift_lines_figure(drift, layer_order=trained["order"])
    expected = paths_with(trained, WEIGHTS_KIND)
    assert len(figure.data) == len(expected) == 6
    for trace, path in zip(figure.data, expected, strict=True):
        assert trace.name == path.removeprefix("transfer_model/")
        assert path in trace.hovertemplate
        assert "%{y:" in trace.hovertemplate and "epoch %{customdata[0]}" in trace.hovertemplate
        rows = drift[(drift.layer_path == path) & (drift.kind == WEIGHTS_KIND)]
        np.testing.assert_array_equal(trace.x, rows.step.to_numpy())
        np.testing.assert_array_equal(trace.y, rows.relative_change.to_numpy())
        if path in FROZEN_PATHS:
            assert trace.line.color == FROZEN_COLOR and trace.line.dash == "dash"
            assert trace.legendgroup == "frozen"
            assert np.all(np.asarray(trace.y) == 0.0)  # truly frozen: flat at exactly zero
        else:
            assert trace.line.color != FROZEN_COLOR and trace.line.dash is None
            assert trace.legendgroup == "trainable"
            assert trace.y[-1] > 0
    trainable_colors = [t.line.color for t in figure.data if t.legendgroup == "trainable"]
    assert len(set(trainable_colors)) == len(trainable_colors)
    titled = [t.legendgrouptitle.text for t in figure.data if t.legendgrouptitle.text]
    assert sorted(titled) == ["Frozen (should stay at 0)", "Trainable"]


def test_lines_follow_a_given_layer_order_and_cap_the_number_of_layers(trained):
    expected = paths_with(trained, WEIGHTS_KIND)
    reversed_figure = drift_lines_figure(trained["drift"], layer_order=expected[::-1])
    assert [t.name for t in reversed_figure.data] == [
        p.removeprefix("transfer_model/") for p in expected[::-1]
    ]
    capped = drift_lines_figure(trained["drift"], layer_order=trained["order"], max_layers=3)
    names = [t.name for t in capped.data]
    assert len(names) == 3
    assert names[0] == expected[0].removeprefix("transfer_model/")
    assert names[-1] == expected[-1].removeprefix("transfer_model/")
    assert "Showing 3 of 6 layers" in capped.layout.title.text


def test_lines_empty_states_say_why(trained):
    for empty in (None, pd.DataFrame(), pd.DataFrame(columns=list(DRIFT_COLUMNS))):
        figure = drift_lines_figure(empty)
        assert len(figure.data) == 0
        assert any("No drift recorded yet" in text for text in annotation_texts(figure))
    weights_only = trained["drift"][trained["drift"].kind == WEIGHTS_KIND]
    figure = drift_lines_figure(weights_only, kind=STATE_KIND)
    assert len(figure.data) == 0
    assert any("No non-trainable state" in text for text in annotation_texts(figure))
    figure.to_json()  # serialisable, as Streamlit needs


def test_bad_inputs_raise_clear_errors(trained):
    with pytest.raises(ValueError, match="kind"):
        drift_lines_figure(trained["drift"], kind="gradients")
    with pytest.raises(TypeError, match="DataFrame"):
        drift_heatmap_figure({"step": [0]})
    with pytest.raises(ValueError, match="lacks the columns"):
        final_drift_bar_figure(trained["drift"].drop(columns=["frozen"]))
    with pytest.raises(TypeError, match="layer_order"):
        final_drift_table(trained["drift"], layer_order="transfer_model/out")
    with pytest.raises(ValueError, match="max_layers"):
        drift_lines_figure(trained["drift"], max_layers=0)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        training_curves_figure({"loss": [1.0]}, batches_per_epoch=0)


def test_a_layer_trained_in_any_fit_is_not_drawn_as_frozen():
    rows = [
        # step, epoch, path, name, class, kind, relative, max_abs, unchanged, frozen, params
        (0, 0, "m/a", "a", "Dense", "weights", 0.0, 0.0, True, True, 3),
        (4, 1, "m/a", "a", "Dense", "weights", 0.0, 0.0, True, True, 3),
        (8, 2, "m/a", "a", "Dense", "weights", 0.2, 0.1, False, False, 3),  # unfrozen later
        (0, 0, "m/b", "b", "Dense", "weights", 0.0, 0.0, True, True, 2),
        (4, 1, "m/b", "b", "Dense", "weights", 0.0, 0.0, True, True, 2),
        (8, 2, "m/b", "b", "Dense", "weights", 0.0, 0.0, True, True, 2),
    ]
    drift = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
    figure = drift_lines_figure(drift)
    assert [t.line.color == FROZEN_COLOR for t in figure.data] == [False, True]
    table = final_drift_table(drift)
    assert table["Frozen"].tolist() == [False, True]


# ---------------------------------------------------------------------------------- heatmap
def test_heatmap_matrix_is_layers_by_steps_in_model_order(trained):
    drift = trained["drift"]
    figure = drift_heatmap_figure(drift, layer_order=trained["order"], depths=trained["depths"])
    (heatmap,) = figure.data
    expected = paths_with(trained, WEIGHTS_KIND)
    steps = sorted(drift.step.unique())
    assert steps == [0, 2, 4, 6, 8, 10, 12]  # 4 batches an epoch, 3 epochs, every 2 batches
    z = np.asarray(heatmap.z, dtype=float)
    assert z.shape == (len(expected), len(steps))
    assert list(heatmap.x) == steps
    reference = (
        drift[drift.kind == WEIGHTS_KIND]
        .pivot(index="layer_path", columns="step", values="relative_change")
        .loc[expected, steps]
        .to_numpy()
    )
    np.testing.assert_array_equal(z, reference)
    # Batch records measure the layers that train; frozen ones are blank between epoch ends.
    for row, path in zip(z, expected, strict=True):
        blank = [step for step, value in zip(steps, row, strict=True) if np.isnan(value)]
        assert blank == ([2, 6, 10] if path in FROZEN_PATHS else []), path
    assert "measured at the start and at each epoch end" in figure.layout.title.text
    # The heatmap sits in a half-width column and plotly never wraps a title: short lines only,
    # and the top margin grows with them.
    title_lines = re.sub(r"<[^>]+>", "\n", figure.layout.title.text).split("\n")
    assert max(len(line) for line in title_lines) <= 60, title_lines
    assert figure.layout.margin.t >= 60 + 20 * figure.layout.title.text.count("<br>")
    assert figure.layout.plot_bgcolor == figures.GAP_COLOR  # a gap reads as "not measured"
    assert [row[0] for row in heatmap.text] == expected  # the hover path of each row
    assert "%{text}" in heatmap.hovertemplate and "%{z:" in heatmap.hovertemplate
    assert figure.layout.yaxis.autorange == "reversed"  # first layer on top
    labels = list(figure.layout.yaxis.ticktext)
    for label, path in zip(labels, expected, strict=True):
        depth = trained["depths"][path]
        indent = "\u00a0" * 3 * (depth - 1)
        mark = "❄ " if path in FROZEN_PATHS else ""
        assert label == indent + mark + path.rsplit("/", 1)[1]
    assert list(figure.layout.yaxis.tickvals) == list(range(len(expected)))


def test_heatmap_rows_follow_the_given_order_and_state_kind(trained):
    expected = paths_with(trained, WEIGHTS_KIND)[::-1]
    figure = drift_heatmap_figure(trained["drift"], layer_order=expected)
    assert [row[0] for row in figure.data[0].text] == expected
    state = drift_heatmap_figure(trained["drift"], kind=STATE_KIND, layer_order=trained["order"])
    assert np.asarray(state.data[0].z).shape == (2, 7)
    empty = drift_heatmap_figure(None, layer_order=trained["order"])
    assert len(empty.data) == 0 and annotation_texts(empty)


# ------------------------------------------------------------------------------- final bars
def test_final_bars_coloured_by_frozen_in_model_order(trained):
    drift = trained["drift"]
    figure = final_drift_bar_figure(drift, layer_order=trained["order"])
    expected = paths_with(trained, WEIGHTS_KIND)
    short = [p.removeprefix("transfer_model/") for p in expected]
    assert list(figure.layout.yaxis.categoryarray) == short
    assert figure.layout.yaxis.autorange == "reversed"
    by_name = {trace.name: trace for trace in figure.data}
    assert set(by_name) == {"Frozen", "Trainable"}
    assert by_name["Frozen"].marker.color == FROZEN_COLOR
    assert by_name["Trainable"].marker.color == TRAINABLE_COLOR
    final = drift[drift.kind == WEIGHTS_KIND].groupby("layer_path").tail(1).set_index("layer_path")
    for name, trace in by_name.items():
        paths = [p for p in expected if (p in FROZEN_PATHS) == (name == "Frozen")]
        assert list(trace.y) == [p.removeprefix("transfer_model/") for p in paths]
        np.testing.assert_array_equal(trace.x, final.loc[paths, "relative_change"].to_numpy())
        assert [row[0] for row in trace.customdata] == paths
    assert np.all(np.asarray(by_name["Frozen"].x) == 0.0)
    assert np.all(np.asarray(by_name["Trainable"].x) > 0.0)
    assert annotation_texts(final_drift_bar_figure(None))


# ------------------------------------------------------------------------------ state panel
def test_state_figure_shows_only_batch_norm_layers(trained):
    figure = state_drift_figure(trained["drift"], layer_order=trained["order"])
    batch_norm = trained["tree"].batch_norm_paths()
    assert batch_norm == paths_with(trained, STATE_KIND)
    assert [t.name for t in figure.data] == [p.removeprefix("transfer_model/") for p in batch_norm]
    assert "BatchNorm moving mean/variance" in figure.layout.title.text
    assert "stays at zero when frozen" in figure.layout.title.text
    frozen, trainable = (
        next(t for t in figure.data if t.name.endswith("bn_frozen")),
        next(t for t in figure.data if t.name.endswith("/bn")),
    )
    assert frozen.line.color == FROZEN_COLOR and frozen.line.dash == "dash"
    assert np.all(np.asarray(frozen.y) == 0.0)
    assert trainable.line.color != FROZEN_COLOR and trainable.y[-1] > 0
    no_batch_norm = trained["drift"][~trained["drift"].layer_path.isin(batch_norm)]
    empty = state_drift_figure(no_batch_norm)
    assert len(empty.data) == 0
    assert any("No non-trainable state in this model" in t for t in annotation_texts(empty))


# --------------------------------------------------------------------------- training curves
def test_training_curves_put_train_and_validation_on_the_right_subplots(trained):
    progress = trained["progress"]
    figure = training_curves_figure(
        progress.history, progress.batch_history, progress.batches_per_epoch
    )
    by_name = {trace.name: trace for trace in figure.data}
    for word, axis in (("loss", "x"), ("accuracy", "x2")):
        for label, key in (("Training", word), ("Validation", f"val_{word}")):
            trace = by_name[f"{label} {word}"]
            assert trace.xaxis == axis
            assert list(trace.x) == [1, 2, 3]
            np.testing.assert_allclose(trace.y, progress.history[key])
    assert by_name["Training loss"].line.color != by_name["Validation loss"].line.color
    # Keras logs the epoch's running mean after each batch, so at fractional epoch k the faint
    # per-batch curve meets epoch k's point exactly.
    batch = by_name["Training loss per batch"]
    assert batch.xaxis == "x" and batch.opacity < 1
    assert progress.batches_per_epoch == 4
    x = np.asarray(batch.x)
    np.testing.assert_allclose(x, np.arange(1, 13) / 4)
    ends = np.flatnonzero(np.isclose(x, np.round(x)))
    np.testing.assert_allclose(np.asarray(batch.y)[ends], progress.history["loss"], rtol=1e-6)
    assert figure.layout.xaxis.title.text == "Epoch"
    assert figure.layout.yaxis2.title.text == "Accuracy"


def test_training_curves_single_epoch_empty_and_unknown_batches_per_epoch():
    single = training_curves_figure({"loss": [0.9], "accuracy": [0.5]})
    assert len(single.data) == 2
    assert all("markers" in trace.mode for trace in single.data)
    assert list(single.data[0].x) == [1]

    for empty in (None, {}, {"loss": []}):
        figure = training_curves_figure(empty, {"step": [], "loss": []})
        assert len(figure.data) == 0
        assert any("No training history yet" in t for t in annotation_texts(figure))

    # First epoch still running: only per-batch values, batches per epoch unknown.
    live = training_curves_figure({}, {"step": [1.0, 2.0, 3.0], "loss": [1.2, 1.1, 1.0]})
    (trace,) = live.data
    assert trace.xaxis == "x3" and live.layout.xaxis3.overlaying == "x"
    assert live.layout.xaxis3.title.text == "Batches seen"
    # Steps that restart each epoch cannot be placed without batches_per_epoch: left out.
    restarted = training_curves_figure(
        {"loss": [1.0]}, {"step": [1.0, 2.0, 1.0], "loss": [1.2, 1.0, 0.9]}
    )
    assert [t.name for t in restarted.data] == ["Training loss"]
    no_accuracy = training_curves_figure({"loss": [1.0, 0.8]})
    assert "No accuracy recorded" in annotation_texts(no_accuracy)
    no_accuracy.to_json()


# ------------------------------------------------------------------------------------ table
def test_final_table_one_row_per_layer_with_keras_counts(trained):
    drift, model_tree = trained["drift"], trained["tree"]
    table = final_drift_table(drift, layer_order=trained["order"])
    expected = paths_with(trained, WEIGHTS_KIND)
    assert table["Layer path"].tolist() == expected
    assert list(table.columns) == list(figures.TABLE_COLUMNS)
    for _, row in table.iterrows():
        layer = model_tree.layer(row["Layer path"])
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        assert row["Class"] == type(layer).__name__
        assert row["Frozen"] == (row["Layer path"] in FROZEN_PATHS)
        assert row["Parameters"] == sum(math.prod(w.shape) for w in layer.weights)
        assert math.isnan(row["State relative change"]) == (not is_batch_norm)
        assert math.isnan(row["State max abs change"]) == (not is_batch_norm)
        assert row["Unchanged (weights and state)"] == row["Frozen"]
        if row["Frozen"]:
            assert row["Weights relative change"] == 0.0 and row["Weights max abs change"] == 0.0
        else:
            assert row["Weights relative change"] > 0.0
    bn = table.set_index("Layer path").loc["transfer_model/feature_extractor/bn"]
    final_state = drift[(drift.layer_path == bn.name) & (drift.kind == STATE_KIND)].iloc[-1]
    assert bn["State relative change"] == final_state.relative_change
    assert table["Frozen"].dtype == bool
    empty = final_drift_table(None)
    assert empty.empty and list(empty.columns) == list(figures.TABLE_COLUMNS)


# ------------------------------------------------------------------- representation change
def test_representation_bars_say_bitwise_for_unchanged_and_na_for_undefined():
    frame = pd.DataFrame(
        {
            "block_path": ["m/base/a", "m/base/b", "m/base/c"],
            "block_name": ["a", "b", "c"],
            "class_name": ["Conv2D", "Conv2D", "Dense"],
            "cka": [1.0, 0.8123456, float("nan")],
            "unchanged": [True, False, False],
            "frozen": [True, False, False],
            "frozen_through": [True, False, False],
            "num_features": [4, 4, 2],
        }
    )
    figure = figures.representation_figure(frame)
    (bar,) = figure.data
    assert list(bar.y) == ["a", "b", "c"] and list(bar.text) == ["1 (bitwise)", "0.8123", "n/a"]
    assert list(bar.x) == [1.0, 0.8123456, 0.0]
    assert len(set(bar.marker.color)) == 3
    empty = figures.representation_figure(frame.iloc[:0])
    assert "first epoch" in empty.layout.annotations[0].text
    with pytest.raises(ValueError, match="RepresentationRecorder"):
        figures.representation_figure(frame.drop(columns="cka"))
