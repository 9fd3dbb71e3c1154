"""The three LoRA pitfalls (9-11), each checked against Keras measured directly in the same test.

The direct measurements use Keras's own `enable_lora`, `trainable` setter, `.keras` saving and
`trainable_weights` on a model built here, never the lab's helpers, and compare what the lab
reported with what Keras did on this backend. The helpers are backend-neutral: the JAX test
(tests/test_pitfalls_jax.py) runs them in a JAX subprocess.
"""

import math

import keras
import numpy as np
import pytest

from models.drift import VerificationResult
from models.keras_version import VERSION_NOTES
from models.pitfalls import (
    BASE_NAME,
    FINE,
    NOTE,
    PITFALLS,
    PROBLEM,
    STATUSES,
    SURPRISE,
    build_lab_model,
    run_pitfall,
    task_split,
)
from models.pitfalls.lora_lab import (
    build_lora_lab_model,
    restore_lora_variables,
    save_lora_variables,
)
from models.pitfalls.lora_small_cnn import SMALL_SAVING_SHARE

LORA_KEYS = ("lora_parent_unfreeze", "lora_save_reload", "lora_small_cnn")
CONV_NAMES = ("conv1", "conv2", "conv3")
RANK = 4

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


def check_common(result, num_variants):
    assert result.key in PITFALLS and len(result.variants) == num_variants
    for variant in result.variants:
        assert variant.status in STATUSES and variant.verdict
        assert not variant.drift.empty
        assert set(variant.drift["layer_path"]) <= set(variant.layer_order)
        assert all(math.isfinite(m.value) for m in variant.measurements)
        assert variant.layer_order[0] == "transfer_model" and variant.seconds > 0


# ------------------------------------------------------------ direct Keras, backend-neutral
def keras_params(model):
    """The independent reference: Keras's own `trainable_weights`, summed."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def direct_lora_model(freeze_batch_norm=True):
    """The lab model with Keras's own `enable_lora(4)` on each conv of the base."""
    model = build_lab_model(0)
    base = model.get_layer(BASE_NAME)
    convs = [base.get_layer(name) for name in CONV_NAMES]
    for conv in convs:
        conv.enable_lora(RANK)
    if freeze_batch_norm:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model, base, convs


def kernel_flags(convs):
    """Each conv's 'kernel' variable's own `trainable` flag, read from `layer.weights`."""
    return [v.trainable for conv in convs for v in conv.weights if v.name == "kernel"]


def lora_budget_by_hand(model, convs):
    """Adapters from the kernels' shapes (kh * kw * in * r + r * out) plus the head."""
    adapters = 0
    for conv in convs:
        (kernel,) = [v for v in conv.weights if v.name == "kernel"]
        *inner, out = kernel.shape
        adapters += math.prod(inner) * RANK + RANK * out
    return adapters + sum(math.prod(w.shape) for w in model.get_layer("classifier").weights)


def direct_unfreeze():
    """Plain Keras's two-phase unfreeze of a LoRA base, and the two repairs, measured."""
    model, base, convs = direct_lora_model(freeze_batch_norm=False)
    fresh = keras_params(model)
    base.trainable = True  # on a base that is trainable already
    unchanged_true = keras_params(model)
    model, base, convs = direct_lora_model()
    budget = lora_budget_by_hand(model, convs)
    base.trainable = False
    base.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    unfrozen = keras_params(model)
    kernels_after_unfreeze = kernel_flags(convs)
    for conv in convs:
        conv.kernel.trainable = False  # the folklore repair
    kernels_after_folklore = kernel_flags(convs)
    for conv in convs:
        for variable in conv.weights:
            if variable.name == "kernel":
                variable.trainable = False
    return {
        "fresh": fresh,
        "unchanged_true": unchanged_true,
        "budget": budget,
        "unfrozen": unfrozen,
        "kernels_after_unfreeze": kernels_after_unfreeze,
        "kernels_after_folklore": kernels_after_folklore,
        "repaired": keras_params(model),
        "kernels_repaired": kernel_flags(convs),
    }


def direct_reload(directory):
    """Trains a LoRA model briefly, saves it as `.keras`, loads it: what Keras kept."""
    model, _, convs = direct_lora_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x, y, x_validation, _ = task_split(0)
    model.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    trained_b = max(float(np.max(np.abs(conv.lora_kernel_b.numpy()))) for conv in convs)
    path = str(directory / "direct_lora.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_convs = [loaded.get_layer(BASE_NAME).get_layer(name) for name in CONV_NAMES]
    adapters = [v for conv in loaded_convs for v in (conv.lora_kernel_a, conv.lora_kernel_b)]
    predictions = np.asarray(keras.ops.convert_to_numpy(model(x_validation)))
    loaded_predictions = np.asarray(keras.ops.convert_to_numpy(loaded(x_validation)))
    return (
        loaded,
        adapters,
        {
            "trained_b": trained_b,
            "lora_enabled": [bool(conv.lora_enabled) for conv in loaded_convs],
            "adapters_max": max(float(np.max(np.abs(v.numpy()))) for v in adapters),
            "prediction_change": float(np.max(np.abs(loaded_predictions - predictions))),
            "params": keras_params(loaded),
            "head_params": sum(math.prod(w.shape) for w in loaded.get_layer("classifier").weights),
        },
    )


def direct_small_cnn_counts():
    """Keras's counts for head-only, LoRA on the convs, and full fine-tuning (BN frozen)."""
    head_model = build_lab_model(0)
    head_model.get_layer(BASE_NAME).trainable = False
    full_model = build_lab_model(0)
    for layer in full_model.get_layer(BASE_NAME).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    lora_model, _, _ = direct_lora_model()
    return {
        "head": keras_params(head_model),
        "full": keras_params(full_model),
        "lora": keras_params(lora_model),
    }


# ------------------------------------------------------------------------------ registry
def test_the_lora_pitfalls_follow_training_false_in_order():
    keys = list(PITFALLS)
    assert keys[keys.index("training_false") + 1 :] == list(LORA_KEYS)
    for number, key in enumerate(LORA_KEYS, start=9):
        pitfall = PITFALLS[key]
        assert pitfall.number == number
        assert pitfall.title and pitfall.explanation and pitfall.what_to_look_at and pitfall.fix
        assert pitfall.version_note == "" or pitfall.version_note in VERSION_NOTES


# ------------------------------------------------------------------ 9. parent unfreeze
def test_plain_unfreeze_reenables_lora_kernels_as_keras_does_and_freezelab_keeps_them(results):
    result = results("lora_parent_unfreeze")
    check_common(result, 3)
    wrong, right, by_hand = result.variants
    direct = direct_unfreeze()
    # Keras's own counts, measured here, equal what the lab reported.
    assert wrong.numbers["Trainable params (Keras)"] == direct["unfrozen"]
    assert right.numbers["Trainable params (Keras)"] == direct["budget"] == direct["repaired"]
    assert by_hand.numbers["Trainable params (Keras)"] == direct["repaired"]
    assert wrong.numbers["`trainable = True` on a trainable base"] == direct["unchanged_true"]
    # Whether the kernels trained follows whether Keras made them trainable.
    reenabled = sum(direct["kernels_after_unfreeze"])
    assert wrong.numbers["LoRA kernels Keras trains"] == reenabled
    assert wrong.numbers["LoRA kernels that moved"] == reenabled
    assert (wrong.status == PROBLEM) == (reenabled > 0 or direct["unfrozen"] > direct["budget"])
    assert (wrong.numbers["Largest change in a LoRA kernel"] > 0) == (reenabled > 0)
    kernel_checks = [check for check in wrong.verification.checks if check.lora_kernel]
    assert [check.path.rsplit("/", 1)[-1] for check in kernel_checks] == list(CONV_NAMES)
    assert sum(not check.unchanged for check in kernel_checks) == reenabled
    # FreezeLab's freezing and the repair by hand: the recorder's own bitwise proof.
    for variant in (right, by_hand):
        assert variant.status == FINE
        assert variant.numbers["LoRA kernels that moved"] == 0
        assert variant.numbers["Largest change in a LoRA kernel"] == 0
        assert variant.numbers["Adapters that moved"] == 6
        assert variant.verification.all_unchanged
        assert sum(check.lora_kernel for check in variant.verification.checks) == 3
    assert not any(direct["kernels_repaired"])
    # `layer.kernel.trainable = False` on a LoRA layer: what Keras did, measured here.
    still = sum(direct["kernels_after_folklore"])
    assert f"after it {still} of 3 kernels were still trainable" in by_hand.verdict


def test_unchanged_true_depends_on_the_backend_as_measured():
    direct = direct_unfreeze()
    if keras.backend.backend() == "tensorflow":
        # TensorFlow skips assigning a flag its current value.
        assert direct["unchanged_true"] == direct["fresh"]
    assert direct["unfrozen"] > direct["budget"]  # False -> True re-enables on every backend


# ------------------------------------------------------------------------ 10. save, reload
def test_reloaded_lora_adapters_are_zero_get_zero_gradients_and_never_move(results, tmp_path):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("The gradient is taken with tf.GradientTape (JAX: tests/test_pitfalls_jax).")
    result = results("lora_save_reload")
    check_common(result, 2)
    wrong, right = result.variants
    loaded, adapters, direct = direct_reload(tmp_path)
    x, y, _, _ = task_split(0)
    with tf.GradientTape() as tape:
        predictions = loaded(x[:64], training=True)
        loss = keras.losses.sparse_categorical_crossentropy(y[:64], predictions)
    gradients = tape.gradient(loss, [v.value for v in adapters])
    zero_gradients = all(not np.any(np.asarray(g)) for g in gradients)
    assert direct["trained_b"] > 0 and all(direct["lora_enabled"])
    # The lab's report equals Keras measured here.
    assert wrong.numbers["Adapters after loading"] == direct["adapters_max"]
    assert wrong.numbers["Prediction change after loading"] == direct["prediction_change"] == 0
    assert wrong.numbers["Trainable params (Keras)"] == direct["params"]
    assert (wrong.numbers["Adapters that moved"] == 0) == zero_gradients
    if zero_gradients:
        assert wrong.numbers["Trainable params that moved"] == direct["head_params"]
    assert (wrong.status == PROBLEM) == zero_gradients
    assert wrong.numbers["LoRA kernels that moved"] == 0 and wrong.verification.all_unchanged
    # The adapters kept next to the file: restored, same function, and they train on.
    assert right.status == FINE
    assert right.numbers["Adapters after loading"] > 0
    assert right.numbers["Prediction change after loading"] == 0
    assert right.numbers["Adapters that moved"] == 6
    assert right.numbers["Trainable params that moved"] == right.numbers["Trainable params (Keras)"]
    assert right.verification.all_unchanged
    assert sum(check.lora_kernel for check in right.verification.checks) == 3
    assert (
        wrong.numbers["Validation accuracy when loaded"]
        == right.numbers["Validation accuracy when loaded"]
    )
    assert wrong.chart_kind == right.chart_kind == "effective_kernel"
    assert "effective_kernel" in set(right.drift["kind"])


def test_lora_variables_round_trip_and_a_foreign_file_is_refused(tmp_path):
    source = build_lora_lab_model(0)
    convs = [source.get_layer(BASE_NAME).get_layer(name) for name in CONV_NAMES]
    for conv in convs:
        conv.lora_kernel_b.assign(np.full(conv.lora_kernel_b.shape, 0.25, "float32"))
    path = str(tmp_path / "adapters.npz")
    assert save_lora_variables(source, path) == 9
    target = build_lora_lab_model(1)
    assert restore_lora_variables(target, path) == 9
    for conv in convs:
        twin = target.get_layer(BASE_NAME).get_layer(conv.name)
        for mine, theirs in zip(conv.weights, twin.weights, strict=True):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    other = build_lora_lab_model(0, rank=2)
    with pytest.raises(ValueError, match=r"conv1\.lora_kernel_a of shape \(3, 3, 1, 2\)"):
        restore_lora_variables(other, path)
    with pytest.raises(ValueError, match="No adapter file"):
        restore_lora_variables(other, str(tmp_path / "missing.npz"))


# ---------------------------------------------------------------------- 11. small CNN
def test_small_cnn_counts_equal_keras_and_verdicts_follow_the_numbers(results):
    result = results("lora_small_cnn")
    check_common(result, 3)
    lora, head, full = result.variants
    direct = direct_small_cnn_counts()
    assert lora.numbers["Trainable params (Keras)"] == direct["lora"]
    assert head.numbers["Trainable params (Keras)"] == direct["head"]
    assert full.numbers["Trainable params (Keras)"] == direct["full"]
    share = direct["lora"] / direct["full"]
    assert lora.numbers["Share of full fine-tuning"] == pytest.approx(share)
    assert full.numbers["Share of full fine-tuning"] == 1
    assert lora.status == (SURPRISE if share >= SMALL_SAVING_SHARE else NOTE)
    assert f"{direct['lora']:,} params: {share:.1%}" in lora.verdict
    for variant in result.variants:
        assert variant.numbers["Seconds per epoch"] > 0
        assert 0 <= variant.numbers["Validation accuracy"] <= 1
        accuracy = variant.numbers["Validation accuracy"]
        assert accuracy == variant.history["val_accuracy"][-1]
        assert f"{accuracy:.1%}" in lora.verdict
    # Head only: the base frozen throughout, bitwise, so it still knows digits 0-4 fully.
    assert head.status == FINE and head.verification.all_unchanged
    assert head.verification.num_checked == 6
    assert head.numbers["Digits 0-4 still recognised"] == 1.0
    # LoRA keeps the kernels bitwise (the recorder's own check) and the BN layers frozen.
    assert lora.verification.all_unchanged
    assert sum(check.lora_kernel for check in lora.verification.checks) == 3
    assert isinstance(lora.verification, VerificationResult)


# ---------------------------------------------------------------------- the lab's page
def pitfall_lab_script():
    from components.pitfall_lab import render_pitfall_lab

    render_pitfall_lab()


@pytest.mark.parametrize("key", LORA_KEYS)
def test_the_lab_page_draws_every_variant_of_a_lora_pitfall(results, key):
    from streamlit.testing.v1 import AppTest

    result = results(key)
    at = AppTest.from_function(pitfall_lab_script, default_timeout=60)
    at.session_state["pitfall_results"] = {(key, 0): result}
    at.run()
    at.selectbox(key="pitfall_choice").set_value(key).run()
    assert not at.exception
    assert not [e.value for e in at.error if "could not" in e.value]
    banners = [b.value for b in (*at.error, *at.warning, *at.success, *at.info)]
    assert all(variant.verdict in banners for variant in result.variants)
    labels = {metric.label for metric in at.metric}
    for variant in result.variants:
        assert {measurement.label for measurement in variant.measurements} <= labels
    assert len(at.get("plotly_chart")) == len(result.variants)
    captions = " ".join(caption.value for caption in at.caption)
    assert all(variant.verification.message() in captions for variant in result.variants)
