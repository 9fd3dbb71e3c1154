"""The pitfall lab's experiments: each one measured both ways, checked against NumPy and Keras."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.pitfalls import (
    BASE_PATH,
    FINE,
    NOTE,
    PITFALLS,
    PROBLEM,
    STATUSES,
    SURPRISE,
    build_lab_model,
    custom_loop,
    original_task_accuracy,
    pretrained_base,
    run_pitfall,
)
from models.pitfalls.save_and_load import ROUTE_LABELS

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


def test_registry_has_the_pitfalls_in_order_with_texts():
    assert list(PITFALLS)[:7] == [
        "stale_compile",
        "batch_norm",
        "early_fine_tuning",
        "child_under_frozen_parent",
        "shared_layer",
        "save_and_load",
        "custom_loop",
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


def test_stale_compile_recompiling_keeps_the_frozen_layers(results):
    # The wrong way's outcome depends on the Keras version and backend: it is checked
    # against a direct Keras measurement in tests/test_keras_truth.py.
    result = results("stale_compile")
    check_common(result)
    right = result.right
    assert right.status == FINE
    assert right.verification.all_unchanged and right.verification.num_checked == 6
    assert right.numbers["Largest change in a frozen layer"] == 0


def test_batch_norm_statistics_move_unless_frozen(results):
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
    # What base(x, training=False) does is version-dependent: tests/test_keras_truth.py
    # compares this run with a direct Keras measurement.
    assert "training=False" in folklore.label


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


# ------------------------------------------------ pitfalls 5-7, each against direct Keras
def small_data():
    generator = np.random.default_rng(0)
    return generator.normal(size=(64, 8)).astype("float32"), generator.integers(0, 2, 64)


def small_model(shared_layer=None, name="small"):
    """Input (8,) -> a Dense named "shared" (or the given layer) -> a softmax head."""
    layer = shared_layer or keras.layers.Dense(4, name="shared")
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2, activation="softmax")(layer(inputs))
    return keras.Model(inputs, outputs, name=name)


def direct_shared_layer():
    """One Dense object in two models: frozen "for A", unfrozen "for B", then B trained."""
    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(4, name="shared")
    model_a, model_b = small_model(shared, "a"), small_model(shared, "b")
    shared.trainable = False
    b_still_trains_it = any(weight is shared.kernel for weight in model_b.trainable_weights)
    shared.trainable = True
    kernel = np.array(model_a.get_layer("shared").kernel.numpy(), copy=True)
    model_b.compile("adam", "sparse_categorical_crossentropy")
    model_b.fit(*small_data(), epochs=1, verbose=0)
    return {
        "b_still_trains_it": b_still_trains_it,
        "a_moved": not np.array_equal(kernel, model_a.get_layer("shared").kernel.numpy()),
        "a_flag": model_a.get_layer("shared").trainable,
    }


def test_shared_layer_report_matches_a_direct_keras_measurement(results):
    result = results("shared_layer")
    check_common(result)
    wrong, right = result.wrong, result.right
    direct = direct_shared_layer()
    head_params = pretrained_base().output_shape[-1] * 5 + 5
    b_count = wrong.numbers["B's trainable params after A's freeze"]
    assert (b_count == head_params) == (not direct["b_still_trains_it"])
    assert (wrong.numbers["A's base layers that moved"] > 0) == direct["a_moved"]
    assert wrong.verification.all_unchanged == (not direct["a_moved"])
    assert wrong.numbers["A's base flag at the end"] == float(direct["a_flag"])
    assert wrong.status == (
        PROBLEM if direct["a_moved"] or not direct["b_still_trains_it"] else FINE
    )
    if direct["a_moved"]:
        assert "although nobody trained model A" in wrong.verdict
        assert wrong.numbers["Largest change in A's base"] > 0
    # The right way: B's own copy; A's base proven bitwise unchanged, A's predictions too.
    assert right.status == FINE and right.verification.all_unchanged
    base_layers = [
        f"{BASE_PATH}/{kind}{index}" for index in (1, 2, 3) for kind in ("conv", "batch_norm")
    ]
    assert {check.path for check in right.verification.checks} == set(base_layers)
    assert right.numbers["A's predictions that changed"] == 0
    assert right.numbers["A's base flag at the end"] == 0.0
    assert right.numbers["B's trainable params after A's freeze"] > head_params
    assert "bitwise unchanged" in right.verdict


def keras_flags(layer, prefix=""):
    """Every layer's own `trainable` flag by name path, read straight from Keras."""
    path = f"{prefix}{layer.name}"
    flags = {path: layer.trainable}
    for child in getattr(layer, "layers", []):
        flags.update(keras_flags(child, path + "/"))
    return flags


def trainable_params(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def direct_routes(directory):
    """The lab model with the plan, brought back four ways; flags compared with Keras only."""
    model = build_lab_model(0)
    base = model.get_layer("feature_extractor")
    base.trainable = False
    base.get_layer("conv3").trainable = True
    flags, params = keras_flags(model), trainable_params(model)
    model.save(directory / "direct.keras")
    model.save_weights(directory / "direct.weights.h5")
    rebuilt = build_lab_model(0)
    rebuilt.load_weights(directory / "direct.weights.h5")
    loaded = {
        "keras_file": keras.models.load_model(directory / "direct.keras"),
        "load_weights": rebuilt,
        "clone_model": keras.models.clone_model(model),
        "from_config": keras.Model.from_config(model.get_config()),
    }
    changed = {
        key: sum(keras_flags(other).get(path) != flag for path, flag in flags.items())
        for key, other in loaded.items()
    }
    return len(flags), changed, params, {key: trainable_params(m) for key, m in loaded.items()}


def test_save_and_load_report_matches_direct_keras_measurements(results, tmp_path):
    result = results("save_and_load")
    check_common(result)
    wrong, right = result.wrong, result.right
    num_layers, changed, params, params_after = direct_routes(tmp_path)
    assert set(changed) == set(ROUTE_LABELS)
    for key, label in ROUTE_LABELS.items():
        assert wrong.numbers[f"Flags after {label}"] == changed[key], key
    kept = [key for key, count in changed.items() if count == 0]
    assert wrong.numbers["Routes that kept every flag"] == len(kept)
    for key in kept:
        assert ROUTE_LABELS[key] in wrong.verdict.split("Routes that kept every flag:")[1]
    # The wrong run is the model rebuilt from code + load_weights, trained as loaded.
    assert wrong.numbers["Flags that differ from the plan"] == changed["load_weights"]
    assert wrong.numbers["Trainable params (Keras)"] == params_after["load_weights"]
    trains_more = params_after["load_weights"] != params
    assert (wrong.numbers["Layers the plan froze that trained"] > 0) == trains_more
    assert wrong.verification.all_unchanged == (not trains_more)
    assert wrong.status == (PROBLEM if trains_more else FINE)
    # The right run re-applies the plan: flags as planned, Keras's count as planned, proof.
    assert right.numbers["Flags that differ from the plan"] == 0
    assert right.numbers["Trainable params (Keras)"] == params
    assert right.status == FINE and right.verification.all_unchanged
    assert right.verification.num_checked == 5  # conv1, batch_norm1, conv2, batch_norm2, bn3
    assert f"{BASE_PATH}/conv3" not in {check.path for check in right.verification.checks}
    assert num_layers == len(right.layer_order)


def direct_custom_loop(all_weights):
    """A GradientTape loop over model.weights or trainable_weights; did the frozen layer move?"""
    keras.utils.set_random_seed(0)
    model = small_model()
    model.get_layer("shared").trainable = False
    variables = model.weights if all_weights else model.trainable_weights
    optimizer = keras.optimizers.Adam(0.01)
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    kernel = np.array(model.get_layer("shared").kernel.numpy(), copy=True)
    x, y = small_data()
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = loss_function(y, model(x, training=True))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
    return not np.array_equal(kernel, model.get_layer("shared").kernel.numpy())


def test_custom_loop_report_matches_a_direct_gradient_tape_loop(results):
    result = results("custom_loop")
    check_common(result)
    wrong, right = result.wrong, result.right
    frozen_moves = direct_custom_loop(all_weights=True)
    assert wrong.verification.all_unchanged == (not frozen_moves)
    assert (wrong.numbers["Frozen layers that moved"] > 0) == frozen_moves
    assert wrong.status == (PROBLEM if frozen_moves else FINE)
    assert not direct_custom_loop(all_weights=False)
    assert right.status == FINE and right.verification.all_unchanged
    assert right.verification.num_checked == 6
    assert right.numbers["Largest change in a frozen layer"] == 0
    # What each loop differentiated, counted with Keras directly.
    model = build_lab_model(0)
    model.get_layer("feature_extractor").trainable = False
    states = [w for w in model.weights if w.path.endswith(("moving_mean", "moving_variance"))]
    assert wrong.numbers["Variables differentiated"] == len(model.weights) - len(states)
    assert right.numbers["Variables differentiated"] == len(model.trainable_weights)
    # Same seed, data and batches: the head's curves differ only through the base.
    assert len(wrong.history["val_accuracy"]) == len(right.history["val_accuracy"]) == 2


def test_custom_loop_refuses_other_backends_clearly(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match=r"TensorFlow and JAX backends.*'torch'"):
        custom_loop.run(0)
