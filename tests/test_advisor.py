"""The unfreeze advisor (models.advisor): gradients against an independent reference (a
GradientTape / jax.grad on a separate copy of the model with everything trainable), a probe that
changes nothing, greedy plans within the budget, Keras-exact counts once a plan is applied."""

import math

import keras
import numpy as np
import pandas as pd
import pytest

from models import build_default_transfer_model
from models.advisor import (
    LAYER_COLUMNS,
    RANKING_COLUMNS,
    AdvisorPlan,
    advise,
    apply_plan,
    base_weight_parameters,
    block_names,
    default_budget,
    group_blocks,
    probe_gradients,
    propose_plan,
    top_n_plan,
)
from models.datasets import load_bundled_dataset
from models.transfer import build_transfer_model
from models.tree import LayerTree, ParameterCounts
from tests.backend_subprocess import run_on_backend, skip_without_jax

BASE = "transfer_model/feature_extractor"

REFERENCE_SCRIPT = """
import json
import math
import keras
import numpy as np
from models import build_default_transfer_model
from models.advisor import probe_gradients
from models.datasets import load_bundled_dataset
from models.tree import LayerTree, ParameterCounts

BASE = "transfer_model/feature_extractor"
data = load_bundled_dataset("digits_5_9")
x, y = data.x[:128], data.y[:128]
keras.utils.set_random_seed(0)
model = build_default_transfer_model()
tree = LayerTree(model)
tree.set_frozen(BASE, True)
tree.set_frozen(BASE + "/conv2", False)  # a trainable child under a frozen base
flags = {path: tree.layer(path).trainable for path in tree.paths()}
before = [np.array(v.numpy(), copy=True) for v in model.variables]
frame = probe_gradients(tree, x, y, num_batches=4, batch_size=32).set_index("layer_path")
unchanged = all(
    np.array_equal(a.view(np.uint8), np.asarray(v.numpy()).view(np.uint8))
    for a, v in zip(before, model.variables)
) and flags == {path: tree.layer(path).trainable for path in tree.paths()}

# The independent reference: a separate model (every flag trainable), the same weights, the
# gradient of the mean loss over all 128 examples in inference mode, by the backend's autodiff.
reference = build_default_transfer_model()
reference.set_weights(model.get_weights())
reference_tree = LayerTree(reference)
trainable = reference.trainable_variables
loss_fn = keras.losses.SparseCategoricalCrossentropy()
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = loss_fn(y, reference(x, training=False))
    grads = tape.gradient(loss, trainable)
else:
    import jax
    def compute(values):
        out, _ = reference.stateless_call(
            values, [v.value for v in reference.non_trainable_variables], x, training=False
        )
        return loss_fn(y, out)
    grads = jax.grad(compute)([v.value for v in trainable])
gradient_of = {id(v): np.asarray(g, np.float64) for v, g in zip(trainable, grads)}
result = {"unchanged": bool(unchanged), "num_examples": frame.attrs["num_examples"], "layers": {}}
for path in reference_tree.base_layer_paths(BASE):
    layer = reference_tree.layer(path)
    variables = layer.trainable_weights
    gradient = math.sqrt(sum(np.sum(gradient_of[id(v)] ** 2) for v in variables))
    weight = math.sqrt(sum(np.sum(np.asarray(v.numpy(), np.float64) ** 2) for v in variables))
    row = frame.loc[path]
    result["layers"][path] = {
        "probe": [row.gradient_norm, row.weight_norm, row.relative_gradient],
        "reference": [gradient, weight, gradient / weight],
        "parameters": [int(row.parameters), sum(math.prod(v.shape) for v in variables)],
        "frozen": [bool(row.currently_frozen), not tree.layer(path).trainable],
    }
print("RESULT " + json.dumps(result))
"""


def check_reference(report: dict) -> None:
    assert report["unchanged"]
    assert report["num_examples"] == 128
    layers = report["layers"]
    assert [path.rsplit("/", 1)[-1] for path in layers] == [
        "conv1", "batch_norm1", "conv2", "batch_norm2", "conv3", "batch_norm3",
    ]  # fmt: skip
    for path, values in layers.items():
        assert values["probe"] == pytest.approx(values["reference"], rel=1e-5), path
        assert values["parameters"][0] == values["parameters"][1], path
        assert values["frozen"][0] == values["frozen"][1], path
    assert not layers[f"{BASE}/conv2"]["frozen"][0] and layers[f"{BASE}/conv1"]["frozen"][0]


def test_gradient_norms_equal_a_gradient_tape_on_a_copy_with_everything_trainable():
    namespace: dict = {}
    exec(REFERENCE_SCRIPT.replace('print("RESULT " + json.dumps(result))', ""), namespace)
    check_reference(namespace["result"])


def test_gradient_norms_equal_jax_grad_on_jax():
    skip_without_jax()
    check_reference(run_on_backend(REFERENCE_SCRIPT, "jax"))


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    return load_bundled_dataset("digits_5_9")


@pytest.fixture
def tree():
    keras.utils.set_random_seed(0)
    return LayerTree(build_default_transfer_model())


@pytest.fixture(scope="module")
def ranking(data):
    keras.utils.set_random_seed(0)
    return probe_gradients(LayerTree(build_default_transfer_model()), data.x, data.y)


def keras_counts(model: keras.Model) -> ParameterCounts:
    """Keras's own sums over `trainable_weights` and `non_trainable_weights`."""
    return ParameterCounts(
        trainable=sum(math.prod(w.shape) for w in model.trainable_weights),
        non_trainable=sum(math.prod(w.shape) for w in model.non_trainable_weights),
    )


def bitwise(values) -> list[bytes]:
    return [np.asarray(value).tobytes() for value in values]


# ----------------------------------------------------------------------------- the probe
def test_the_probe_changes_no_weight_statistic_flag_optimizer_or_compile_state(tree, data):
    model = tree.model
    tree.set_frozen(f"{BASE}/conv1", True)
    tree.freeze_batch_norm()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(data.x[:64], data.y[:64], batch_size=32, epochs=1, verbose=0)  # optimizer state
    optimizer, train_function = model.optimizer, model.train_function
    weights = bitwise(v.numpy() for v in model.variables)  # BN moving statistics included
    optimizer_state = bitwise(v.numpy() for v in optimizer.variables)
    layer_flags = {path: tree.layer(path).trainable for path in tree.paths()}
    variable_flags = [v.trainable for v in model.variables]
    x = np.array(data.x, copy=True)
    for num_batches in (1, 3):
        frame = probe_gradients(tree, x, data.y, num_batches=num_batches, batch_size=16)
        assert list(frame.columns) == list(LAYER_COLUMNS)
    assert bitwise(v.numpy() for v in model.variables) == weights
    assert bitwise(v.numpy() for v in optimizer.variables) == optimizer_state
    assert {path: tree.layer(path).trainable for path in tree.paths()} == layer_flags
    assert [v.trainable for v in model.variables] == variable_flags
    assert model.optimizer is optimizer and model.train_function is train_function
    assert model.compiled and model.loss == "sparse_categorical_crossentropy"
    assert np.array_equal(x, data.x)
    assert frame.attrs == {"base_path": BASE, "num_examples": 48, "num_batches": 3}


def test_the_ranking_is_ordered_by_relative_gradient_and_flags_frozen_layers(ranking):
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    assert ranking.relative_gradient.is_monotonic_decreasing
    assert np.allclose(ranking.relative_gradient, ranking.gradient_norm / ranking.weight_norm)
    assert (ranking.gradient_norm > 0).all()
    batch_norm = ranking[ranking.is_batch_norm]
    assert batch_norm.layer_name.str.startswith("batch_norm").all() and len(batch_norm) == 3
    assert (batch_norm.batch_norm_parameters == batch_norm.parameters).all()
    assert (ranking.member_paths == ranking.layer_path.map(lambda path: (path,))).all()
    assert not ranking.currently_frozen.any()  # the bundled model comes fully trainable
    assert ranking.attrs["num_examples"] == 128  # 4 batches of 32 drawn from 896


def test_a_seeded_sample_gives_the_same_ranking_and_another_seed_another_sample(tree, data):
    first = probe_gradients(tree, data.x, data.y, num_batches=2, batch_size=16, seed=1)
    again = probe_gradients(tree, data.x, data.y, num_batches=2, batch_size=16, seed=1)
    other = probe_gradients(tree, data.x, data.y, num_batches=2, batch_size=16, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first.gradient_norm, other.gradient_norm)


# ------------------------------------------------------------------------------ the plans
def hand_ranking(units: list[tuple[str, int, int, bool]]) -> pd.DataFrame:
    """A ranking frame in rank order from (unit, position, parameters, is_batch_norm)."""
    rows = []
    for rank, (unit, position, parameters, is_batch_norm) in enumerate(units, start=1):
        path = f"model/base/{unit}"
        rows.append(
            {
                "rank": rank,
                "unit": unit,
                "position": position,
                "member_paths": (path,),
                "num_layers": 1,
                "parameters": parameters,
                "batch_norm_parameters": parameters if is_batch_norm else 0,
                "batch_norm_paths": (path,) if is_batch_norm else (),
                "gradient_norm": 1.0 / rank,
                "weight_norm": 1.0,
                "relative_gradient": 1.0 / rank,
                "is_batch_norm": is_batch_norm,
                "currently_frozen": False,
            }
        )
    return pd.DataFrame(rows, columns=list(RANKING_COLUMNS))


HAND = [("a", 3, 40, False), ("b", 0, 70, False), ("c", 4, 20, False), ("d", 1, 10, True),
        ("e", 2, 10, False)]  # fmt: skip


def test_the_plan_is_the_greedy_pass_over_a_hand_made_ranking():
    ranking = hand_ranking(HAND)
    plan = propose_plan(ranking, 75)
    # a (40) fits, b (70) no longer does, c (20) fits, d is BatchNormalization, e (10) fits.
    assert plan.units == ("a", "c", "e") and plan.base_parameters == 70
    assert plan.unfreeze_paths == ("model/base/e", "model/base/a", "model/base/c")  # model order
    with_batch_norm = propose_plan(ranking, 75, include_batch_norm=True)
    assert with_batch_norm.units == ("a", "c", "d") and with_batch_norm.base_parameters == 70
    shuffled = ranking.sample(frac=1.0, random_state=0)
    assert propose_plan(shuffled, 75) == plan  # the rank column decides, not the row order
    assert propose_plan(ranking, 10**9).units == ("a", "b", "c", "e")
    empty = propose_plan(ranking, 5)
    assert empty.units == () and empty.unfreeze_paths == () and empty.base_parameters == 0
    assert "only the head trains" in empty.message()
    assert "3 units (a, c, e): 70 of 75 base parameters" in plan.message()


def test_a_block_leaves_its_batch_norm_layers_frozen_and_out_of_the_count():
    layers = hand_ranking(
        [
            ("block_1_expand", 0, 100, False),
            ("block_1_expand_BN", 1, 8, True),
            ("block_2_expand", 2, 50, False),
            ("block_2_expand_BN", 3, 4, True),
        ]
    )
    layers.insert(1, "layer_name", layers.unit)
    blocks = group_blocks(layers)
    assert set(blocks.unit) == {"block_1", "block_2"}
    plan = propose_plan(blocks, 100)
    assert plan.unfreeze_paths == ("model/base/block_1_expand",) and plan.base_parameters == 100
    both = propose_plan(blocks, 108, include_batch_norm=True)
    assert both.unfreeze_paths == ("model/base/block_1_expand", "model/base/block_1_expand_BN")


@pytest.mark.parametrize("budget", [0, 150, 5_000, 10_000, 10**9])
def test_the_plan_on_a_probe_respects_the_budget_and_is_greedy(ranking, budget):
    plan = propose_plan(ranking, budget)
    assert plan.base_parameters <= budget and plan.budget == budget
    assert plan.base_path == BASE and plan.method == "advisor"
    chosen = set(plan.unfreeze_paths)
    used = 0
    for row in ranking.sort_values("rank").itertuples():
        if row.layer_path in chosen:
            used += row.parameters
        elif not row.is_batch_norm:  # passed over: it did not fit in what was left
            assert row.parameters > budget - used
    assert used == plan.base_parameters
    assert not chosen & set(ranking.layer_path[ranking.is_batch_norm])


def test_apply_plan_counts_equal_keras_and_the_head_keeps_its_flags(tree, ranking):
    model = tree.model
    tree.set_frozen(BASE, True)
    tree.set_frozen("transfer_model/classifier", True)
    plan = propose_plan(ranking, 5_000)
    apply_plan(tree, plan)
    assert tree.totals() == keras_counts(model)
    assert tree.node(BASE).trainable_params == plan.base_parameters > 0
    trainable = {p for p in tree.base_layer_paths(BASE) if tree.layer(p).trainable}
    assert trainable == set(plan.unfreeze_paths)
    assert not tree.layer("transfer_model/classifier").trainable  # the head keeps its flag
    tree.set_frozen("transfer_model/classifier", False)
    apply_plan(tree, propose_plan(ranking, 10**9, include_batch_norm=True))
    counts = keras_counts(model)
    assert tree.totals() == counts and counts.non_trainable == 160  # BN moving statistics only
    assert tree.layer("transfer_model/classifier").trainable


def test_top_n_plan_takes_the_largest_top_that_fits(tree):
    conv3, conv2, conv1 = 9_216, 4_608, 144
    assert top_n_plan(tree, conv3 - 1).units == ()
    plan = top_n_plan(tree, conv3 + conv2 + conv1 - 1, BASE)
    assert plan.units == ("conv3", "conv2") and plan.base_parameters == conv3 + conv2
    assert plan.unfreeze_paths == (f"{BASE}/conv2", f"{BASE}/conv3") and plan.method == "top_n"
    with_batch_norm = top_n_plan(tree, 64 + conv3 + 64, include_batch_norm=True)
    assert with_batch_norm.units == ("batch_norm3", "conv3", "batch_norm2")
    apply_plan(tree, plan)
    assert tree.totals() == keras_counts(tree.model)
    assert tree.node(BASE).trainable_params == plan.base_parameters
    assert "trains 2 layers (conv3, conv2)" in plan.message()


def test_advise_is_the_probe_the_blocks_and_both_plans_with_one_budget(tree, data, ranking):
    assert base_weight_parameters(tree) == ranking.parameters.sum() == 14_128
    assert default_budget(14_128) == 3_532 and default_budget(14_128, 1.0) == 14_128
    advice = advise(tree, data.x, data.y, 10_000)
    pd.testing.assert_frame_equal(advice.layers, ranking)
    pd.testing.assert_frame_equal(advice.ranking, group_blocks(ranking))
    assert advice.plan == propose_plan(advice.ranking, 10_000)
    assert advice.baseline == top_n_plan(tree, 10_000, BASE)
    assert advice.plan.units == ("conv1", "conv2") and advice.baseline.units == ("conv3",)
    assert advice.num_examples == 128 and advice.seconds > 0
    with pytest.raises(ValueError, match="`budget` must be a whole number >= 0"):
        advise(tree, data.x, data.y, -5)
    with pytest.raises(ValueError, match="`fraction` must be a number from 0 to 1"):
        default_budget(100, 1.5)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("budget", "error"),
    [(-1, ValueError), ("100", TypeError), (1.5, TypeError), (None, TypeError)],
)
def test_a_bad_budget_says_what_was_received_and_what_is_expected(ranking, budget, error):
    with pytest.raises(error, match=r"`budget` must be a whole number >= 0\. Received: budget="):
        propose_plan(ranking, budget)


def test_bad_frames_plans_and_data_are_refused_with_clear_messages(tree, ranking, data):
    with pytest.raises(ValueError, match=r"lacks the columns \['parameters'\]"):
        propose_plan(ranking.drop(columns=["parameters"]), 10)
    with pytest.raises(TypeError, match="received str"):
        propose_plan("ranking", 10)
    with pytest.raises(TypeError, match="include_batch_norm"):
        propose_plan(ranking, 10, include_batch_norm="yes")
    with pytest.raises(ValueError, match=r"lacks the columns \['layer_name'\]"):
        group_blocks(ranking.drop(columns=["layer_name"]))
    with pytest.raises(ValueError, match="as many labels as inputs"):
        probe_gradients(tree, data.x[:10], data.y[:9])
    with pytest.raises(ValueError, match="`num_batches` must be a whole number from 1"):
        probe_gradients(tree, data.x, data.y, num_batches=0)
    with pytest.raises(ValueError, match="No layer at path 'nowhere'"):
        probe_gradients(tree, data.x, data.y, base_path="nowhere")
    with pytest.raises(ValueError, match="Keras loss name"):
        probe_gradients(tree, data.x, data.y, loss="no_such_loss")
    with pytest.raises(TypeError, match="AdvisorPlan"):
        apply_plan(tree, {"unfreeze_paths": ()})
    foreign = AdvisorPlan(("transfer_model/classifier",), ("classifier",), 0, 10, base_path=BASE)
    with pytest.raises(ValueError, match="not direct layers of the base"):
        apply_plan(tree, foreign)


# -------------------------------------------------------------------------------- blocks
def test_block_names_follow_keras_application_names():
    names = {
        "mobilenet_v2": (["Conv1", "bn_Conv1", "expanded_conv_depthwise", "block_3_expand",
                          "block_3_expand_BN", "block_13_project", "Conv_1", "Conv_1_bn"],
                         ["Conv1", "Conv1", "expanded_conv", "block_3", "block_3", "block_13",
                          "Conv_1", "Conv_1"]),
        "resnet": (["conv1_conv", "conv1_bn", "conv2_block1_0_conv", "conv5_block3_3_bn"],
                   ["conv1", "conv1", "conv2_block1", "conv5_block3"]),
        "efficientnet": (["normalization", "stem_conv", "block2a_se_reduce", "top_bn"],
                         ["normalization", "stem", "block2a", "top"]),
        "xception": (["block1_conv1", "conv2d", "batch_normalization", "block14_sepconv2_bn"],
                     ["block1", "conv2d", "batch_normalization", "block14"]),
        "convnext": (["convnext_tiny_stage_0_block_1_layernorm", "convnext_tiny_stem"],
                     ["convnext_tiny_stage_0_block_1", "convnext_tiny_stem"]),
        "mobilenet_v3": (["expanded_conv_squeeze_excite_conv", "expanded_conv_10_project_bn"],
                         ["expanded_conv", "expanded_conv_10"]),
        "bundled": (["conv1", "batch_norm1", "conv2"], ["conv1", "batch_norm1", "conv2"]),
    }  # fmt: skip
    for family, (layer_names, blocks) in names.items():
        assert block_names(layer_names) == blocks, family


def test_a_bundled_ranking_keeps_its_layers_as_units(ranking):
    blocks = group_blocks(ranking)
    assert list(blocks.columns) == list(RANKING_COLUMNS)
    assert blocks.unit.tolist() == ranking.layer_name.tolist()
    assert np.allclose(blocks.relative_gradient, ranking.relative_gradient)
    assert blocks.attrs == ranking.attrs


def test_mobilenet_v2_blocks_aggregate_their_layers_and_a_block_plan_applies_exactly(data):
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None
    )
    tree = LayerTree(build_transfer_model(base, (8, 8, 1), 5, rescaling=(2.0, -1.0)))
    base_path = tree.path_of(base)
    layers = probe_gradients(tree, data.x, data.y, num_batches=1, batch_size=8)
    assert len(layers) == 104
    blocks = group_blocks(layers)
    expected = {"Conv1", "expanded_conv", "Conv_1", *(f"block_{i}" for i in range(1, 17))}
    assert set(blocks.unit) == expected
    members = [path for paths in blocks.member_paths for path in paths]
    assert sorted(members) == sorted(layers.layer_path)
    by_path = layers.set_index("layer_path")
    for block in blocks.itertuples():
        rows = by_path.loc[list(block.member_paths)]
        assert block.parameters == rows.parameters.sum()
        assert block.batch_norm_parameters == rows.parameters[rows.is_batch_norm].sum()
        assert block.gradient_norm == pytest.approx(np.sqrt(np.sum(rows.gradient_norm**2)))
        assert block.weight_norm == pytest.approx(np.sqrt(np.sum(rows.weight_norm**2)))
    block_16 = blocks.set_index("unit").loc["block_16"]
    assert block_16.num_layers == 6 and len(block_16.batch_norm_paths) == 3
    plan = propose_plan(blocks, int(0.25 * layers.parameters.sum()))
    apply_plan(tree, plan, base_path)
    assert tree.totals() == keras_counts(tree.model)
    assert tree.node(base_path).trainable_params == plan.base_parameters > 0
    assert not any(tree.layer(path).trainable for path in layers.layer_path[layers.is_batch_norm])
