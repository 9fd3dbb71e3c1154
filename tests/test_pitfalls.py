"""The pitfall lab's experiments: each one measured both ways, checked against NumPy and Keras."""

import math

import numpy as np
import pytest

from models.pitfalls import (
    BASE_PATH,
    FINE,
    NOTE,
    PITFALLS,
    PROBLEM,
    STATUSES,
    SURPRISE,
    build_lab_model,
    original_task_accuracy,
    pretrained_base,
    run_pitfall,
)

BATCH_NORM_PATHS = [f"{BASE_PATH}/batch_norm{index}" for index in (1, 2, 3)]

# Freezing the top model leaves nothing to train; Keras warns, and the lab shows it.
pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")


@pytest.fixture(scope="module")
def results():
    """Each pitfall runs once per test session (a few seconds each); tests read the results."""
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = run_pitfall(key, seed=0)
        return cache[key]

    return get


def final_rows(variant, kind):
    rows = variant.drift[variant.drift["kind"] == kind]
    return rows.groupby("layer_path", sort=False).tail(1).set_index("layer_path")


def check_common(result):
    assert result.key in PITFALLS
    assert len(result.variants) >= 2
    for variant in result.variants:
        assert variant.status in STATUSES
        assert variant.verdict
        assert not variant.drift.empty
        assert all(math.isfinite(m.value) for m in variant.measurements)
        assert variant.layer_order[0] == "transfer_model"


def test_registry_has_the_four_pitfalls_with_texts():
    assert list(PITFALLS) == [
        "stale_compile",
        "batch_norm",
        "early_fine_tuning",
        "child_under_frozen_parent",
    ]
    for number, pitfall in enumerate(PITFALLS.values(), start=1):
        assert pitfall.number == number
        assert pitfall.title and pitfall.explanation and pitfall.what_to_look_at and pitfall.fix


def test_unknown_key_and_bad_seed_are_refused():
    with pytest.raises(ValueError, match="Unknown pitfall 'nope'"):
        run_pitfall("nope")
    with pytest.raises(ValueError, match="seed"):
        run_pitfall("stale_compile", seed=-1)


def test_variants_start_from_identical_weights():
    first, second = build_lab_model(3), build_lab_model(3)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert original_task_accuracy(pretrained_base()) == 1.0


def test_stale_compile_moves_the_frozen_layers_and_recompiling_keeps_them(results):
    result = results("stale_compile")
    check_common(result)
    wrong, right = result.wrong, result.right
    assert wrong.status == PROBLEM and right.status == FINE
    assert not wrong.verification.all_unchanged
    assert f"{BASE_PATH}/conv1" in wrong.verification.changed_paths
    assert "transfer_model/feature_extractor/conv1" in wrong.verification.message()
    assert "moved" in wrong.verdict and "max |dW|" in wrong.verdict
    assert wrong.numbers["Largest change in a frozen layer"] > 0
    frozen = final_rows(wrong, "weights").loc[f"{BASE_PATH}/conv1"]
    assert frozen["frozen"] and frozen["max_abs_change"] > 0
    assert right.verification.all_unchanged and right.verification.num_checked == 6
    assert right.numbers["Largest change in a frozen layer"] == 0


def test_batch_norm_statistics_move_unless_frozen_even_with_training_false(results):
    result = results("batch_norm")
    check_common(result)
    wrong, right, (folklore,) = result.wrong, result.right, result.extra
    state = final_rows(wrong, "state")
    assert (state.loc[BATCH_NORM_PATHS, "max_abs_change"] > 0).all()
    assert wrong.numbers["Moving mean change"] > 0 and wrong.status == PROBLEM
    # Frozen BN: inference mode, state bitwise unchanged (checked by the recorder, bitwise).
    assert right.status == FINE and right.numbers["Moving mean change"] == 0
    assert right.verification.all_unchanged
    checks = {check.path: check for check in right.verification.checks}
    assert all(checks[path].state_unchanged for path in BATCH_NORM_PATHS)
    # Measured (Keras 3.15): base(x, training=False) does not protect the moving statistics.
    assert folklore.status == PROBLEM
    assert folklore.numbers["Moving mean change"] > 0
    assert "training=False" in folklore.verdict


def test_early_fine_tuning_overwrites_the_base_more_than_the_recipe(results):
    result = results("early_fine_tuning")
    check_common(result)
    wrong, right = result.wrong, result.right
    assert wrong.numbers["Base drift"] > 3 * right.numbers["Base drift"]
    assert (
        wrong.numbers["Digits 0-4 still recognised"] < right.numbers["Digits 0-4 still recognised"]
    )
    assert wrong.status == PROBLEM
    # Phase 1 of the recipe keeps the base frozen: the recorder saw it bitwise unchanged then.
    assert right.history["val_accuracy"] and len(right.history["val_accuracy"]) == 4


def test_child_trains_under_frozen_nested_parent_but_not_under_frozen_top(results):
    result = results("child_under_frozen_parent")
    check_common(result)
    nested, top = result.wrong, result.right
    child = f"{BASE_PATH}/conv3"
    assert nested.status == SURPRISE and top.status == NOTE
    assert final_rows(nested, "weights").loc[child, "max_abs_change"] > 0
    assert nested.numbers["Really trains"] == 1.0 and nested.numbers["'conv3' flag"] == 1.0
    assert nested.verification.all_unchanged  # the rest of the frozen base did not move
    assert final_rows(top, "weights").loc[child, "max_abs_change"] == 0
    assert top.numbers["'conv3' flag"] == 1.0 and top.numbers["Really trains"] == 0.0
    assert top.numbers["Trainable params (Keras)"] == 0
    assert top.verification.all_unchanged and child in {c.path for c in top.verification.checks}
