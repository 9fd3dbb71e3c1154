"""Tests for models/bundled.py and its committed artifact models/bundled_digits_cnn.keras."""

import keras
import numpy as np
import pytest

import models.bundled as bundled
from models.bundled import (
    BUNDLED_MODEL_PATH,
    FEATURE_EXTRACTOR_NAME,
    build_default_transfer_model,
    build_digits_cnn,
    load_bundled_base,
    load_bundled_metadata,
    load_bundled_model,
)
from models.datasets import load_bundled_dataset
from models.splits import train_validation_split


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
