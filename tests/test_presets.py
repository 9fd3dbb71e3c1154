"""Tests for models.presets: instructor links that preset model, data, plan and settings."""

import math
import re
import urllib.parse

import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.layer_rates import LayerRates
from models.lora import LoraSetting
from models.presets import (
    HIDEABLE_CONTROLS,
    PARAMETERS,
    Preset,
    parse_query,
    plan_steps,
    preset_for,
    preset_link,
    preset_query,
    resolve_frozen_paths,
    resolve_layer_rates,
    resolve_lora,
)
from models.training import TrainingConfig
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"
FULL_QUERY = {
    "model": "mobilenet_v2_035",
    "size": "96",
    "weights": "random",
    "data": "digits_5_9",
    "freeze": "base",
    "epochs": "3",
    "lr": "0.001",
    "batch": "16",
    "opt": "adam",
    "val": "0.25",
    "hide": "model,data",
    "title": "Lab 1",
    "msg": "Freeze the base, then train.",
}


@pytest.fixture(scope="module")
def workspace():
    return Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))


def test_a_valid_full_preset():
    preset, notices = parse_query(FULL_QUERY)
    assert notices == []
    assert preset == Preset(
        model="mobilenet_v2_035",
        input_size=96,
        pretrained=False,
        dataset="digits_5_9",
        freeze="base",
        epochs=3,
        learning_rate=0.001,
        batch_size=16,
        optimizer="adam",
        validation_fraction=0.25,
        hidden=frozenset({"model", "data"}),
        title="Lab 1",
        message="Freeze the base, then train.",
    )
    assert preset.hides("model") and not preset.hides("freeze")
    assert preset.freeze_action() == ("freeze_base", None)
    assert preset.training_config(TrainingConfig(seed=7)) == TrainingConfig(
        epochs=3, learning_rate=0.001, batch_size=16, validation_fraction=0.25, seed=7
    )


def test_an_empty_query_is_an_empty_preset():
    preset, notices = parse_query({})
    assert preset.is_empty and notices == []
    assert preset.training_config() == TrainingConfig()
    assert preset.freeze_action() is None and preset_query(preset) == {}


@pytest.mark.parametrize(
    ("name", "value", "field", "accepted"),
    [
        ("model", "vgg99", "model", "mobilenet_v2_035"),
        ("size", "8", "input_size", "from 32 to 512"),
        ("size", "big", "input_size", "whole number"),
        ("weights", "imagenet21k", "pretrained", "'random'"),
        ("data", "cifar100", "dataset", "digits_5_9"),
        ("freeze", "everything", "freeze", "'up_to:<layer path>'"),
        ("freeze", "top:-1", "freeze", "'top:<n>'"),
        ("frozen", "a,,\x00b", "freeze_steps", "printable"),
        ("epochs", "three", "epochs", "from 1 to 1000"),
        ("epochs", "5000", "epochs", "from 1 to 1000"),
        ("lr", "0", "learning_rate", "from 1e-06 to 10"),
        ("lr", "nan", "learning_rate", "from 1e-06 to 10"),
        ("lr", "fast", "learning_rate", "number"),
        ("batch", "0", "batch_size", "from 1 to 65536"),
        ("opt", "lion", "optimizer", "['adam', 'adamw', 'rmsprop', 'sgd']"),
        ("val", "0.95", "validation_fraction", "from 0 to 0.9"),
        ("hide", "model,everything", "hidden", "'upload'"),
        ("colour", "red", None, "Known parameters"),
    ],
)
def test_each_invalid_parameter_is_ignored_with_a_notice(name, value, field, accepted):
    query = {"model": "mobilenet_v2_035", name: value} if name != "model" else {name: value}
    preset, notices = parse_query(query)
    assert len(notices) == 1, notices
    notice = notices[0]
    assert re.search(rf"URL parameter '?{name}", notice) and accepted in notice
    assert "''" not in notice and notice.count("ignored") == 1  # quotes once, said once
    shown = {"hide": "'everything'", "frozen": "'\\x00b'"}.get(name, repr(value))
    assert shown in notice
    if field == "hidden":
        assert preset.hidden == frozenset({"model"})  # the valid item is kept
    elif field is not None:
        assert getattr(preset, field) == getattr(Preset(), field)


def test_size_and_weights_need_an_applications_model():
    preset, notices = parse_query({"size": "96", "weights": "random"})
    assert preset.input_size is None and preset.pretrained is None
    assert len(notices) == 2 and all("keras.applications" in notice for notice in notices)
    preset, notices = parse_query({"model": "xception", "size": "64"})
    assert preset.input_size is None and "from 71 to 512" in notices[0]


def test_repeated_parameters_use_the_last_value_and_hide_lists_merge():
    preset, notices = parse_query({"epochs": ["2", "4"], "hide": ["model", "freeze,code"]})
    assert preset.epochs == 4 and "given 2 times" in notices[0]
    assert preset.hidden == frozenset({"model", "freeze", "code"})


def test_the_session_parameter_is_reserved():
    assert parse_query({"session": "Xk3_9aQ-2bZr"}) == (Preset(), [])


def test_title_and_message_are_plain_bounded_text():
    preset, notices = parse_query({"title": "Lab\n<b>1</b>\x00", "msg": "m" * 600})
    assert preset.title == "Lab <b>1</b>"  # one line; the UI escapes it when rendering
    assert len(preset.message) == 500 and "cut" in notices[0]


@pytest.mark.parametrize(
    "preset",
    [
        parse_query(FULL_QUERY)[0],
        Preset(model="bundled_digits_cnn", dataset="shapes", freeze="up_to:" + BASE + "/conv2"),
        Preset(freeze="top:3", learning_rate=3e-05, validation_fraction=0.0),
        Preset(freeze_steps=(BASE, f"!{BASE}/batch_norm2"), hidden=frozenset(HIDEABLE_CONTROLS)),
        Preset(model="resnet50", input_size=64, pretrained=True, title="Ünïcode & co"),
    ],
)
def test_round_trip_through_the_query_and_a_real_url(preset):
    query = preset_query(preset)
    assert list(query) == [name for name in PARAMETERS if name in query]  # documented order
    assert parse_query(query) == (preset, [])
    link = preset_link(preset, "http://workshop:8501/")
    parsed = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query, keep_blank_values=True)
    assert parse_query(parsed) == (preset, [])


def test_hide_vocabulary():
    assert set(HIDEABLE_CONTROLS) == {"model", "data", "upload", "freeze", "settings", "code"}
    preset, notices = parse_query({"hide": ",".join(HIDEABLE_CONTROLS)})
    assert preset.hidden == frozenset(HIDEABLE_CONTROLS) and notices == []
    with pytest.raises(ValueError, match="Unknown control 'sidebar'"):
        preset.hides("sidebar")


@pytest.mark.parametrize(
    ("freeze", "action"),
    [
        ("none", ("unfreeze_all", None)),
        ("all", ("freeze_all", None)),
        ("batch_norm", ("freeze_batch_norm", None)),
        (f"up_to:{BASE}/conv2", ("freeze_up_to", f"{BASE}/conv2")),
        ("top:2", ("unfreeze_top", 2)),
    ],
)
def test_named_plans_map_to_workspace_bulk_actions(freeze, action):
    preset, notices = parse_query({"freeze": freeze})
    assert notices == [] and preset.freeze_action() == action
    workspace = Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
    workspace.bulk_action(*action)  # a real action with a real argument


def test_explicit_plan_steps_round_trip_through_a_workspace(workspace):
    workspace.bulk_action("freeze_base")
    workspace.tree.set_frozen(f"{BASE}/batch_norm2", False)
    plan = workspace.tree.frozen_paths()
    steps = plan_steps(workspace.tree, plan)
    assert steps == (BASE, f"!{BASE}/batch_norm2")
    preset, notices = parse_query({"frozen": ",".join(steps), "freeze": "all"})
    assert "both given" in notices[0] and preset.freeze is None
    resolved, notices = resolve_frozen_paths(preset, workspace.tree)
    assert resolved == plan and notices == []

    missing = Preset(freeze_steps=(BASE, "transfer_model/nope"))
    resolved, notices = resolve_frozen_paths(missing, workspace.tree)
    assert BASE in resolved and "'transfer_model/nope'" in notices[0]
    assert resolve_frozen_paths(Preset(), workspace.tree) == (None, [])
    workspace.bulk_action("unfreeze_all")


def test_preset_for_the_current_screen(workspace):
    workspace.bulk_action("freeze_base")
    config = TrainingConfig(epochs=5, learning_rate=0.01, batch_size=64, optimizer="sgd")
    preset, notices = preset_for(
        workspace.template.key,
        workspace.dataset.name,
        tree=workspace.tree,
        config=config,
        hidden=["model"],
        title="Lab 2",
    )
    assert notices == []
    assert preset.model == "bundled_digits_cnn" and preset.dataset == "digits_5_9"
    assert preset.freeze_steps == (BASE,)
    assert preset.training_config() == config
    assert resolve_frozen_paths(preset, workspace.tree)[0] == workspace.tree.frozen_paths()
    workspace.bulk_action("unfreeze_all")

    preset, notices = preset_for("mobilenet_v2_035@96:random", "uploaded_images", freeze="base")
    assert (preset.model, preset.input_size, preset.pretrained) == ("mobilenet_v2_035", 96, False)
    assert preset.dataset is None and "not bundled" in notices[0]
    preset, notices = preset_for("upload:m.keras:dense", "digits_0_4")
    assert preset.model is None and "cannot carry it" in notices[0]


def test_parse_query_refuses_non_mappings():
    with pytest.raises(TypeError, match="mapping"):
        parse_query("model=resnet50")


# ------------------------------------------------------------------ LoRA and layer rates
HEAD = "transfer_model/classifier"


@pytest.mark.parametrize(
    ("name", "value", "field", "accepted"),
    [
        ("lora", f"{BASE}/conv1:0", "lora", "from 1 to 512"),
        ("lora", f"{BASE}/conv1:600", "lora", "from 1 to 512"),
        ("lora", f"{BASE}/conv1:2.5", "lora", "'<layer path>:<rank>'"),
        ("lora", f"{BASE}/conv1:4:0", "lora", "from 0.01 to 4096"),
        ("lora", "dense", "lora", "['dense', 'attention']"),
        ("lora", ":4", "lora", "'<layer path>:<rank>:<alpha>'"),
        ("rates", f"{BASE}:-1", "layer_rates", "from 0 to 100"),
        ("rates", f"{BASE}:fast", "layer_rates", "'<layer path>:<multiplier>'"),
        ("decay", "1.5", "layer_rates", "from 0 to 1"),
        ("decay", "nan", "layer_rates", "e.g. 0.5"),
        ("decay_block", "0", "layer_rates", "from 1 to 10000"),
        ("decay_base", "\x00", "layer_rates", "printable"),
    ],
)
def test_each_invalid_lora_or_rate_parameter_is_ignored_with_a_notice(name, value, field, accepted):
    preset, notices = parse_query({name: value})
    assert len(notices) == 1, notices
    notice = notices[0]
    assert f"URL parameter {name}=" in notice and accepted in notice
    assert repr(value) in notice and notice.count("ignored") == 1
    assert getattr(preset, field) is None


def test_lora_items_are_kept_in_order_and_bad_ones_dropped():
    preset, notices = parse_query(
        {"lora": ["dense:4,attention:8:16", f"{BASE}/conv1:2:0.5,{BASE}/conv2:x"]}
    )
    assert preset.lora == (
        ("dense", LoraSetting(4)),
        ("attention", LoraSetting(8, 16.0)),
        (f"{BASE}/conv1", LoraSetting(2, 0.5)),
    )
    assert len(notices) == 1 and f"'{BASE}/conv2:x'" in notices[0]
    # A layer name may hold a colon: "<path>:<rank>" is read when "<rank>:<alpha>" is not.
    preset, notices = parse_query({"lora": "model/odd:name:4"})
    assert preset.lora == (("model/odd:name", LoraSetting(4)),) and notices == []


def test_rates_decay_and_their_learning_rate_bound():
    query = {"rates": f"{BASE}:0.1,{HEAD}:2", "decay": "0.5", "decay_block": "2"}
    preset, notices = parse_query({**query, "decay_base": BASE})
    assert notices == []
    expected = LayerRates(
        {BASE: 0.1, HEAD: 2.0}, decay_factor=0.5, layers_per_block=2, base_path=BASE
    )
    assert preset.layer_rates == expected
    assert preset.training_config(TrainingConfig(learning_rate=0.01)).layer_rates == expected
    # lr x the largest multiplier must stay a learning rate TrainingConfig accepts.
    preset, notices = parse_query({"lr": "1", "rates": f"{HEAD}:100"})
    assert preset.layer_rates is None and preset.learning_rate == 1.0
    assert "were ignored" in notices[0] and "learning rate 100" in notices[0]
    preset, notices = parse_query({"rates": f"{HEAD}:0.5,{HEAD}:0.2"})
    assert preset.layer_rates is None and "twice" in notices[0]


@pytest.mark.parametrize(
    "preset",
    [
        Preset(lora=(("dense", LoraSetting(4)), (f"{BASE}/conv1", LoraSetting(2, 8.0)))),
        Preset(
            model="bundled_digits_attention",
            lora=(("attention", LoraSetting(16, 0.5)),),
            layer_rates=LayerRates(decay_factor=0.25, layers_per_block=3),
        ),
        Preset(layer_rates=LayerRates({BASE: 0.0, HEAD: 1.5}, base_path=BASE), learning_rate=0.1),
    ],
)
def test_lora_and_rates_round_trip_through_the_query_and_a_real_url(preset):
    query = preset_query(preset)
    assert list(query) == [name for name in PARAMETERS if name in query]  # documented order
    assert parse_query(query) == (preset, [])
    link = preset_link(preset, "http://workshop:8501/")
    parsed = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query, keep_blank_values=True)
    assert parse_query(parsed) == (preset, [])


def test_a_path_with_a_comma_cannot_travel_in_a_link():
    with pytest.raises(ValueError, match="comma"):
        preset_query(Preset(lora=(("a,b", LoraSetting(2)),)))
    with pytest.raises(ValueError, match="comma"):
        preset_query(Preset(layer_rates=LayerRates({"a,b": 0.5})))


def test_preset_for_carries_the_workspaces_lora_and_the_configs_rates_round_trip(digits):
    source = Workspace(bundled_template("bundled_digits_attention"), digits)
    source.lora_bulk("attention", LoraSetting(4))
    source.set_layer_lora(f"{BASE}/patch_embedding", LoraSetting(2, 8.0))
    source.bulk_action("freeze_base")
    rates = LayerRates({HEAD: 2.0}, decay_factor=0.5, layers_per_block=2, base_path=BASE)
    config = TrainingConfig(learning_rate=0.01, layer_rates=rates)
    preset, notices = preset_for(
        source.template.key, source.dataset.name, tree=source.tree, config=config
    )
    assert notices == []
    assert dict(preset.lora) == source.lora_plan()
    assert preset.layer_rates == rates and preset.training_config() == config
    link = preset_link(preset, "http://workshop:8501/")
    parsed = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query, keep_blank_values=True)
    again, notices = parse_query(parsed)
    assert again == preset and notices == []

    # A learner's new workspace gets the same adapters, plan and counts as Keras's own.
    learner = Workspace(bundled_template("bundled_digits_attention"), digits)
    adapters, notices = resolve_lora(again, learner.tree, learner.base_path)
    assert notices == [] and adapters == source.lora_plan()
    learner.set_lora(adapters)
    learner.apply_plan(resolve_frozen_paths(again, learner.tree)[0])
    assert learner.tree.totals() == source.tree.totals()
    trainable = sum(math.prod(w.shape) for w in learner.model.trainable_weights)
    non_trainable = sum(math.prod(w.shape) for w in learner.model.non_trainable_weights)
    assert (trainable, non_trainable) == (
        learner.tree.totals().trainable,
        learner.tree.totals().non_trainable,
    )
    assert resolve_layer_rates(again, learner.tree) == (rates, [])


def test_resolve_lora_runs_recipes_on_the_base_and_explains_what_it_skips(workspace):
    preset, _ = parse_query(
        {"lora": f"dense:4,{BASE}/conv1:2,{BASE}/batch_norm1:2,{BASE}/nope:2,{HEAD}:3:6"}
    )
    adapters, notices = resolve_lora(preset, workspace.tree, workspace.base_path)
    assert adapters == {f"{BASE}/conv1": LoraSetting(2), HEAD: LoraSetting(3, 6.0)}
    assert "'transfer_model/feature_extractor/nope'" in notices[0]
    assert "recipe 'dense'" in notices[1] and "names no layer" in notices[1]  # a CNN base
    assert "batch_norm1' was skipped" in notices[2] and "BatchNormalization" in notices[2]
    assert resolve_lora(Preset(), workspace.tree) == (None, [])
    # A later item wins for a layer named twice.
    preset, _ = parse_query({"lora": f"{BASE}/conv1:2,{BASE}/conv1:4"})
    assert resolve_lora(preset, workspace.tree)[0] == {f"{BASE}/conv1": LoraSetting(4)}


def test_rates_for_another_model_are_left_out_with_a_notice(workspace):
    preset, _ = parse_query({"rates": "transfer_model/nope:0.5"})
    rates, notices = resolve_layer_rates(preset, workspace.tree)
    assert rates is None and "left out" in notices[0] and "nope" in notices[0]
    assert resolve_layer_rates(Preset(), workspace.tree) == (None, [])
