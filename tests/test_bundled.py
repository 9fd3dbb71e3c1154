"""Tests for models/bundled.py, models/bundled_attention.py and their committed artifacts."""

import math

import keras
import numpy as np
import pytest

import models.bundled as bundled
import models.bundled_attention as bundled_attention
from models.bundled import (
    BUNDLED_INPUT_SHAPE,
    BUNDLED_MODEL_PATH,
    FEATURE_EXTRACTOR_NAME,
    build_default_transfer_model,
    build_digits_cnn,
    load_bundled_base,
    load_bundled_metadata,
    load_bundled_model,
)
from models.bundled_attention import (
    ATTENTION_MODEL_PATH,
    build_digits_attention,
    load_attention_base,
    load_attention_metadata,
    load_attention_model,
)
from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.splits import train_validation_split
from models.template import BUNDLED_ATTENTION_KEY
from models.transfer import build_transfer_model
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend, skip_without_jax


def count_parameters(weights):
    return int(sum(np.prod(weight.shape) for weight in weights))


@pytest.fixture(scope="module")
def metadata():
    return load_bundled_metadata()


def test_artifact_is_small_and_loads_offline_with_nested_feature_extractor():
    assert BUNDLED_MODEL_PATH.stat().st_size < 1_000_000
    model = load_bundled_model()

    assert model.name == "digits_cnn"
    assert [layer.name for layer in model.layers] == ["image", FEATURE_EXTRACTOR_NAME, "classifier"]
    feature_extractor = model.get_layer(FEATURE_EXTRACTOR_NAME)
    assert isinstance(feature_extractor, keras.Sequential)
    batch_norms = [
        layer
        for layer in feature_extractor.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) == 3
    assert tuple(feature_extractor.output.shape) == (None, 32)
    assert tuple(model.output.shape) == (None, 5)


def test_artifact_matches_the_architecture_in_code(metadata):
    loaded = load_bundled_model()
    fresh = build_digits_cnn()
    loaded_names = [layer.name for layer in loaded.get_layer(FEATURE_EXTRACTOR_NAME).layers]
    fresh_names = [layer.name for layer in fresh.get_layer(FEATURE_EXTRACTOR_NAME).layers]
    assert loaded_names == fresh_names
    assert count_parameters(loaded.trainable_weights) == metadata["trainable_params"]
    assert count_parameters(loaded.non_trainable_weights) == metadata["non_trainable_params"]
    assert count_parameters(fresh.weights) == count_parameters(loaded.weights)


def test_accuracy_on_pretraining_validation_split_matches_metadata(metadata):
    dataset = load_bundled_dataset("digits_0_4")
    _, _, x_validation, y_validation = train_validation_split(
        dataset.x,
        dataset.y,
        validation_fraction=metadata["validation_fraction"],
        seed=metadata["split_seed"],
    )
    assert len(y_validation) == metadata["validation_size"]

    predictions = np.argmax(load_bundled_model().predict(x_validation, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == y_validation))

    assert accuracy >= 0.9
    assert metadata["validation_accuracy"] >= 0.9
    # Allow one sample of floating-point disagreement across machines.
    assert abs(accuracy - metadata["validation_accuracy"]) <= 1 / len(y_validation) + 1e-9


def test_metadata_records_the_training_settings(metadata):
    assert metadata["seed"] == 0
    assert metadata["digits"] == [0, 1, 2, 3, 4]
    assert metadata["train_size"] + metadata["validation_size"] == 901
    assert 20 <= metadata["epochs"] <= 30
    assert metadata["keras_version"].startswith("3.")


def test_each_load_is_an_independent_model():
    first = load_bundled_model()
    second = load_bundled_model()
    assert first is not second
    first.get_layer(FEATURE_EXTRACTOR_NAME).trainable = False
    conv = first.get_layer(FEATURE_EXTRACTOR_NAME).get_layer("conv1")
    conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))

    other_conv = second.get_layer(FEATURE_EXTRACTOR_NAME).get_layer("conv1")
    assert second.get_layer(FEATURE_EXTRACTOR_NAME).trainable
    assert np.abs(other_conv.kernel.numpy()).sum() > 0


def test_bundled_base_is_the_pretrained_feature_extractor():
    base = load_bundled_base()
    reference = load_bundled_model().get_layer(FEATURE_EXTRACTOR_NAME)
    assert base.name == FEATURE_EXTRACTOR_NAME
    assert tuple(base.input.shape) == (None, 8, 8, 1)
    for weight, reference_weight in zip(base.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), reference_weight.numpy())


def test_default_transfer_model_nests_the_feature_extractor_once():
    model = build_default_transfer_model(num_classes=5)

    assert [layer.name for layer in model.layers] == [
        "image",
        FEATURE_EXTRACTOR_NAME,
        "head_dropout",
        "classifier",
    ]
    feature_extractor = model.get_layer(FEATURE_EXTRACTOR_NAME)
    assert isinstance(feature_extractor, keras.Sequential)
    assert len(feature_extractor.layers) == 11

    dataset = load_bundled_dataset("digits_5_9")
    probabilities = model.predict(dataset.x[:8], verbose=0)
    assert probabilities.shape == (8, 5)


def test_frozen_pretrained_features_transfer_to_digits_5_to_9():
    dataset = load_bundled_dataset("digits_5_9")
    x_train, y_train, x_validation, y_validation = train_validation_split(
        dataset.x, dataset.y, validation_fraction=0.2, seed=0
    )
    model = build_default_transfer_model(num_classes=5)
    model.get_layer(FEATURE_EXTRACTOR_NAME).trainable = False
    before = [weight.numpy().copy() for weight in model.get_layer(FEATURE_EXTRACTOR_NAME).weights]
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_validation, y_validation, verbose=0)

    assert accuracy > 0.4  # well above the 0.2 of guessing among 5 classes
    after = model.get_layer(FEATURE_EXTRACTOR_NAME).weights
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_missing_artifact_says_how_to_recreate_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "BUNDLED_MODEL_PATH", tmp_path / "missing.keras")
    monkeypatch.setattr(bundled, "BUNDLED_METADATA_PATH", tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="make bundled"):
        bundled.load_bundled_model()
    with pytest.raises(FileNotFoundError, match="make bundled"):
        bundled.load_bundled_metadata()


def test_default_transfer_model_saves_and_clones_for_per_session_copies(tmp_path):
    model = build_default_transfer_model(num_classes=5)
    images = load_bundled_dataset("digits_5_9").x[:6]
    expected = model.predict(images, verbose=0)

    path = tmp_path / "default_transfer.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-6)

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert clone.get_layer(FEATURE_EXTRACTOR_NAME) is not model.get_layer(FEATURE_EXTRACTOR_NAME)
    np.testing.assert_allclose(clone.predict(images, verbose=0), expected, rtol=1e-6)


# ---------------------------------------------------------------- the bundled attention model
ATTENTION_JAX_SCRIPT = """
import json

import keras
import numpy as np

from models.bundled_attention import load_attention_model, load_attention_metadata
from models.datasets import load_bundled_dataset
from models.splits import train_validation_split
from models.tree import LayerTree


def count(weights):
    return int(sum(np.prod(weight.shape) for weight in weights))


metadata = load_attention_metadata()
dataset = load_bundled_dataset("digits_0_4")
_, _, x_validation, y_validation = train_validation_split(
    dataset.x, dataset.y, validation_fraction=metadata["validation_fraction"],
    seed=metadata["split_seed"],
)
model = load_attention_model()
probabilities = model.predict(x_validation, verbose=0)
predictions = np.argmax(probabilities, axis=-1)
result = {
    "backend": keras.backend.backend(),
    "accuracy": float(np.mean(predictions == y_validation)),
    "counts": [count(model.trainable_weights), count(model.non_trainable_weights)],
}
attention = model.get_layer("feature_extractor").get_layer("block2_attention")
attention.query_dense.enable_lora(2)
attention.value_dense.enable_lora(2)
totals = LayerTree(model).totals()
result["lora_counts"] = [count(model.trainable_weights), count(model.non_trainable_weights)]
result["lora_tree_counts"] = [totals.trainable, totals.non_trainable]
result["lora_same_output"] = bool(
    np.allclose(model.predict(x_validation, verbose=0), probabilities, atol=1e-6)
)
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def attention_metadata():
    return load_attention_metadata()


def attention_validation_split(metadata):
    dataset = load_bundled_dataset("digits_0_4")
    return train_validation_split(
        dataset.x,
        dataset.y,
        validation_fraction=metadata["validation_fraction"],
        seed=metadata["split_seed"],
    )


def test_attention_artifact_loads_offline_with_a_nested_transformer_extractor():
    assert ATTENTION_MODEL_PATH.stat().st_size < 1_000_000
    model = load_attention_model()

    assert model.name == "digits_attention"
    assert [layer.name for layer in model.layers] == ["image", FEATURE_EXTRACTOR_NAME, "classifier"]
    extractor = model.get_layer(FEATURE_EXTRACTOR_NAME)
    assert isinstance(extractor, keras.Model)
    kinds = [type(layer).__name__ for layer in extractor.layers]
    assert kinds.count("MultiHeadAttention") == 2
    assert kinds.count("LayerNormalization") == 5
    assert kinds.count("Dense") == 4
    # Built-in layers only: safe mode needs no custom objects on any backend.
    for layer in extractor._flatten_layers(include_self=False, recursive=True):
        assert type(layer).__module__.startswith("keras.src."), type(layer)
    assert tuple(extractor.get_layer("patch_embedding").bias.shape) == (16, 32)  # per token
    assert tuple(extractor.output.shape) == (None, 32)
    assert tuple(model.output.shape) == (None, 5)


def test_attention_patches_are_the_2x2_blocks_in_reading_order():
    extractor = build_digits_attention().get_layer(FEATURE_EXTRACTOR_NAME)
    to_patches = keras.Model(extractor.input, extractor.get_layer("patches").output)
    image = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)

    patches = np.asarray(to_patches.predict(image, verbose=0))[0]

    # The independent reference: cut the 8x8 grid into 2x2 blocks with NumPy.
    expected = [
        image[0, r : r + 2, c : c + 2, 0].ravel() for r in (0, 2, 4, 6) for c in (0, 2, 4, 6)
    ]
    np.testing.assert_array_equal(patches, np.array(expected))


def test_attention_tree_counts_match_keras_and_the_metadata(attention_metadata):
    model = load_attention_model()
    tree = LayerTree(model)
    totals = tree.totals()
    assert totals.trainable == count_parameters(model.trainable_weights)
    assert totals.non_trainable == count_parameters(model.non_trainable_weights)
    assert totals.trainable == attention_metadata["trainable_params"] == model.count_params()
    assert count_parameters(build_digits_attention().weights) == model.count_params()
    assert 5_000 <= model.count_params() <= 20_000

    tree.set_frozen(f"{tree.root_path}/{FEATURE_EXTRACTOR_NAME}", True)
    frozen = tree.totals()
    assert frozen.trainable == count_parameters(model.trainable_weights) == 32 * 5 + 5
    assert frozen.non_trainable == count_parameters(model.non_trainable_weights)


def test_attention_accuracy_on_pretraining_validation_split_matches_metadata(
    attention_metadata,
):
    _, _, x_validation, y_validation = attention_validation_split(attention_metadata)
    assert len(y_validation) == attention_metadata["validation_size"] == 181
    assert attention_metadata["train_size"] + attention_metadata["validation_size"] == 901
    assert attention_metadata["seed"] == attention_metadata["split_seed"] == 0
    assert attention_metadata["digits"] == [0, 1, 2, 3, 4]

    predictions = np.argmax(load_attention_model().predict(x_validation, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == y_validation))

    assert attention_metadata["validation_accuracy"] >= 0.9
    # Allow one sample of floating-point disagreement across machines.
    assert abs(accuracy - attention_metadata["validation_accuracy"]) <= 1 / len(y_validation) + 1e-9


def test_enable_lora_on_attention_query_and_value_changes_counts_as_keras_says():
    model = load_attention_model()
    images = load_bundled_dataset("digits_5_9").x[:16]
    before = model.predict(images, verbose=0)
    trainable = count_parameters(model.trainable_weights)
    non_trainable = count_parameters(model.non_trainable_weights)
    attention = model.get_layer(FEATURE_EXTRACTOR_NAME).get_layer("block1_attention")
    rank = 2

    for layer in (attention.query_dense, attention.value_dense):
        assert isinstance(layer, keras.layers.EinsumDense)
        kernel_shape = tuple(layer.kernel.shape)
        layer.enable_lora(rank)
        # Keras's EinsumDense rule: a is kernel.shape[:-1] + (rank,), b is (rank, last axis);
        # the kernel itself stops training.
        assert tuple(layer.lora_kernel_a.shape) == (*kernel_shape[:-1], rank)
        assert tuple(layer.lora_kernel_b.shape) == (rank, kernel_shape[-1])
        (kernel,) = [weight for weight in layer.weights if weight.path.endswith("/kernel")]
        assert not kernel.trainable  # (layer.kernel is now the merged tensor, not a variable)
        added = math.prod(kernel_shape[:-1]) * rank + rank * kernel_shape[-1]
        trainable += added - math.prod(kernel_shape)
        non_trainable += math.prod(kernel_shape)
        assert count_parameters(model.trainable_weights) == trainable
        assert count_parameters(model.non_trainable_weights) == non_trainable

    totals = LayerTree(model).totals()
    assert (totals.trainable, totals.non_trainable) == (trainable, non_trainable)
    # b starts at zero: the adapted model computes what the pretrained one did.
    np.testing.assert_allclose(model.predict(images, verbose=0), before, atol=1e-6)


def test_attention_model_loads_and_adapts_on_jax(attention_metadata):
    skip_without_jax()
    result = run_on_backend(ATTENTION_JAX_SCRIPT, "jax", timeout=240)

    assert result["backend"] == "jax"
    recorded = attention_metadata["validation_accuracy"]
    assert abs(result["accuracy"] - recorded) <= 1 / attention_metadata["validation_size"] + 1e-9
    assert result["counts"] == [attention_metadata["trainable_params"], 0]
    # On JAX too: each 32x4x8 kernel stops training, a (32x4x2) + b (2x8) start.
    kernel, adapters = 32 * 4 * 8, 32 * 4 * 2 + 2 * 8
    expected = [attention_metadata["trainable_params"] - 2 * kernel + 2 * adapters, 2 * kernel]
    assert result["lora_counts"] == result["lora_tree_counts"] == expected
    assert result["lora_same_output"]


def test_attention_features_transfer_head_only_to_digits_5_to_9():
    keras.utils.set_random_seed(0)
    dataset = load_bundled_dataset("digits_5_9")
    x_train, y_train, x_validation, y_validation = train_validation_split(
        dataset.x, dataset.y, validation_fraction=0.2, seed=0
    )
    model = build_transfer_model(load_attention_base(), BUNDLED_INPUT_SHAPE, 5, dropout=0.2)
    base = model.get_layer(FEATURE_EXTRACTOR_NAME)
    base.trainable = False
    before = [weight.numpy().copy() for weight in base.weights]
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_validation, y_validation, verbose=0)

    assert accuracy > 0.5  # measured 0.69 (seed 0); guessing among 5 classes gives 0.2
    for old, new in zip(before, base.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_attention_template_instantiates_the_pretrained_extractor():
    template = bundled_template(BUNDLED_ATTENTION_KEY)
    reference = load_attention_base()
    copy = template.instantiate()
    images = load_bundled_dataset("digits_5_9").x[:8]

    assert template.key == BUNDLED_ATTENTION_KEY and template.pretrained
    assert template.class_name == "Functional" and template.input_shape == (8, 8, 1)
    assert template.num_params == reference.count_params()
    np.testing.assert_allclose(
        copy.predict(images, verbose=0), reference.predict(images, verbose=0), atol=1e-6
    )


def test_missing_attention_artifact_says_how_to_recreate_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled_attention, "ATTENTION_MODEL_PATH", tmp_path / "missing.keras")
    monkeypatch.setattr(bundled_attention, "ATTENTION_METADATA_PATH", tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="make bundled") as raised:
        bundled_attention.load_attention_model()
    assert "missing.keras" in str(raised.value) and "attention" in str(raised.value)
    with pytest.raises(FileNotFoundError, match="make bundled"):
        bundled_attention.load_attention_metadata()
