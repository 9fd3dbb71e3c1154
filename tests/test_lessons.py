"""The lessons' live numbers, checked against Keras's own weight lists."""

import math

import keras
import numpy as np
import pytest

from models.lessons import (
    batch_norm_weights,
    build_nested_example,
    dense_weights,
    flag_versus_training,
    frozen_dense,
    nested_freeze,
    train_with_frozen_layer,
    transfer_workflow,
)
from models.tree import LayerTree


def test_dense_has_two_trainable_weights_matching_keras():
    info = dense_weights(units=2, input_dim=3)
    assert (info.num_weights, info.num_trainable_weights, info.num_non_trainable_weights) == (
        2,
        2,
        0,
    )
    assert [(w.name, w.shape) for w in info.weights] == [("kernel", (3, 2)), ("bias", (2,))]
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert info.trainable_params == sum(math.prod(w.shape) for w in layer.trainable_weights)
    assert dense_weights(5, 7).trainable_params == 7 * 5 + 5


def test_batch_norm_has_four_weights_two_trainable_two_not():
    info = batch_norm_weights(features=3)
    assert (info.num_weights, info.num_trainable_weights, info.num_non_trainable_weights) == (
        4,
        2,
        2,
    )
    names = {w.name: w.trainable for w in info.weights}
    assert names == {"gamma": True, "beta": True, "moving_mean": False, "moving_variance": False}
    assert (info.trainable_params, info.non_trainable_params) == (6, 6)


def test_freezing_a_dense_layer_moves_both_weights_to_non_trainable():
    frozen = frozen_dense(trainable=False)
    assert (frozen.num_trainable_weights, frozen.num_non_trainable_weights) == (0, 2)
    assert not frozen.trainable
    unfrozen = frozen_dense(trainable=True)
    assert (unfrozen.num_trainable_weights, unfrozen.num_non_trainable_weights) == (2, 0)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="units"):
        dense_weights(units=0)
    with pytest.raises(TypeError, match="trainable"):
        frozen_dense(trainable="no")


def test_training_keeps_the_frozen_layer_bitwise_equal():
    check = train_with_frozen_layer(seed=0, epochs=2)
    frozen, trained = check.layer("frozen_dense"), check.layer("trainable_dense")
    assert frozen.bitwise_equal and frozen.max_abs_change == 0.0
    assert frozen.kernel_before == frozen.kernel_after
    assert not trained.bitwise_equal and trained.max_abs_change > 0
    assert check.verification_message == "All 1 frozen layer is bitwise unchanged."


def keras_trainable_paths(model):
    return tuple(variable.path for variable in model.trainable_weights)


def test_freezing_the_outer_model_freezes_the_inner_one_recursively():
    result = nested_freeze(outer_trainable=False, inner_child_trainable=False)
    assert all(not node.trainable for node in result.nodes)
    assert result.keras_trainable_weights == () and result.trainable_params == 0
    model = build_nested_example()
    model.trainable = False
    assert not model.get_layer("inner").get_layer("dense_b").trainable
    assert result.non_trainable_params == sum(math.prod(w.shape) for w in model.weights)


@pytest.mark.parametrize(
    ("outer", "child", "inner"),
    [(False, True, None), (True, True, False), (True, False, None), (True, True, None)],
)
def test_nested_flags_and_counts_match_keras(outer, child, inner):
    result = nested_freeze(outer, child, inner_trainable=inner)
    model = build_nested_example()
    model.trainable = outer
    if inner is not None:
        model.get_layer("inner").trainable = inner
    model.get_layer("inner").get_layer("dense_a").trainable = child
    assert result.keras_trainable_weights == keras_trainable_paths(model)
    assert result.trainable_params == sum(math.prod(w.shape) for w in model.trainable_weights)
    assert result.inner_trainable_weights == len(model.get_layer("inner").trainable_weights)
    tree = LayerTree(model)
    for node in result.nodes:
        assert node.trainable == tree.node(node.path).trainable


def test_child_under_frozen_inner_model_is_trained_under_frozen_outer_not():
    surprise = nested_freeze(True, True, inner_trainable=False)
    assert not surprise.node("outer/inner").trainable
    assert surprise.node("outer/inner/dense_a").effectively_trainable
    assert "inner/dense_a/kernel" in surprise.keras_trainable_weights
    assert surprise.inner_trainable_weights == 0  # the inner model's own list is empty
    blocked = nested_freeze(False, True)
    assert blocked.node("outer/inner/dense_a").trainable
    assert not blocked.node("outer/inner/dense_a").effectively_trainable


def test_transfer_workflow_phases():
    result = transfer_workflow(seed=0)
    head, fine_tune = result.phase("head"), result.phase("fine_tune")
    assert head.base_drift == 0.0 and head.original_task_accuracy == 1.0
    assert head.trainable_params == 32 * 5 + 5
    assert fine_tune.trainable_params > head.trainable_params
    # Frozen BatchNormalization: gamma, beta and both moving statistics are non-trainable.
    assert fine_tune.non_trainable_params == 4 * (16 + 32 + 32)
    assert fine_tune.base_drift > 0
    assert fine_tune.learning_rate < head.learning_rate
    assert np.isfinite(result.history["loss"]).all()


@pytest.mark.parametrize("child_trainable", [True, False])
def test_the_flag_versus_what_keras_trains_is_measured_and_the_badge_agrees(child_trainable):
    result = flag_versus_training(seed=0, child_trainable=child_trainable)
    # Independent reference: the same flags set by hand with plain Keras, and Keras's own
    # trainable_weights; "moved" is read bitwise from the kernels after a real fit.
    keras.utils.set_random_seed(0)
    reference = build_nested_example()
    inner = reference.get_layer("inner")
    inner.trainable = False
    inner.get_layer("dense_a").trainable = child_trainable
    keras_trained = {id(variable) for variable in reference.trainable_weights}
    by_hand = {
        "outer/inner/dense_a": id(inner.get_layer("dense_a").kernel) in keras_trained,
        "outer/inner/dense_b": id(inner.get_layer("dense_b").kernel) in keras_trained,
        "outer/head": id(reference.get_layer("head").kernel) in keras_trained,
    }
    for layer in result.layers:
        assert layer.in_trainable_weights == by_hand[layer.path], layer.path
        assert layer.moved == layer.in_trainable_weights, layer.path
        assert layer.moved == (layer.kernel_change > 0)
    assert result.badge_matches_keras
    assert result.layer("outer/inner/dense_a").flag is child_trainable
    assert result.keras_version.startswith(f"Keras {keras.__version__}")


def test_the_diagnostics_lesson_reads_the_three_diagnostics_of_one_run():
    from models.advisor import advise, base_weight_parameters, default_budget
    from models.bundled import build_default_transfer_model
    from models.datasets import load_bundled_dataset
    from models.lessons import diagnostics_lesson
    from models.pitfalls import BASE_PATH
    from models.tree import LayerTree

    lesson = diagnostics_lesson(seed=0)
    # The ranking is the advisor's on the same model and data (an independent second probe).
    data = load_bundled_dataset("digits_5_9")
    keras.utils.set_random_seed(0)
    tree = LayerTree(build_default_transfer_model())
    budget = default_budget(base_weight_parameters(tree, BASE_PATH))
    again = advise(tree, data.x, data.y, budget, base_path=BASE_PATH, seed=0)
    assert lesson.ranking.unit.tolist() == again.ranking.unit.tolist()
    assert set(lesson.ranking.unit[lesson.ranking.in_plan]) == set(again.plan.units)
    assert lesson.plan_message == again.plan.message()
    # Statistics for each layer that trained, with a verdict; the head always trains.
    assert "classifier" in lesson.statistics.layer.tolist()
    assert set(lesson.statistics.verdict) <= {"too fast", "too slow", "healthy"}
    assert (lesson.statistics.update_ratio > 0).all()
    # Blocks fed only by frozen layers read exactly 1.0; the plan's layers changed.
    representation = lesson.representation
    assert representation.loc[representation.frozen_through, "cka"].eq(1.0).all()
    assert representation.cka.lt(1.0).any()
    assert 0.0 <= lesson.validation_accuracy <= 1.0
