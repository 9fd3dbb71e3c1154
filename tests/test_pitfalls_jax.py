"""Pitfalls 5-7 (shared layer, save and load, custom loop) and 9-11 (LoRA) on JAX, each against
direct Keras.

Keras picks its backend once per process from `KERAS_BACKEND`, so the lab and the direct
measurements run together in one JAX subprocess (as in tests/test_backends.py); this process
only compares. Nothing expects a fixed outcome for behaviour that might change with a Keras
release: each report is compared with what Keras did in the same subprocess.
"""

import pytest

from tests.backend_subprocess import run_on_backend, skip_without_jax

SCRIPT = r"""
import json
import tempfile
from pathlib import Path

import jax
import keras
import numpy as np

from models.pitfalls import build_lab_model, pretrained_base, run_pitfall
from models.pitfalls.save_and_load import ROUTE_LABELS
# The same direct Keras measurements as the TensorFlow tests, run here on JAX.
from tests.test_pitfalls import direct_routes as _direct_routes
from tests.test_pitfalls import direct_shared_layer, small_data, small_model
from tests.test_pitfalls_lora import direct_reload as _direct_reload
from tests.test_pitfalls_lora import direct_small_cnn_counts, direct_unfreeze
from models.pitfalls import task_split

x, y = small_data()


def direct_routes():
    _, changed, params, params_after = _direct_routes(Path(tempfile.mkdtemp()))
    return {"changed": changed, "params": params, "params_after": params_after}


def direct_custom_loop(all_weights):
    # Keras's "training loop from scratch in JAX": stateless_call + jax.grad + stateless_apply.
    keras.utils.set_random_seed(0)
    model = small_model()
    model.get_layer("shared").trainable = False
    kernel = np.array(model.get_layer("shared").kernel.numpy(), copy=True)
    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
    chosen = [*trainable, *non_trainable] if all_weights else list(trainable)
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(chosen)
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    count = len(trainable)

    def loss(chosen_values, other_values):
        values = [*chosen_values, *other_values]
        predictions, _ = model.stateless_call(values[:count], values[count:], x, training=True)
        return loss_function(y, predictions)

    chosen_values = [v.value for v in chosen]
    other_values = [] if all_weights else [v.value for v in non_trainable]
    optimizer_values = [v.value for v in optimizer.variables]
    for _ in range(3):
        gradients = jax.grad(loss)(chosen_values, other_values)
        chosen_values, optimizer_values = optimizer.stateless_apply(
            optimizer_values, gradients, chosen_values
        )
    for variable, value in zip(chosen, chosen_values):
        variable.assign(value)
    return not np.array_equal(kernel, model.get_layer("shared").kernel.numpy())


def direct_reload():
    # The loaded LoRA model's gradient with respect to its adapters, with jax.grad.
    loaded, adapters, facts = _direct_reload(Path(tempfile.mkdtemp()))
    x, y, _, _ = task_split(0)
    trainable, non_trainable = loaded.trainable_variables, loaded.non_trainable_variables
    loss_function = keras.losses.SparseCategoricalCrossentropy()

    def loss(values):
        state = [v.value for v in non_trainable]
        predictions, _ = loaded.stateless_call(values, state, x[:64], training=True)
        return loss_function(y[:64], predictions)

    gradients = jax.grad(loss)([v.value for v in trainable])
    ids = {id(v) for v in adapters}
    chosen = [g for v, g in zip(trainable, gradients) if id(v) in ids]
    facts["adapters_differentiated"] = len(chosen)
    facts["zero_gradients"] = all(not np.any(np.asarray(g)) for g in chosen)
    return facts


def variant_report(variant):
    return {
        "label": variant.label,
        "status": variant.status,
        "verdict": variant.verdict,
        "numbers": variant.numbers,
        "all_unchanged": variant.verification.all_unchanged,
        "checked": [check.path for check in variant.verification.checks],
        "lora_checks": [
            [check.path, check.unchanged]
            for check in variant.verification.checks
            if check.lora_kernel
        ],
        "kinds": sorted(set(variant.drift["kind"])),
        "drift_rows": len(variant.drift),
        "layer_order_ok": set(variant.drift["layer_path"]) <= set(variant.layer_order),
    }


report = {
    "backend": keras.backend.backend(),
    "head_params": pretrained_base().output_shape[-1] * 5 + 5,
}
for key in (
    "shared_layer",
    "save_and_load",
    "custom_loop",
    "lora_parent_unfreeze",
    "lora_save_reload",
    "lora_small_cnn",
):
    result = run_pitfall(key, seed=0)
    report[key] = {
        "environment": result.environment.backend,
        "variants": [variant_report(variant) for variant in result.variants],
    }
report["direct_shared_layer"] = direct_shared_layer()
report["direct_routes"] = direct_routes()
report["route_labels"] = dict(ROUTE_LABELS)
report["direct_custom_loop"] = {
    "all": direct_custom_loop(all_weights=True),
    "trainable": direct_custom_loop(all_weights=False),
}
report["direct_unfreeze"] = direct_unfreeze()
report["direct_reload"] = direct_reload()
report["direct_small_cnn"] = direct_small_cnn_counts()
model = build_lab_model(0)
model.get_layer("feature_extractor").trainable = False
states = [w for w in model.weights if w.path.endswith(("moving_mean", "moving_variance"))]
report["counts"] = {
    "weights_without_state": len(model.weights) - len(states),
    "trainable": len(model.trainable_weights),
}
print("RESULT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def jax_report():
    skip_without_jax()
    report = run_on_backend(SCRIPT, "jax", timeout=600)
    assert report["backend"] == "jax"
    return report


def check_common(result):
    assert result["environment"] == "jax"
    for variant in result["variants"]:
        assert variant["drift_rows"] > 0 and variant["layer_order_ok"]
        assert variant["verdict"]


def test_shared_layer_on_jax_matches_direct_keras(jax_report):
    result, direct = jax_report["shared_layer"], jax_report["direct_shared_layer"]
    check_common(result)
    wrong, right = (variant for variant in result["variants"])
    numbers = wrong["numbers"]
    head_params = jax_report["head_params"]
    b_frozen_too = numbers["B's trainable params after A's freeze"] == head_params
    assert b_frozen_too == (not direct["b_still_trains_it"])
    assert (numbers["A's base layers that moved"] > 0) == direct["a_moved"]
    assert wrong["all_unchanged"] == (not direct["a_moved"])
    assert numbers["A's base flag at the end"] == float(direct["a_flag"])
    assert right["status"] == "fine" and right["all_unchanged"] and len(right["checked"]) == 6
    assert right["numbers"]["A's predictions that changed"] == 0


def test_save_and_load_on_jax_matches_direct_keras(jax_report):
    result, direct = jax_report["save_and_load"], jax_report["direct_routes"]
    check_common(result)
    wrong, right = (variant for variant in result["variants"])
    for key, label in jax_report["route_labels"].items():
        assert wrong["numbers"][f"Flags after {label}"] == direct["changed"][key], key
    kept = sum(count == 0 for count in direct["changed"].values())
    assert wrong["numbers"]["Routes that kept every flag"] == kept
    trains_more = direct["params_after"]["load_weights"] != direct["params"]
    assert (wrong["numbers"]["Layers the plan froze that trained"] > 0) == trains_more
    assert wrong["all_unchanged"] == (not trains_more)
    assert right["numbers"]["Flags that differ from the plan"] == 0
    assert right["numbers"]["Trainable params (Keras)"] == direct["params"]
    assert right["status"] == "fine" and right["all_unchanged"] and len(right["checked"]) == 5


def test_custom_loop_on_jax_matches_a_direct_stateless_loop(jax_report):
    result, direct = jax_report["custom_loop"], jax_report["direct_custom_loop"]
    check_common(result)
    wrong, right = (variant for variant in result["variants"])
    assert wrong["all_unchanged"] == (not direct["all"])
    assert (wrong["numbers"]["Frozen layers that moved"] > 0) == direct["all"]
    assert not direct["trainable"]
    assert right["status"] == "fine" and right["all_unchanged"] and len(right["checked"]) == 6
    assert right["numbers"]["Largest change in a frozen layer"] == 0
    counts = jax_report["counts"]
    assert wrong["numbers"]["Variables differentiated"] == counts["weights_without_state"]
    assert right["numbers"]["Variables differentiated"] == counts["trainable"]


# ------------------------------------------------------------------------------- LoRA (9-11)
def test_lora_parent_unfreeze_on_jax_matches_direct_keras(jax_report):
    result, direct = jax_report["lora_parent_unfreeze"], jax_report["direct_unfreeze"]
    check_common(result)
    wrong, right, by_hand = result["variants"]
    assert wrong["numbers"]["Trainable params (Keras)"] == direct["unfrozen"]
    assert wrong["numbers"]["`trainable = True` on a trainable base"] == direct["unchanged_true"]
    reenabled = sum(direct["kernels_after_unfreeze"])
    assert wrong["numbers"]["LoRA kernels that moved"] == reenabled
    assert sum(not unchanged for _, unchanged in wrong["lora_checks"]) == reenabled
    assert (wrong["status"] == "problem") == (
        reenabled > 0 or direct["unfrozen"] > direct["budget"]
    )
    for variant in (right, by_hand):
        assert variant["numbers"]["Trainable params (Keras)"] == direct["budget"]
        assert variant["numbers"]["Trainable params (Keras)"] == direct["repaired"]
        assert variant["status"] == "fine" and variant["all_unchanged"]
        assert len(variant["lora_checks"]) == 3
        assert variant["numbers"]["Adapters that moved"] == 6
    still = sum(direct["kernels_after_folklore"])
    assert f"after it {still} of 3 kernels were still trainable" in by_hand["verdict"]


def test_lora_save_reload_on_jax_matches_a_direct_jax_grad(jax_report):
    result, direct = jax_report["lora_save_reload"], jax_report["direct_reload"]
    check_common(result)
    wrong, right = result["variants"]
    assert direct["trained_b"] > 0 and all(direct["lora_enabled"])
    assert direct["adapters_differentiated"] == 6
    assert wrong["numbers"]["Adapters after loading"] == direct["adapters_max"]
    assert wrong["numbers"]["Prediction change after loading"] == direct["prediction_change"]
    assert wrong["numbers"]["Trainable params (Keras)"] == direct["params"]
    assert (wrong["numbers"]["Adapters that moved"] == 0) == direct["zero_gradients"]
    if direct["zero_gradients"]:
        assert wrong["numbers"]["Trainable params that moved"] == direct["head_params"]
    assert (wrong["status"] == "problem") == direct["zero_gradients"]
    assert right["status"] == "fine" and right["all_unchanged"]
    assert right["numbers"]["Adapters that moved"] == 6
    assert right["numbers"]["Prediction change after loading"] == 0
    assert "effective_kernel" in right["kinds"]


def test_lora_small_cnn_on_jax_counts_what_keras_counts(jax_report):
    result, direct = jax_report["lora_small_cnn"], jax_report["direct_small_cnn"]
    check_common(result)
    lora, head, full = result["variants"]
    assert lora["numbers"]["Trainable params (Keras)"] == direct["lora"]
    assert head["numbers"]["Trainable params (Keras)"] == direct["head"]
    assert full["numbers"]["Trainable params (Keras)"] == direct["full"]
    share = direct["lora"] / direct["full"]
    assert abs(lora["numbers"]["Share of full fine-tuning"] - share) < 1e-12
    assert head["status"] == "fine" and head["all_unchanged"]
    assert head["numbers"]["Digits 0-4 still recognised"] == 1.0
    assert lora["all_unchanged"] and len(lora["lora_checks"]) == 3
    assert all(variant["numbers"]["Seconds per epoch"] > 0 for variant in result["variants"])
