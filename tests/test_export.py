"""Tests for models.export: generated Keras code, run config JSON, model and drift downloads."""

import ast
import copy
import dataclasses
import datetime
import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from models.catalogue import bundled_template, load_template
from models.datasets import load_bundled_dataset
from models.export import (
    RunConfig,
    download_file_name,
    drift_csv_bytes,
    freeze_statements,
    generate_code,
    model_file_bytes,
    parse_run_config,
    plan_counts,
    plan_from_config,
    run_config,
    run_config_bytes,
)
from models.training import TrainingConfig
from models.tree import LayerTree
from models.upload_data import dense_base_template, load_csv_dataset
from models.upload_model import uploaded_template
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def bundled():
    return bundled_template()


@pytest.fixture(scope="module")
def digits():
    return load_bundled_dataset("digits_5_9")


@pytest.fixture(scope="module")
def shapes():
    return load_bundled_dataset("shapes")


@pytest.fixture(scope="module")
def mobilenet_template():
    return load_template("mobilenet_v2_035", input_size=32, pretrained=False)


@pytest.fixture
def mobilenet(mobilenet_template):
    # A private copy of the config: Keras's Functional.from_config empties the dict it gets,
    # so ModelTemplate.instantiate() works once per template (reported to the lead).
    return dataclasses.replace(mobilenet_template, config=copy.deepcopy(mobilenet_template.config))


def _counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    frozen = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)
    return trainable, frozen


def _execute(code: str) -> dict:
    namespace = {"__name__": "freezelab_export"}
    exec(compile(code, "freezelab_export.py", "exec"), namespace)
    return namespace


def _assert_same_model(workspace: Workspace, dataset_key: str | None = None) -> str:
    """Generates the code of a workspace, runs it (no fit) and compares counts and flags."""
    plan = workspace.tree.frozen_paths()
    code = generate_code(
        workspace.template,
        workspace.dataset.input_shape,
        workspace.dataset.num_classes,
        plan,
        TrainingConfig(),
        dataset_key=dataset_key,
        tree=workspace.tree,
        include_training=False,
    )
    model = _execute(code)["model"]
    counts = workspace.tree.totals()
    assert _counts(model) == (counts.trainable, counts.non_trainable)
    assert _counts(model) == _counts(workspace.model)  # Keras's own counts, independently
    rebuilt = LayerTree(model)
    assert rebuilt.paths() == workspace.tree.paths()
    assert rebuilt.frozen_paths() == plan
    return code


def test_bundled_base_frozen_rebuilds_the_same_model(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    code = _assert_same_model(workspace, "digits_5_9")
    assert "base.trainable = False" in code
    assert 'get_layer("feature_extractor")' in code
    assert code.count(".trainable = ") == 1


def test_child_re_enabled_under_a_frozen_base(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    workspace.tree.set_frozen(f"{BASE}/batch_norm2", False)
    code = _assert_same_model(workspace)
    lines = [line for line in code.splitlines() if ".trainable = " in line]
    assert lines == [
        "base.trainable = False",
        'base.get_layer("batch_norm2").trainable = True  # re-enabled inside a frozen parent',
    ]


def test_bundled_base_on_rgb_shapes_uses_freezelab_layers(bundled, shapes):
    workspace = Workspace(bundled, shapes)  # 32x32x3 -> grayscale, resized to 8x8
    workspace.bulk_action("freeze_batch_norm")
    code = _assert_same_model(workspace, "shapes")
    assert "from models.layers import RGBToGrayscale" in code
    assert 'keras.layers.Resizing(8, 8, name="resize")' in code


def test_mobilenet_base_frozen_on_digits(mobilenet, digits):
    workspace = Workspace(mobilenet, digits)  # 8x8x1 -> resized to 32x32, 3 channels
    workspace.bulk_action("freeze_base")
    code = _assert_same_model(workspace, "digits_5_9")
    assert "keras.applications.MobileNetV2(" in code
    assert "weights=None" in code and "alpha=0.35" in code
    assert 'Concatenate(axis=-1, name="to_rgb")' in code
    assert 'Rescaling(2.0, -1.0, name="preprocess")' in code  # ImagenetPreprocessing("tf")
    assert "models.layers" not in code  # only built-in layers: runs without FreezeLab


def test_mobilenet_freeze_up_to_plan_uses_a_loop(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    block = next(path for path in workspace.tree.paths() if path.endswith("/block_2_add"))
    workspace.bulk_action("freeze_up_to", block)
    code = _assert_same_model(workspace, "shapes")
    assert "for name in [" in code
    assert len(freeze_statements(workspace.tree, workspace.tree.frozen_paths())) > 20


def test_mobilenet_unfreeze_top_plan(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    workspace.bulk_action("unfreeze_top", 5)
    _assert_same_model(workspace)


def test_whole_model_frozen_is_one_statement(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_all")
    code = _assert_same_model(workspace)
    assert [line for line in code.splitlines() if ".trainable = " in line] == [
        "model.trainable = False"
    ]


def test_uploaded_model_with_hostile_names(tmp_path, monkeypatch, digits):
    hostile = 'conv"); import os; os.system("echo hacked'
    inputs = keras.Input((8, 8, 1), name="pixels")
    features = keras.layers.Conv2D(4, 3, name=hostile)(inputs)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(features)
    model = keras.Model(inputs, outputs, name="uploaded")
    file_name = "my model\n# evil.keras"
    template = uploaded_template(model, "pool", file_name)
    saved_name = template.key.split(":", 2)[1]
    model.save(tmp_path / saved_name)
    monkeypatch.chdir(tmp_path)
    workspace = Workspace(template, digits)
    workspace.tree.set_frozen(f"transfer_model/uploaded_base/{hostile}", True)
    code = _assert_same_model(workspace)
    ast.parse(code)
    assert "hacked" not in "".join(
        line for line in code.splitlines() if not line.lstrip().startswith("#") and '"' not in line
    )


def test_dense_base_for_a_csv_table():
    table = b"a,b,c,label\n" + b"".join(
        f"{i},{i * 2 % 7},{i % 3},{i % 2}\n".encode() for i in range(40)
    )
    dataset, _ = load_csv_dataset(table, "label")
    workspace = Workspace(dense_base_template(dataset), dataset)
    workspace.bulk_action("freeze_batch_norm")
    code = _assert_same_model(workspace)
    assert "keras.layers.Normalization(" in code
    assert "x, y = ...  # replace with your arrays" in generate_code(
        workspace.template, (3,), 2, [], TrainingConfig(), tree=workspace.tree
    )


def test_training_part_parses_and_runs_with_the_settings(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    config = TrainingConfig(
        epochs=1, batch_size=64, learning_rate=0.003, optimizer="rmsprop", validation_fraction=0.25
    )
    code = generate_code(
        bundled,
        digits.input_shape,
        digits.num_classes,
        workspace.tree.frozen_paths(),
        config,
        dataset_key="digits_5_9",
        tree=workspace.tree,
    )
    tree = ast.parse(code)
    assert ast.get_docstring(tree).startswith("Rebuilds a FreezeLab setup")
    assert "keras.optimizers.RMSprop(learning_rate=0.003)" in code
    assert "epochs=1," in code and "batch_size=64," in code and "test_size=0.25," in code
    assert max(len(line) for line in code.splitlines()) <= 100
    namespace = _execute(code)
    assert len(namespace["x_validation"]) == math.ceil(0.25 * digits.num_samples)
    assert set(namespace["history"].history) >= {"loss", "val_accuracy"}
    # The frozen base did not move: compile came after the flags.
    original = keras.saving.load_model(namespace["BUNDLED_MODEL_FILE"], compile=False)
    for before, after in zip(
        original.get_layer("feature_extractor").get_weights(),
        namespace["base"].get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(before, after)


def test_generated_code_is_formatted_as_ruff_formats_it(mobilenet, digits):
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.is_file():
        pytest.skip("ruff is not installed next to this Python")
    workspace = Workspace(mobilenet, digits)
    block = next(path for path in workspace.tree.paths() if path.endswith("/block_1_project_BN"))
    workspace.bulk_action("freeze_up_to", block)
    code = generate_code(
        mobilenet,
        digits.input_shape,
        digits.num_classes,
        workspace.tree.frozen_paths(),
        TrainingConfig(),
        dataset_key="digits_5_9",
        tree=workspace.tree,
    )
    arguments = [str(ruff), "format", "--isolated", "--line-length", "100", "-"]
    formatted = subprocess.run(arguments, input=code, capture_output=True, text=True, check=True)
    assert formatted.stdout == code
    arguments = [str(ruff), "check", "--isolated", "--select", "E,W,F,I,B,UP", "-"]
    arguments[-1:-1] = ["--line-length", "100"]
    checked = subprocess.run(arguments, input=code, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_generate_code_refuses_bad_input(bundled, digits):
    workspace = Workspace(bundled, digits)
    with pytest.raises(ValueError, match="not in model"):
        generate_code(bundled, (8, 8, 1), 5, ["nope"], TrainingConfig(), tree=workspace.tree)
    with pytest.raises(TypeError, match="single string"):
        generate_code(bundled, (8, 8, 1), 5, BASE, TrainingConfig(), tree=workspace.tree)
    with pytest.raises(TypeError, match="TrainingConfig"):
        generate_code(bundled, (8, 8, 1), 5, [], {"epochs": 3})


def test_generate_code_builds_the_model_when_no_tree_is_given(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    plan = workspace.tree.frozen_paths()  # a plan lists every flag that is False
    code = generate_code(bundled, (8, 8, 1), 5, plan, TrainingConfig(), include_training=False)
    counts = workspace.tree.totals()
    assert _counts(_execute(code)["model"]) == (counts.trainable, counts.non_trainable)
    assert counts.trainable == 32 * 5 + 5


def test_plan_counts_match_keras_without_touching_the_model(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    tree = workspace.tree
    block = next(path for path in tree.paths() if path.endswith("/block_3_project_BN"))
    before = tree.totals()
    for action, argument in (("freeze_up_to", block), ("freeze_batch_norm", None)):
        workspace.bulk_action(action, argument)
        plan = tree.frozen_paths()
        workspace.bulk_action("unfreeze_all")
        assert plan_counts(tree, plan) != before
        assert tree.totals() == before
        tree.apply_frozen_paths(plan)
        assert plan_counts(tree, plan) == tree.totals()
        workspace.bulk_action("unfreeze_all")


# ---------------------------------------------------------------------------- run config
def _config(bundled, **overrides) -> dict:
    arguments = dict(
        template=bundled,
        dataset_key="digits_5_9",
        dataset_title="Handwritten digits 5-9",
        frozen_paths={BASE, f"{BASE}/conv1"},
        config=TrainingConfig(epochs=4, learning_rate=0.01, optimizer="sgd"),
        counts=None,
        run_id=2,
        created_at=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    arguments.update(overrides)
    return run_config(**arguments)


def test_run_config_round_trip(bundled):
    data = _config(bundled)
    assert data["frozen_paths"] == sorted(data["frozen_paths"])
    assert data["created_at"] == "2025-01-02T03:04:05+00:00"
    config = parse_run_config(run_config_bytes(data))
    assert isinstance(config, RunConfig)
    assert config.training == TrainingConfig(epochs=4, learning_rate=0.01, optimizer="sgd")
    assert config.frozen_paths == (BASE, f"{BASE}/conv1")
    assert config.template_key == "bundled_digits_cnn" and config.pretrained
    assert config.catalogue_key == "bundled_digits_cnn" and config.input_size is None
    assert config.run_id == 2 and config.counts is None


def test_run_config_keeps_counts_and_application_size(mobilenet, digits):
    workspace = Workspace(mobilenet, digits)
    data = run_config(
        mobilenet, "digits_5_9", "Digits", [], TrainingConfig(), workspace.tree.totals()
    )
    config = parse_run_config(json.dumps(data))
    assert config.counts == workspace.tree.totals()
    assert (config.catalogue_key, config.input_size) == ("mobilenet_v2_035", 32)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: b"\xff\xfe", "not UTF-8"),
        (lambda data: b"{not json", "not valid JSON"),
        (lambda data: b"[1, 2]", "JSON object"),
        (lambda data: {**data, "format": "other"}, "not a FreezeLab run config"),
        (lambda data: {**data, "format_version": 99}, "format_version 99"),
        (lambda data: {**data, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        (lambda data: {**data, "model": {**data["model"], "colour": "red"}}, "'model'"),
        (lambda data: {**data, "frozen_paths": "transfer_model"}, "must be list"),
        (lambda data: {**data, "frozen_paths": [3]}, r"frozen_paths\[0\]"),
        (lambda data: {**data, "run_id": True}, "'run_id' must be int or null"),
        (lambda data: {**data, "training": {**data["training"], "epochs": "3"}}, "training"),
        (lambda data: {**data, "training": {**data["training"], "speed": 3}}, "'training'"),
        (lambda data: {**data, "training": {**data["training"], "optimizer": "x"}}, "optimizer"),
        (lambda data: {**data, "counts": {"trainable": -1, "non_trainable": 0}}, ">= 0"),
        (lambda data: {k: v for k, v in data.items() if k != "dataset"}, "no 'dataset'"),
        (lambda data: b" " * (3 * 1024 * 1024), "limit"),
    ],
)
def test_parse_run_config_explains_what_is_wrong(bundled, mutate, message):
    changed = mutate(_config(bundled))
    data = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
    with pytest.raises(ValueError, match=message):
        parse_run_config(data)


def test_parse_run_config_refuses_other_types():
    with pytest.raises(TypeError, match="bytes or text"):
        parse_run_config({"format": "freezelab-run-config"})


def test_plan_from_config_skips_missing_paths_with_a_notice(bundled, digits, mobilenet):
    config = parse_run_config(run_config_bytes(_config(bundled)))
    workspace = Workspace(bundled, digits)
    plan, notices = plan_from_config(config, workspace.tree, template_key=bundled.key)
    assert plan == {BASE, f"{BASE}/conv1"} and notices == []
    workspace.apply_plan(plan)
    assert workspace.tree.frozen_paths() == plan

    other = Workspace(mobilenet, digits)
    plan, notices = plan_from_config(config, other.tree, template_key=mobilenet.key)
    assert plan == frozenset()
    assert len(notices) == 2
    assert "made for model" in notices[0]
    assert f"'{BASE}'" in notices[1] and "do not exist" in notices[1]


# ----------------------------------------------------------------------------- downloads
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


@pytest.mark.parametrize(
    ("dataset_key", "expected"),
    [
        ("mnist", "(x, y), _ = keras.datasets.mnist.load_data()"),
        ("cifar10", 'x = (x.astype("float32") / 255.0)\n'),
        ("digits_0_4", "DIGITS = (0, 1, 2, 3, 4)"),
        ("shapes", "from models.datasets import generate_shapes"),
        ("uploaded_images", "x, y = ...  # replace with your arrays"),
        (None, "#   y: integer labels 0..4 of shape (num_samples,)"),
    ],
)
def test_data_loading_code_for_each_kind_of_dataset(bundled, digits, dataset_key, expected):
    workspace = Workspace(bundled, digits)
    code = generate_code(
        bundled, (8, 8, 1), 5, [], TrainingConfig(), dataset_key=dataset_key, tree=workspace.tree
    )
    ast.parse(code)
    assert expected in code
    assert "# Freeze plan: nothing is frozen, every layer trains." in code
