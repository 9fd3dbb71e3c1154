"""Tests for models.prefix_cache: the cached path trains exactly like plain fit, or falls back."""

import keras
import numpy as np
import pytest

from models.bundled import build_default_transfer_model
from models.prefix_cache import call_chain, plan_prefix_cache
from models.training import JobState, TrainingConfig, TrainingJob
from models.transfer import build_transfer_model
from models.tree import LayerTree

BASE = "transfer_model/feature_extractor"


def digits_like(num_samples: int = 150, num_classes: int = 5):
    generator = np.random.default_rng(3)
    y = np.arange(num_samples) % num_classes
    x = generator.uniform(size=(num_samples, 8, 8, 1)).astype("float32")
    x[np.arange(num_samples), y, y, 0] += 2.0  # learnable: a bright pixel per class
    return x, y


def conv_bn_base() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ],
        name="small_base",
    )


def default_model():
    keras.utils.set_random_seed(7)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(BASE, True)
    return model, tree


def conv_bn_model():
    keras.utils.set_random_seed(7)
    model = build_transfer_model(conv_bn_base(), (8, 8, 1), 5, dropout=0.3, name="conv_model")
    tree = LayerTree(model)
    tree.set_frozen("conv_model/small_base", True)
    return model, tree


def train(builder, use_prefix_cache, epochs=3, drift_every_batches=None):
    model, tree = builder()
    x, y = digits_like()
    config = TrainingConfig(
        epochs=epochs, batch_size=16, seed=5, drift_every_batches=drift_every_batches
    )
    job = TrainingJob(model, x, y, config=config, tree=tree, use_prefix_cache=use_prefix_cache)
    progress = job.run()
    assert progress.state is JobState.FINISHED, progress.message
    return model, job, x


@pytest.mark.parametrize("builder", [default_model, conv_bn_model])
def test_cached_path_trains_to_the_same_weights_as_plain_fit(builder):
    plain_model, plain_job, x = train(builder, use_prefix_cache=False, drift_every_batches=3)
    cached_model, cached_job, _ = train(builder, use_prefix_cache=None, drift_every_batches=3)
    assert not plain_job.execution_plan.cached
    plan = cached_job.execution_plan
    assert plan.cached, plan.reason
    assert plan.precompute_seconds is not None and plan.precompute_seconds >= 0
    # Same seed, same shuffling, same dropout masks: equal up to float round-off.
    for plain, cached in zip(plain_model.weights, cached_model.weights, strict=True):
        np.testing.assert_allclose(cached.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)
    plain_history = plain_job.progress().history
    cached_history = cached_job.progress().history
    assert set(cached_history) == set(plain_history)
    for key, values in plain_history.items():
        np.testing.assert_allclose(cached_history[key], values, rtol=1e-4, atol=1e-5)
    # Drift is recorded for the whole model, frozen prefix included, and verified bitwise.
    plain_drift, cached_drift = plain_job.drift_frame(), cached_job.drift_frame()
    assert len(cached_drift) == len(plain_drift)
    assert cached_drift.layer_path.tolist() == plain_drift.layer_path.tolist()
    assert cached_drift.step.tolist() == plain_drift.step.tolist()
    frozen = cached_drift[cached_drift.frozen]
    assert not frozen.empty and frozen.unchanged.all() and (frozen.relative_change == 0).all()
    np.testing.assert_allclose(
        cached_drift.relative_change, plain_drift.relative_change, rtol=1e-4, atol=1e-6
    )
    verification = cached_job.verification()
    assert verification.all_unchanged
    assert verification.checks == plain_job.verification().checks
    # The original model is usable as-is: raw images in, the trained head's outputs out.
    np.testing.assert_allclose(
        cached_model.predict(x[:20], verbose=0),
        plain_model.predict(x[:20], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_plan_is_readable_before_run_and_names_prefix_and_head():
    model, tree = default_model()
    x, y = digits_like()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
    plan = job.execution_plan
    assert plan.cached and plan.precompute_seconds is None
    assert plan.prefix_paths == (BASE,)
    assert plan.head_paths == ("transfer_model/head_dropout", "transfer_model/classifier")
    assert plan.feature_shape == (32,)
    assert "Cached frozen prefix" in plan.message()
    job.run()
    assert job.execution_plan.feature_shape == (32,)
    assert "computed once" in job.execution_plan.message()


def test_longest_prefix_includes_weightless_layers_before_the_head():
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv")], name="base"
    )
    model = build_transfer_model(base, (8, 8, 1), 3, dropout=0.2)
    tree = LayerTree(model)
    tree.set_frozen("transfer_model/base", True)
    plan = plan_prefix_cache(model, tree)
    assert plan.cached, plan.reason
    # Resizing, channel conversion, the base and the pooling are all computed once.
    assert plan.prefix_paths == tuple(
        f"transfer_model/{name}" for name in ("resize", "to_rgb", "base", "head_pooling")
    )
    assert plan.feature_shape == (4,)


def sequential_with(*layers) -> keras.Sequential:
    return keras.Sequential([keras.Input((6,)), *layers], name="seq")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            lambda: _partly_frozen_base(),
            "'transfer_model/feature_extractor' is partly trainable "
            "('transfer_model/feature_extractor/conv3' trains)",
        ),
        (
            lambda: _frozen_from(
                sequential_with(
                    keras.layers.Dropout(0.5, name="drop"),
                    keras.layers.Dense(4, name="frozen"),
                    keras.layers.Dense(3, name="head"),
                ),
                "seq/frozen",
            ),
            "Dropout 'drop'",
        ),
        (lambda: _flip_before_frozen_base(), "RandomFlip 'flip'"),
        (lambda: _all_frozen(), "No layer trains"),
        (lambda: _residual(), "not a simple chain"),
        (
            lambda: _frozen_from(
                sequential_with(
                    keras.layers.Dense(4, name="first"), keras.layers.Dense(3, name="second")
                ),
                None,
            ),
            "Nothing frozen comes before",
        ),
    ],
    ids=[
        "unfrozen_layer_in_base",
        "dropout_first",
        "random_flip_first",
        "nothing",
        "branch",
        "none",
    ],
)
def test_invalid_cases_fall_back_to_plain_fit_with_the_reason(build, expected):
    model, tree = build()
    plan = plan_prefix_cache(model, tree)
    assert not plan.cached
    assert expected in plan.reason


def _frozen_from(model, path):
    tree = LayerTree(model)
    if path is not None:
        tree.set_frozen(path, True)
    return model, tree


def _partly_frozen_base():
    model, tree = default_model()
    tree.set_frozen(f"{BASE}/conv3", False)
    return model, tree


def _flip_before_frozen_base():
    base = conv_bn_base()
    inputs = keras.Input((8, 8, 1))
    flipped = keras.layers.RandomFlip(name="flip")(inputs)
    outputs = keras.layers.Dense(3, name="head")(base(flipped))
    model = keras.Model(inputs, outputs, name="flip_model")
    return _frozen_from(model, "flip_model/small_base")


def _all_frozen():
    model, tree = default_model()
    tree.freeze_all()
    return model, tree


def _residual():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(6, name="frozen")(inputs)
    added = keras.layers.Add(name="add")([inputs, hidden])
    outputs = keras.layers.Dense(3, name="head")(added)
    return _frozen_from(keras.Model(inputs, outputs, name="residual"), "residual/frozen")


def test_a_frozen_sequential_front_is_cached_and_trains_like_plain_fit():
    def build():
        keras.utils.set_random_seed(2)
        model = sequential_with(
            keras.layers.Dense(8, activation="relu", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        )
        tree = LayerTree(model)
        tree.set_frozen("seq/first", True)
        tree.set_frozen("seq/bn", True)
        return model, tree

    generator = np.random.default_rng(0)
    x = generator.normal(size=(90, 6)).astype("float32")
    y = np.arange(90) % 3
    results = []
    for use in (False, None):
        model, tree = build()
        job = TrainingJob(
            model, x, y, config=TrainingConfig(epochs=2), tree=tree, use_prefix_cache=use
        )
        assert job.run().state is JobState.FINISHED
        results.append((model, job))
    assert results[1][1].execution_plan.prefix_paths == ("seq/first", "seq/bn")
    for plain, cached in zip(results[0][0].weights, results[1][0].weights, strict=True):
        np.testing.assert_allclose(cached.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)


def test_caching_off_tf_data_and_forced_cache_are_explained():
    import tensorflow as tf

    model, tree = default_model()
    x, y = digits_like()
    off = TrainingJob(model, x, y, tree=tree, use_prefix_cache=False).execution_plan
    assert not off.cached and "turned off" in off.reason
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    streamed = TrainingJob(model, train_dataset=dataset, tree=tree).execution_plan
    assert not streamed.cached and "tf.data" in streamed.reason
    tree.set_frozen(BASE, False)
    with pytest.raises(ValueError, match="cannot be cached"):
        TrainingJob(model, x, y, tree=tree, use_prefix_cache=True)
    with pytest.raises(TypeError, match="use_prefix_cache"):
        TrainingJob(model, x, y, tree=tree, use_prefix_cache="yes")


def test_call_chain_of_the_default_model():
    model, _ = default_model()
    links = call_chain(model)
    assert [link.layer.name for link in links] == [
        "feature_extractor",
        "head_dropout",
        "classifier",
    ]


def test_cancel_while_computing_features_cancels_the_job():
    model, tree = default_model()
    x, y = digits_like()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=2), tree=tree)
    job.cancel()
    progress = job.run()
    assert progress.state is JobState.CANCELLED
    assert job.drift_frame().empty
