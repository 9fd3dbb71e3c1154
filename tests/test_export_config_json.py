"""Tests for models/export/config_json.py: the run config JSON, written and read back."""

import datetime
import json
import math

import pytest

from models.export.config_json import (
    RunConfig,
    lora_from_config,
    parse_run_config,
    plan_from_config,
    run_config,
    run_config_bytes,
    training_from_config,
)
from models.layer_rates import LayerRates
from models.lora import LoraSetting
from models.training import TrainingConfig
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"


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


def _keras_counts(model) -> tuple[int, int]:
    """Independent reference: Keras's own weight lists."""
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    return trainable, sum(math.prod(weight.shape) for weight in model.non_trainable_weights)


RATES = LayerRates({"transfer_model/classifier": 2.0}, decay_factor=0.5, layers_per_block=2)
ADAPTERS = {f"{BASE}/conv2": LoraSetting(2, 8.0), "transfer_model/classifier": LoraSetting(4, 4.0)}


def test_lora_adapters_and_layer_rates_round_trip(bundled):
    adapters = {"transfer_model/classifier": LoraSetting(4), f"{BASE}/conv2": LoraSetting(2, 8.0)}
    data = _config(bundled, config=TrainingConfig(layer_rates=RATES), adapters=adapters)
    assert data["format_version"] == 1
    assert data["lora_adapters"] == {
        f"{BASE}/conv2": {"rank": 2, "alpha": 8.0},
        "transfer_model/classifier": {"rank": 4, "alpha": 4.0},
    }  # sorted by path, the alpha Keras uses written out
    assert data["training"]["layer_rates"]["decay_factor"] == 0.5
    config = parse_run_config(run_config_bytes(data))
    assert config.training.layer_rates == RATES
    assert config.lora_adapters == {
        f"{BASE}/conv2": LoraSetting(2, 8.0),
        "transfer_model/classifier": LoraSetting(4, 4.0),
    }


def test_a_config_without_adapters_or_rates_reads_as_before(bundled):
    data = _config(bundled, adapters={})
    assert "lora_adapters" not in data and "layer_rates" not in data["training"]
    assert list(data) == [  # byte for byte the keys of format_version 1 before LoRA existed
        "format",
        "format_version",
        "freezelab_version",
        "keras_version",
        "created_at",
        "run_id",
        "model",
        "dataset",
        "frozen_paths",
        "training",
        "counts",
    ]
    config = parse_run_config(run_config_bytes(data))
    assert config.lora_adapters == {} and config.training.layer_rates is None


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        ([], r"'lora_adapters' must be dict; received list"),
        ({"x": 4}, r"lora_adapters\['x'\] must be an object"),
        ({"x": {"rank": "4"}}, r"lora_adapters\['x'\].'rank' must be int; received str"),
        ({"x": {"rank": 4, "beta": 1}}, r"unknown key\(s\) \['beta'\]"),
        ({"x": {"alpha": 4.0}}, r"no lora_adapters\['x'\].'rank'"),
        ({"x": {"rank": 0}}, r"lora_adapters\['x'\] is invalid: `rank` must be .* from 1 to 512"),
        ({"x": {"rank": 4, "alpha": True}}, r"'alpha' must be int or float or null"),
        ({"x": {"rank": 4, "alpha": 1e9}}, r"`alpha` must be a number from 0.01 to 4096"),
        ({"": {"rank": 4}}, "non-empty layer path"),
    ],
)
def test_bad_lora_adapters_are_explained(bundled, adapters, message):
    data = {**_config(bundled), "lora_adapters": adapters}
    with pytest.raises(ValueError, match=message):
        parse_run_config(json.dumps(data))


def test_bad_layer_rates_are_explained(bundled):
    data = _config(bundled, config=TrainingConfig(layer_rates=RATES))
    data["training"]["layer_rates"]["decay_factor"] = 2
    with pytest.raises(ValueError, match=r"training settings are invalid: .*decay_factor"):
        parse_run_config(json.dumps(data))
    data["training"]["layer_rates"] = {"speed": 1}
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['speed'\]"):
        parse_run_config(json.dumps(data))


def test_run_config_refuses_adapters_that_are_not_lora_settings(bundled):
    with pytest.raises(TypeError, match="must be a LoraSetting; received dict"):
        _config(bundled, adapters={BASE: {"rank": 4}})
    with pytest.raises(TypeError, match="must map layer paths to LoraSetting"):
        _config(bundled, adapters=[(BASE, LoraSetting(4))])


def test_a_restored_config_gives_the_same_adapters_and_counts_as_keras(bundled, digits):
    source = Workspace(bundled, digits)
    source.set_lora(ADAPTERS)
    source.bulk_action("freeze_base")
    data = run_config(
        bundled,
        "digits_5_9",
        "Digits",
        source.tree.frozen_paths(),
        TrainingConfig(layer_rates=RATES),
        source.tree.totals(),
        adapters=source.lora_plan(),
    )
    config = parse_run_config(run_config_bytes(data))
    target = Workspace(bundled, digits)
    adapters, notices = lora_from_config(config, target.tree)
    assert adapters == source.lora_plan() and notices == []
    target.set_lora(adapters)
    plan, _ = plan_from_config(config, target.tree)
    target.apply_plan(plan)
    assert target.tree.totals() == config.counts == source.tree.totals()
    assert _keras_counts(target.model) == (config.counts.trainable, config.counts.non_trainable)
    settings, notices = training_from_config(config, target.tree)
    assert settings.layer_rates == RATES and notices == []


def test_adapters_and_rates_the_current_model_cannot_take_are_left_out(bundled, digits):
    adapters = {**ADAPTERS, f"{BASE}/batch_norm1": LoraSetting(2)}
    data = run_config(
        bundled,
        "digits_5_9",
        "Digits",
        [],
        TrainingConfig(layer_rates=LayerRates({"transfer_model/nope": 0.5})),
        adapters={**adapters, "transfer_model/gone": LoraSetting(2)},
    )
    config = parse_run_config(run_config_bytes(data))
    workspace = Workspace(bundled, digits)
    kept, notices = lora_from_config(config, workspace.tree)
    assert kept == ADAPTERS
    assert "'transfer_model/gone'" in notices[0] and "do" in notices[0]
    assert f"'{BASE}/batch_norm1' was skipped" in notices[1] and "BatchNormalization" in notices[1]
    settings, notices = training_from_config(config, workspace.tree)
    assert settings.layer_rates is None and settings.epochs == config.training.epochs
    assert "left out" in notices[0] and "transfer_model/nope" in notices[0]
