"""Tests for models/export/config_json.py: the run config JSON, written and read back."""

import datetime
import json

import pytest

from models.export.config_json import (
    RunConfig,
    parse_run_config,
    plan_from_config,
    run_config,
    run_config_bytes,
)
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
