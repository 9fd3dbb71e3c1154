"""Tests for models.plans: one vocabulary of named freeze plans for buttons, links and schedules."""

import math

import keras
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.plans import (
    ACTION_KINDS,
    BULK_ACTIONS,
    NAMED_PLANS,
    FreezePlan,
    PlanKind,
)
from models.presets import Preset, parse_query
from models.schedule import PHASE_PLANS, Phase
from models.tree import LayerTree
from models.workspace import Workspace
from tests.test_tree import small_nested_model

BASE = "outer/inner"


def keras_trainable(model: keras.Model) -> tuple[set[str], int]:
    """Independent reference: Keras's own trainable weights (names and parameter count)."""
    names = {weight.path for weight in model.trainable_weights}
    return names, sum(math.prod(weight.shape) for weight in model.trainable_weights)


def by_hand(kind: str, model: keras.Sequential) -> None:
    """Each plan written with plain Keras `trainable` flags (the Keras guide's recipes)."""
    inner = model.get_layer("inner")
    if kind == "none":
        model.trainable = True
    elif kind == "all":
        model.trainable = False
    elif kind == "base":
        inner.trainable = False
    elif kind == "batch_norm":
        inner.get_layer("bn").trainable = False
    elif kind == "up_to":  # up to and including inner/bn
        for name in ("a", "bn"):
            inner.get_layer(name).trainable = False
    elif kind == "top":  # top 1 layer of the base trains
        inner.trainable = True
        for layer in inner.layers[:-1]:
            layer.trainable = False


PLANS = [
    ("none", FreezePlan(PlanKind.NONE)),
    ("all", FreezePlan(PlanKind.ALL)),
    ("base", FreezePlan(PlanKind.BASE)),
    ("batch_norm", FreezePlan(PlanKind.BATCH_NORM)),
    ("up_to", FreezePlan(PlanKind.UP_TO, f"{BASE}/bn")),
    ("top", FreezePlan(PlanKind.TOP, 1)),
]


@pytest.mark.parametrize(("kind", "plan"), PLANS, ids=[kind for kind, _ in PLANS])
def test_each_plan_sets_the_flags_keras_recipes_set(kind, plan):
    ours, reference = small_nested_model(), small_nested_model()
    ours.get_layer("inner").get_layer("b").trainable = False  # a plan starts from any state
    if kind in ("batch_norm", "base"):  # these only freeze: start both from the same state
        reference.get_layer("inner").get_layer("b").trainable = False
    plan.apply(LayerTree(ours), BASE)
    by_hand(kind, reference)
    assert keras_trainable(ours) == keras_trainable(reference)


@pytest.mark.parametrize(("kind", "plan"), PLANS, ids=[kind for kind, _ in PLANS])
def test_each_plan_is_its_layer_tree_call(kind, plan):
    ours, reference = LayerTree(small_nested_model()), LayerTree(small_nested_model())
    plan.apply(ours, BASE)
    calls = {
        "none": reference.unfreeze_all,
        "all": reference.freeze_all,
        "base": lambda: reference.set_frozen(BASE, True),
        "batch_norm": reference.freeze_batch_norm,
        "up_to": lambda: reference.freeze_up_to(f"{BASE}/bn"),
        "top": lambda: reference.unfreeze_top(1, BASE),
    }
    calls[kind]()
    assert ours.frozen_paths() == reference.frozen_paths()
    assert ours.totals() == reference.totals()


def test_keep_changes_nothing_and_the_base_defaults_to_the_largest_small_nested_model():
    tree = LayerTree(small_nested_model())
    tree.set_frozen(f"{BASE}/a", True)
    before = tree.frozen_paths()
    FreezePlan(PlanKind.KEEP).apply(tree)
    assert tree.frozen_paths() == before
    FreezePlan(PlanKind.BASE).apply(tree)  # no base_path: tree.default_base_path()
    assert tree.default_base_path() == BASE and BASE in tree.frozen_paths()


@pytest.mark.parametrize(
    ("text", "kind", "argument"),
    [
        ("none", PlanKind.NONE, None),
        ("all", PlanKind.ALL, None),
        ("base", PlanKind.BASE, None),
        ("batch_norm", PlanKind.BATCH_NORM, None),
        ("up_to:outer/inner/bn", PlanKind.UP_TO, "outer/inner/bn"),
        ("top:3", PlanKind.TOP, 3),
        ("keep", PlanKind.KEEP, None),
    ],
)
def test_link_text_round_trips(text, kind, argument):
    plan = FreezePlan.parse(text)
    assert (plan.kind, plan.argument) == (kind, argument)
    assert plan.text == str(plan) == text
    assert FreezePlan.from_action(plan.action, plan.argument) == plan


def test_link_text_is_read_leniently_and_written_canonically():
    assert FreezePlan.parse("  top: 007 ").text == "top:7"
    assert FreezePlan.parse("up_to:  a/b ").text == "up_to:a/b"


@pytest.mark.parametrize(
    "text", ["", "everything", "top:", "top:-1", "top:+3", "top:1.5", "top:²", "top:10001",
             "top:" + "9" * 5000, "up_to:", "up_to:   ", "freeze_base"],
)  # fmt: skip
def test_bad_link_text_is_refused_keras_style(text):
    with pytest.raises(ValueError, match="A freeze plan must be") as raised:
        FreezePlan.parse(text)
    assert f"Received: plan={text!r}" in str(raised.value)


def test_action_names_are_the_bulk_buttons_and_the_schedules_words():
    assert set(BULK_ACTIONS) == {
        "freeze_all",
        "unfreeze_all",
        "freeze_base",
        "freeze_up_to",
        "unfreeze_top",
        "freeze_batch_norm",
    }
    assert set(PHASE_PLANS) <= set(ACTION_KINDS)
    assert {kind.value for kind in ACTION_KINDS.values()} == {kind.value for kind in PlanKind}
    assert set(NAMED_PLANS) <= {kind.value for kind in PlanKind}
    assert FreezePlan.from_action("freeze_base", "ignored") == FreezePlan(PlanKind.BASE)
    with pytest.raises(ValueError, match="Unknown bulk action 'melt'"):
        FreezePlan.from_action("melt")


@pytest.mark.parametrize(
    ("kind", "argument", "fragment"),
    [
        ("base", 3, "takes no argument"),
        ("up_to", None, "path of the last layer"),
        ("up_to", " ", "path of the last layer"),
        ("top", -1, "from 0 to 10000"),
        ("top", 2.5, "whole number"),
        ("top", True, "whole number"),
        ("melt", None, "Unknown freeze plan kind 'melt'"),
    ],
)
def test_bad_arguments_are_refused(kind, argument, fragment):
    with pytest.raises(ValueError) as raised:
        FreezePlan(kind, argument)
    assert fragment in str(raised.value)


@pytest.fixture(scope="module")
def workspaces():
    template, digits = bundled_template(), load_bundled_dataset("digits_5_9")
    return Workspace(template, digits), Workspace(template, digits)


@pytest.mark.parametrize(
    ("action", "argument"),
    [
        ("freeze_all", None),
        ("unfreeze_all", None),
        ("freeze_base", None),
        ("freeze_up_to", "transfer_model/feature_extractor/conv2"),
        ("unfreeze_top", 2),
        ("freeze_batch_norm", None),
    ],
)
def test_bulk_actions_are_the_plans_and_the_tree_calls(workspaces, action, argument):
    by_name, by_plan = workspaces
    for workspace in workspaces:
        workspace.bulk_action("unfreeze_all")
    revision = by_name.revision
    by_name.bulk_action(action, argument)
    assert by_name.revision == revision + 1
    by_plan.bulk_action(FreezePlan.from_action(action, argument))
    assert by_name.tree.frozen_paths() == by_plan.tree.frozen_paths()
    reference = LayerTree(by_name.model)  # a fresh tree reads the model's real flags
    assert reference.totals() == by_name.tree.totals()
    _, count = keras_trainable(by_name.model)
    assert count == by_name.tree.totals().trainable


@pytest.mark.parametrize("freeze", ["none", "all", "base", "batch_norm", "up_to:x/y", "top:4"])
def test_presets_and_workspaces_share_the_words(freeze):
    preset, notices = parse_query({"freeze": freeze})
    assert notices == [] and preset.freeze_plan() == FreezePlan.parse(freeze)
    plan = preset.freeze_plan()
    assert preset.freeze_action() == (plan.action, plan.argument)
    assert Preset(freeze=freeze, freeze_steps=("a",)).freeze_plan() is None


def test_links_do_not_take_keep():
    preset, notices = parse_query({"freeze": "keep"})
    assert preset.freeze is None and "freeze='keep'" in notices[0]


@pytest.mark.parametrize(
    ("plan", "num_layers", "expected"),
    [
        ("freeze_base", 0, FreezePlan(PlanKind.BASE)),
        ("unfreeze_all", 5, FreezePlan(PlanKind.NONE)),
        ("unfreeze_top", 5, FreezePlan(PlanKind.TOP, 5)),
        ("keep", 0, FreezePlan(PlanKind.KEEP)),
    ],
)
def test_schedule_phases_use_the_plans(plan, num_layers, expected):
    phase = Phase("x", plan, 1, 1e-3, num_layers)
    assert phase.freeze_plan == expected
    ours, reference = LayerTree(small_nested_model()), LayerTree(small_nested_model())
    phase.apply(ours, BASE)
    expected.apply(reference, BASE)
    assert ours.frozen_paths() == reference.frozen_paths()


def test_phases_check_their_plan_and_layers():
    with pytest.raises(ValueError, match="Unknown phase plan 'freeze_all'"):
        Phase("x", "freeze_all", 1, 1e-3)
    with pytest.raises(ValueError, match="from 0 to 10000"):
        Phase("x", "unfreeze_top", 1, 1e-3, num_layers=-1)
