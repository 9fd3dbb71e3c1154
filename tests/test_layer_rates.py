"""Tests for models.layer_rates: per-layer learning rates as an optimizer, on TensorFlow and JAX.

References are independent of the code under test: the plain Keras optimizer (same seed, same
data, or the same fixed gradients), NumPy formulas for SGD's step, Adam's first step and
decoupled weight decay, and `np.array_equal` on weights before and after. The JAX checks run
the same helpers in a `KERAS_BACKEND=jax` subprocess (as tests/test_backends.py does), since
Keras picks its backend once per process.
"""

import json
import warnings

import keras
import numpy as np
import pytest

from models.layer_rates import (
    DECAY_FACTOR_RANGE,
    MULTIPLIER_RANGE,
    LayerRateOptimizer,
    LayerRates,
    decay_blocks,
    layer_multipliers,
    layer_rate_optimizer,
    layer_rate_optimizer_class,
    layer_rates_frame,
    variable_multipliers,
)
from models.training import OPTIMIZERS, JobState, TrainingConfig, TrainingJob
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend, skip_without_jax

OPTIMIZER_NAMES = ["adam", "sgd", "rmsprop", "adamw"]
LEARNING_RATE = 0.05


# ------------------------------------------------------------------ helpers (TF and JAX)
def small_model() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="small",
    )


def small_data(num_samples: int = 48):
    generator = np.random.default_rng(1)
    y = np.arange(num_samples) % 3
    x = generator.normal(size=(num_samples, 6)).astype("float32") + y[:, None]
    return x, y


def layer_weights(model, name):
    return [np.array(w.numpy(), copy=True) for w in model.get_layer(name).weights]


def fit_small(optimizer_name: str, multipliers=None, *, steps: int = 3):
    """Fits the small model from seed 0; returns {layer: weights} before and after.

    `multipliers` None compiles the plain optimizer; a dict (maybe empty) compiles the
    layer-rate optimizer with those multipliers by layer path.
    """
    keras.utils.set_random_seed(0)
    model = small_model()
    optimizer_class = OPTIMIZERS[optimizer_name]
    if multipliers is None:
        optimizer = optimizer_class(learning_rate=LEARNING_RATE)
    else:
        pairs = variable_multipliers(LayerRates(multipliers), LayerTree(model))
        optimizer = layer_rate_optimizer(optimizer_class, pairs, learning_rate=LEARNING_RATE)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    names = ("first", "bn", "out")
    before = {name: layer_weights(model, name) for name in names}
    x, y = small_data()
    model.fit(x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0)
    return before, {name: layer_weights(model, name) for name in names}


def same(left, right) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(left, right, strict=True))


def optimizer_properties(optimizer_name: str) -> dict:
    """What multipliers 0 and 1 (and none) do, each against the plain optimizer's run."""
    _, plain = fit_small(optimizer_name)
    _, ones = fit_small(optimizer_name, {"small": 1.0})
    _, empty = fit_small(optimizer_name, {})
    before, zero = fit_small(optimizer_name, {"small/first": 0.0})
    return {
        "one_equals_plain": all(same(ones[name], plain[name]) for name in plain),
        "none_equals_plain": all(same(empty[name], plain[name]) for name in plain),
        "zero_unchanged": same(zero["first"], before["first"]),
        "others_moved": not same(zero["out"], before["out"]),
    }


def apply_gradients(optimizer, variable, gradients):
    """Applies fixed gradients one step at a time; returns the variable after each step."""
    values = [np.array(variable.numpy(), copy=True)]
    for gradient in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        values.append(np.array(variable.numpy(), copy=True))
    return np.array(values)


def scaling_report(optimizer_class, arguments, multiplier=0.3, num_steps=6) -> dict:
    """Compares the layer-rate optimizer on one variable with the plain one, same gradients.

    Returns the largest relative differences of the displacement from the start between the
    layer-rate optimizer (multiplier c) and: the plain optimizer at learning rate c * lr
    ("lr scaling"), and c times the plain optimizer's displacement ("update scaling"), over
    every step and over the first step.
    """
    generator = np.random.default_rng(0)
    start = generator.normal(size=(4, 3)).astype("float32")
    gradients = [generator.normal(size=(4, 3)).astype("float32") for _ in range(num_steps)]

    def run(make):
        variable = keras.Variable(start.copy())
        return apply_gradients(make(variable), variable, gradients) - start

    plain = run(lambda v: optimizer_class(learning_rate=0.01, **arguments))
    lr_scaled = run(lambda v: optimizer_class(learning_rate=0.01 * multiplier, **arguments))
    ours = run(
        lambda v: layer_rate_optimizer(
            optimizer_class, [(v, multiplier)], learning_rate=0.01, **arguments
        )
    )

    def relative(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    return {
        "vs_lr_scaling": relative(ours, lr_scaled),
        "vs_update_scaling": relative(ours, multiplier * plain),
        "first_step_vs_update_scaling": relative(ours[1], multiplier * plain[1]),
    }


SCALING_CASES = {
    "adam": ("Adam", {}),
    "adam_amsgrad": ("Adam", {"amsgrad": True}),
    "adamw": ("AdamW", {"weight_decay": 0.1}),
    "sgd": ("SGD", {}),
    "sgd_momentum": ("SGD", {"momentum": 0.9}),
    "sgd_nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ("RMSprop", {}),
    "rmsprop_momentum_centered": ("RMSprop", {"momentum": 0.9, "centered": True}),
}


def all_scaling_reports() -> dict:
    return {
        case: scaling_report(getattr(keras.optimizers, name), arguments)
        for case, (name, arguments) in SCALING_CASES.items()
    }


def half_step_report() -> dict:
    """A multiplier of 0.5 against NumPy: SGD's step and Adam's first step, each halved."""
    generator = np.random.default_rng(2)
    start = generator.normal(size=(5,)).astype("float32")
    gradient = generator.normal(size=(5,)).astype("float32")
    report = {}
    for name in ("sgd", "adam"):
        variable = keras.Variable(start.copy())
        optimizer = layer_rate_optimizer(
            OPTIMIZERS[name], [(variable, 0.5)], learning_rate=LEARNING_RATE
        )
        moved = apply_gradients(optimizer, variable, [gradient])[1] - start
        if name == "sgd":
            reference = -LEARNING_RATE * gradient  # plain SGD's step, by hand
        else:
            # Adam's first step (Keras's formula): m = (1 - b1) g, v = (1 - b2) g^2,
            # alpha = lr sqrt(1 - b2) / (1 - b1), step = -alpha m / (sqrt(v) + epsilon).
            beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
            m, v = (1 - beta_1) * gradient, (1 - beta_2) * gradient**2
            alpha = LEARNING_RATE * np.sqrt(1 - beta_2) / (1 - beta_1)
            reference = -alpha * m / (np.sqrt(v) + epsilon)
        report[name] = float(np.abs(moved - 0.5 * reference).max() / np.abs(reference).max())
    return report


def job_report() -> dict:
    """A TrainingJob with per-layer rates, plain and cached path, against one without."""
    x, y = small_data(96)
    report = {}
    for name, rates, use_prefix_cache in (
        ("plain", LayerRates({"small/out": 0.5}), False),
        ("cached", LayerRates({"small/out": 0.5}), None),
        ("without", None, False),
    ):
        keras.utils.set_random_seed(0)
        model = small_model()
        tree = LayerTree(model)
        tree.set_frozen("small/first", True)
        tree.set_frozen("small/bn", True)
        frozen_before = layer_weights(model, "first") + layer_weights(model, "bn")
        config = TrainingConfig(epochs=2, batch_size=16, seed=0, layer_rates=rates)
        job = TrainingJob(model, x, y, config=config, tree=tree, use_prefix_cache=use_prefix_cache)
        progress = job.run()
        report[name] = {
            "finished": progress.state is JobState.FINISHED,
            "message": progress.message,
            "cached": job.execution_plan.cached,
            "all_unchanged": job.verification().all_unchanged,
            "frozen_bitwise": same(
                frozen_before, layer_weights(model, "first") + layer_weights(model, "bn")
            ),
            "optimizer_after": type(model.optimizer).__name__,
            "out": [w.tolist() for w in layer_weights(model, "out")],
        }
    return report


# ------------------------------------------------------------------ multipliers 0, 1, none
@pytest.mark.parametrize("optimizer_name", OPTIMIZER_NAMES)
def test_multipliers_zero_and_one_against_the_plain_optimizer(optimizer_name):
    properties = optimizer_properties(optimizer_name)
    assert properties == {
        "one_equals_plain": True,  # bitwise, same seed and data
        "none_equals_plain": True,
        "zero_unchanged": True,  # bitwise, AdamW's weight decay included
        "others_moved": True,
    }


def test_a_half_multiplier_halves_sgds_step_and_adams_first_step():
    report = half_step_report()
    assert report["sgd"] < 1e-6
    assert report["adam"] < 1e-5


def test_a_half_multiplier_in_fit_moves_a_layer_half_as_far_as_plain_sgd():
    before, plain = fit_small("sgd", steps=1)
    _, half = fit_small("sgd", {"small/out": 0.5}, steps=1)
    for start, moved_plain, moved_half in zip(
        before["out"], plain["out"], half["out"], strict=True
    ):
        np.testing.assert_allclose(moved_half - start, 0.5 * (moved_plain - start), atol=1e-7)
    assert same(half["first"], plain["first"])  # a single step: the same gradients


@pytest.mark.parametrize("case", sorted(SCALING_CASES))
def test_scaling_the_learning_rate_scales_the_update(case):
    name, arguments = SCALING_CASES[case]
    report = scaling_report(getattr(keras.optimizers, name), arguments)
    # Exactly what the plain optimizer does at learning rate c * lr (float32 rounding aside).
    assert report["vs_lr_scaling"] < 1e-6
    # And c times the plain optimizer's update, step after step: every one of these updates is
    # proportional to the learning rate for the same gradients (momentum included). The bound
    # is float32 rounding: a step of ~3e-3 added to weights of ~1 keeps ~5 digits.
    assert report["first_step_vs_update_scaling"] < 1e-4
    if "weight_decay" not in arguments:
        assert report["vs_update_scaling"] < 1e-4
    else:  # decoupled decay is proportional to the weight, which differs after the first step
        assert report["vs_update_scaling"] < 1e-2


def test_decoupled_weight_decay_is_scaled_by_the_multiplier():
    start = np.linspace(-1.0, 1.0, 6).astype("float32")
    variable = keras.Variable(start.copy())
    optimizer = layer_rate_optimizer(
        keras.optimizers.AdamW, [(variable, 0.25)], learning_rate=0.1, weight_decay=0.2
    )
    # A zero gradient leaves Adam's step at 0: only the decay moves the weight.
    moved = apply_gradients(optimizer, variable, [np.zeros(6, "float32")])[1]
    np.testing.assert_allclose(moved, start - start * 0.2 * (0.1 * 0.25), rtol=1e-6)


def test_the_optimizer_reports_its_multipliers_and_keeps_its_class_family():
    model = small_model()
    tree = LayerTree(model)
    pairs = variable_multipliers(LayerRates({"small/out": 0.5}), tree)
    optimizer = layer_rate_optimizer(keras.optimizers.SGD, pairs, learning_rate=0.1, momentum=0.9)
    assert isinstance(optimizer, keras.optimizers.SGD) and isinstance(optimizer, LayerRateOptimizer)
    assert type(optimizer).__name__ == "LayerRateSGD"
    assert layer_rate_optimizer_class(keras.optimizers.SGD) is type(optimizer)
    assert optimizer.variable_multiplier(model.get_layer("out").kernel) == 0.5
    assert optimizer.variable_multiplier(model.get_layer("first").kernel) == 1.0
    assert optimizer.momentum == 0.9
    # Registered with Keras: a saved copy loads back in FreezeLab, without multipliers (they
    # name variables, which a config cannot hold), so it behaves as the plain SGD.
    copy = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(copy) is type(optimizer) and copy.momentum == 0.9
    assert copy.variable_multiplier(model.get_layer("out").kernel) == 1.0
    with pytest.raises(TypeError, match="Keras optimizer class"):
        layer_rate_optimizer(object, pairs, learning_rate=0.1)
    with pytest.raises(TypeError, match="inner optimizer"):
        layer_rate_optimizer_class(keras.optimizers.LossScaleOptimizer)
    with pytest.raises(TypeError, match=r"keras\.Variable"):
        layer_rate_optimizer(keras.optimizers.SGD, [("small/out", 0.5)], learning_rate=0.1)
    with pytest.raises(ValueError, match="multiplier of"):
        layer_rate_optimizer(keras.optimizers.SGD, [(pairs[0][0], -1.0)], learning_rate=0.1)


# ------------------------------------------------------------------ resolving on a model
@pytest.fixture(scope="module")
def bundled_workspace():
    from models.catalogue import bundled_template
    from models.datasets import load_bundled_dataset
    from models.workspace import Workspace

    return Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))


BASE = "transfer_model/feature_extractor"


def test_layer_wise_decay_on_the_bundled_model(bundled_workspace):
    tree = bundled_workspace.tree
    assert tree.default_base_path() == BASE
    blocks = decay_blocks(tree, layers_per_block=2)
    assert blocks == [
        (f"{BASE}/conv3", f"{BASE}/batch_norm3"),
        (f"{BASE}/conv2", f"{BASE}/batch_norm2"),
        (f"{BASE}/conv1", f"{BASE}/batch_norm1"),
    ]
    multipliers = layer_multipliers(LayerRates(decay_factor=0.5, layers_per_block=2), tree)
    expected = {
        f"{BASE}/conv3": 1.0,
        f"{BASE}/batch_norm3": 1.0,
        f"{BASE}/conv2": 0.5,
        f"{BASE}/batch_norm2": 0.5,
        f"{BASE}/conv1": 0.25,
        f"{BASE}/batch_norm1": 0.25,
        "transfer_model/classifier": 1.0,  # the head keeps the base rate
    }
    assert {path: multipliers[path] for path in expected} == expected
    # One layer per block: the top layer with weights keeps 1, each one below halves.
    per_layer = layer_multipliers(LayerRates(decay_factor=0.5), tree)
    layers = tree.base_layer_paths(BASE)
    assert [per_layer[path] for path in reversed(layers)] == [0.5**k for k in range(6)]
    # Every trainable variable of the model gets its layer's multiplier.
    by_variable = {id(v): m for v, m in variable_multipliers(LayerRates(decay_factor=0.5), tree)}
    for path in [*layers, "transfer_model/classifier"]:
        for variable in tree.layer(path).trainable_weights:
            assert by_variable[id(variable)] == per_layer[path]


def test_explicit_multipliers_nearest_ancestor_wins_and_multiply_the_decay(bundled_workspace):
    tree = bundled_workspace.tree
    rates = LayerRates(
        {BASE: 0.1, f"{BASE}/conv1": 0.0, "transfer_model/classifier": 2.0},
        decay_factor=0.5,
        layers_per_block=2,
    )
    multipliers = layer_multipliers(rates, tree)
    assert multipliers[f"{BASE}/conv3"] == pytest.approx(0.1)
    assert multipliers[f"{BASE}/batch_norm2"] == pytest.approx(0.05)
    assert multipliers[f"{BASE}/batch_norm1"] == pytest.approx(0.025)
    assert multipliers[f"{BASE}/conv1"] == 0.0  # its own multiplier beats its parent's
    assert multipliers["transfer_model/classifier"] == 2.0
    assert multipliers["transfer_model"] == 1.0


def test_the_table_lists_layers_with_weights_and_their_effective_rates(bundled_workspace):
    tree = bundled_workspace.tree
    tree.set_frozen(f"{BASE}/conv1", True)
    try:
        frame = layer_rates_frame(LayerRates(decay_factor=0.5, layers_per_block=2), tree, 1e-3)
    finally:
        tree.set_frozen(f"{BASE}/conv1", False)
    assert list(frame.columns) == ["path", "multiplier", "learning_rate", "trainable"]
    assert frame.path.tolist() == [*tree.base_layer_paths(BASE), "transfer_model/classifier"]
    np.testing.assert_allclose(frame.learning_rate, 1e-3 * frame.multiplier)
    assert frame.set_index("path").loc[f"{BASE}/conv1", "multiplier"] == 0.25
    assert not frame.set_index("path").loc[f"{BASE}/conv1", "trainable"]
    assert frame.trainable.sum() == len(frame) - 1


def test_lora_adapters_take_their_layers_multiplier():
    model = small_model()
    model.get_layer("out").enable_lora(2)
    pairs = variable_multipliers(LayerRates({"small/out": 0.5}), LayerTree(model))
    # By identity: Keras's variable paths carry any name scope left open earlier in the process.
    by_id = {id(variable): multiplier for variable, multiplier in pairs}
    out, first = model.get_layer("out"), model.get_layer("first")
    assert by_id[id(out.lora_kernel_a)] == by_id[id(out.lora_kernel_b)] == 0.5
    assert by_id[id(out.bias)] == 0.5 and by_id[id(first.kernel)] == 1.0


def test_a_path_the_model_lacks_is_refused_with_the_paths_it_has(bundled_workspace):
    tree = bundled_workspace.tree
    with pytest.raises(ValueError, match=r"No layer at path 'transfer_model/conv9'"):
        layer_multipliers(LayerRates({"transfer_model/conv9": 0.5}), tree)
    with pytest.raises(ValueError, match="No layer at path 'nowhere'"):
        layer_multipliers(LayerRates(decay_factor=0.5, base_path="nowhere"), tree)


def test_a_bundled_model_trains_with_decay_and_keeps_its_proofs(bundled_workspace):
    model, tree = bundled_workspace.model, bundled_workspace.tree
    tree.set_frozen(f"{BASE}/conv1", True)
    try:
        rates = LayerRates({f"{BASE}/batch_norm3": 0.0}, decay_factor=0.5, layers_per_block=2)
        conv1 = [np.array(w.numpy(), copy=True) for w in tree.layer(f"{BASE}/conv1").weights]
        norm3 = tree.layer(f"{BASE}/batch_norm3")
        gamma_beta = [np.array(norm3.gamma.numpy()), np.array(norm3.beta.numpy())]
        moving_mean = np.array(norm3.moving_mean.numpy())
        dataset = bundled_workspace.dataset
        config = TrainingConfig(epochs=1, batch_size=64, layer_rates=rates)
        job = TrainingJob(model, dataset.x, dataset.y, config=config, tree=tree)
        progress = job.run()
        assert progress.state is JobState.FINISHED, progress.message
        assert job.verification().all_unchanged  # the frozen conv1
        assert same(conv1, [w.numpy() for w in tree.layer(f"{BASE}/conv1").weights])
        # Multiplier 0: gamma and beta never move; the moving statistics still do (in fit,
        # a trainable BatchNormalization layer updates them outside the optimizer).
        assert same(gamma_beta, [norm3.gamma.numpy(), norm3.beta.numpy()])
        assert not np.array_equal(moving_mean, norm3.moving_mean.numpy())
    finally:
        tree.set_frozen(f"{BASE}/conv1", False)


# ------------------------------------------------------------------ the setting itself
@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"multipliers": {"m/a": -1}}, ValueError, r"`multipliers\['m/a'\]` must be a number "),
        ({"multipliers": {"m/a": 101}}, ValueError, "from 0 to 100"),
        ({"multipliers": {"m/a": float("nan")}}, ValueError, "Received"),
        ({"multipliers": {"m/a": "0.5"}}, TypeError, "must be a number"),
        ({"multipliers": {"m/a": True}}, TypeError, "must be a number"),
        ({"multipliers": {"": 0.5}}, TypeError, "non-empty layer path"),
        ({"multipliers": {3: 0.5}}, TypeError, "non-empty layer path"),
        ({"multipliers": 0.5}, TypeError, "must map layer paths to numbers"),
        ({"multipliers": [("m/a", 1.0, 2.0)]}, TypeError, r"\(path, multiplier\) pairs"),
        ({"multipliers": [("m/a", 1.0), ("m/a", 0.5)]}, ValueError, "twice"),
        ({"decay_factor": 1.5}, ValueError, "`decay_factor` must be a number from 0 to 1"),
        ({"decay_factor": -0.1}, ValueError, "2.6"),
        ({"layers_per_block": 0}, ValueError, "`layers_per_block` must be a whole number"),
        ({"layers_per_block": 1.5}, TypeError, "layers_per_block=1.5"),
        ({"base_path": ""}, TypeError, "`base_path` must be a non-empty layer path"),
    ],
)
def test_bad_settings_are_refused_saying_what_was_received_and_expected(arguments, error, match):
    with pytest.raises(error, match=match):
        LayerRates(**arguments)


def test_too_many_paths_are_refused():
    with pytest.raises(ValueError, match="at most 10,000"):
        LayerRates({f"m/layer_{index}": 1.0 for index in range(10_001)})


def test_from_dict_refuses_what_is_not_a_setting():
    with pytest.raises(TypeError, match="must be a mapping"):
        LayerRates.from_dict([("m/a", 1.0)])
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['speed'\]"):
        LayerRates.from_dict({"speed": 2})


def test_the_setting_round_trips_through_json():
    rates = LayerRates({"m/b": 0.0, "m/a": 0.5}, decay_factor=0.385, layers_per_block=2)
    data = json.loads(json.dumps(rates.to_dict()))
    assert data == {
        "multipliers": {"m/a": 0.5, "m/b": 0.0},
        "decay_factor": 0.385,
        "layers_per_block": 2,
        "base_path": None,
    }
    assert LayerRates.from_dict(data) == rates
    assert LayerRates(data["multipliers"]) == LayerRates([("m/b", 0), ("m/a", 0.5)])
    assert hash(rates) == hash(LayerRates.from_dict(data))
    assert LayerRates.from_dict({}) == LayerRates()
    assert LayerRates().is_identity and LayerRates({"m/a": 1}, decay_factor=1).is_identity
    assert not rates.is_identity and rates.max_multiplier == 1.0
    assert (
        str(rates) == "Per-layer rates: decay x0.385 per block of 2 layers, 2 layer multiplier(s)"
    )
    assert MULTIPLIER_RANGE == (0.0, 100.0) and DECAY_FACTOR_RANGE == (0.0, 1.0)


def test_training_config_keeps_the_setting_optional_and_json_ready():
    old = TrainingConfig(epochs=2)
    assert "layer_rates" not in old.to_dict()  # a config without it reads as before
    assert TrainingConfig(**json.loads(json.dumps(old.to_dict()))) == old
    config = TrainingConfig(epochs=2, layer_rates=LayerRates({"m/a": 0.5}, decay_factor=0.5))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["layer_rates"]["multipliers"] == {"m/a": 0.5}
    restored = TrainingConfig(**data)  # how run_store and session_record read configs back
    assert restored == config and isinstance(restored.layer_rates, LayerRates)
    assert hash(restored) == hash(config)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"layer_rates": 0.5}, TypeError, "`layer_rates` must be None, a"),
        ({"layer_rates": {"multipliers": {"m/a": "x"}}}, TypeError, "`layer_rates` is invalid"),
        ({"layer_rates": {"speed": 1}}, ValueError, "`layer_rates` is invalid: Unknown key"),
        (
            {"learning_rate": 1.0, "layer_rates": LayerRates({"m/a": 20.0})},
            ValueError,
            "gives a layer the learning rate 20",
        ),
    ],
)
def test_training_config_refuses_bad_layer_rates(arguments, error, match):
    with pytest.raises(error, match=match):
        TrainingConfig(**arguments)


# ------------------------------------------------------------------ TrainingJob
def test_a_job_with_layer_rates_trains_both_paths_alike_and_ends_portable(tmp_path):
    report = job_report()
    check_job_report(report)
    # The model ends compiled with the plain optimizer, so its file loads in any Keras.
    keras.utils.set_random_seed(0)
    model = small_model()
    x, y = small_data(96)
    config = TrainingConfig(epochs=1, batch_size=32, layer_rates=LayerRates({"small/out": 0.5}))
    job = TrainingJob(model, x, y, config=config)
    job.run()
    assert type(model.optimizer) is keras.optimizers.Adam
    # ... holding the trained state (Adam's step count and moments), as before.
    assert int(model.optimizer.iterations.numpy()) == job.batches_per_epoch
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading for optimizer"
        loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam
    for saved, trained in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), trained.numpy())


def check_job_report(report):
    for name in ("plain", "cached", "without"):
        run = report[name]
        assert run["finished"], run["message"]
        assert run["all_unchanged"] and run["frozen_bitwise"]
        assert run["optimizer_after"] == "Adam"
    assert report["cached"]["cached"] and not report["plain"]["cached"]
    # The head model holds the original variables: the multipliers apply on the cached path.
    for plain, cached in zip(report["plain"]["out"], report["cached"]["out"], strict=True):
        np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=1e-6)
    with_rates, without = report["plain"]["out"], report["without"]["out"]
    differences = [
        np.abs(np.subtract(a, b)).max() for a, b in zip(with_rates, without, strict=True)
    ]
    assert max(differences) > 1e-4  # the multiplier changed the training


def test_a_job_uses_the_plain_optimizer_when_every_multiplier_is_one():
    model = small_model()
    x, y = small_data()
    for rates in (None, LayerRates(), LayerRates({"small": 1.0}, decay_factor=1.0)):
        job = TrainingJob(model, x, y, config=TrainingConfig(layer_rates=rates))
        assert type(job.build_optimizer()) is keras.optimizers.Adam
    job = TrainingJob(
        model,
        x,
        y,
        config=TrainingConfig(optimizer="rmsprop", layer_rates=LayerRates({"small/bn": 0})),
    )
    assert type(job.build_optimizer()).__name__ == "LayerRateRMSprop"


def test_a_job_refuses_a_layer_path_the_model_lacks_before_training():
    x, y = small_data()
    config = TrainingConfig(layer_rates=LayerRates({"small/conv9": 0.5}))
    with pytest.raises(ValueError, match="No layer at path 'small/conv9'"):
        TrainingJob(small_model(), x, y, config=config)


# ------------------------------------------------------------------ JAX
JAX_SCRIPT = """
import json

import keras

from tests.test_layer_rates import (
    OPTIMIZER_NAMES, all_scaling_reports, half_step_report, job_report, optimizer_properties,
)

report = {
    "backend": keras.backend.backend(),
    "properties": {name: optimizer_properties(name) for name in OPTIMIZER_NAMES},
    "scaling": all_scaling_reports(),
    "half": half_step_report(),
    "job": job_report(),
}
print("RESULT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def jax_report():
    skip_without_jax()
    report = run_on_backend(JAX_SCRIPT, "jax", timeout=240)
    assert report["backend"] == "jax"
    return report


def test_on_jax_multipliers_zero_and_one_against_the_plain_optimizer(jax_report):
    for name in OPTIMIZER_NAMES:
        assert all(jax_report["properties"][name].values()), (name, jax_report["properties"][name])


def test_on_jax_scaling_the_learning_rate_scales_the_update(jax_report):
    for case, report in jax_report["scaling"].items():
        assert report["vs_lr_scaling"] < 1e-6, case
        assert report["first_step_vs_update_scaling"] < 1e-4, case
        limit = 1e-2 if "weight_decay" in SCALING_CASES[case][1] else 1e-4
        assert report["vs_update_scaling"] < limit, case
    assert jax_report["half"]["sgd"] < 1e-6 and jax_report["half"]["adam"] < 1e-5


def test_on_jax_a_job_with_layer_rates_trains_both_paths_alike(jax_report):
    check_job_report(jax_report["job"])
