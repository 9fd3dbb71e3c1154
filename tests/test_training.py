"""Tests for models.training: synchronous and background runs, cancel, errors, recompiling."""

import time

import keras
import numpy as np
import pytest

from models.training import JobState, TrainingConfig, TrainingJob
from models.tree import LayerTree


def small_model(num_classes: int = 3) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(num_classes, activation="softmax", name="out"),
        ],
        name="small",
    )


def data(num_samples: int = 120, num_classes: int = 3):
    generator = np.random.default_rng(1)
    y = np.arange(num_samples) % num_classes
    x = generator.normal(size=(num_samples, 6)).astype("float32") + y[:, None]
    return x, y


def weights_of(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_synchronous_run_trains_and_keeps_a_frozen_layer_bitwise_equal():
    model = small_model()
    tree = LayerTree(model)
    tree.set_frozen("small/first", True)
    before = weights_of(model.get_layer("first"))
    x, y = data()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=3, batch_size=16), tree=tree)
    progress = job.run()
    assert progress.state is JobState.FINISHED, progress.message
    assert progress.epoch == 3 and progress.fraction_done == 1.0
    assert set(progress.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(progress.history["loss"]) == 3
    assert job.num_train_samples == 96 and job.num_validation_samples == 24
    assert len(progress.batch_history["loss"]) == 3 * 6
    for old, new in zip(before, weights_of(model.get_layer("first")), strict=True):
        np.testing.assert_array_equal(old, new)
    assert job.verification().all_unchanged
    assert job.frozen_paths == frozenset({"small/first"})
    assert job.history_frame().epoch.tolist() == [1, 2, 3]
    assert not job.drift_frame().empty


def test_background_run_reports_progress_and_finishes():
    x, y = data()
    job = TrainingJob(small_model(), x, y, config=TrainingConfig(epochs=2, batch_size=8))
    assert job.progress().state is JobState.PENDING
    job.start()
    progress = job.wait(timeout=120)
    assert progress.state is JobState.FINISHED, progress.message
    assert progress.elapsed_seconds > 0
    with pytest.raises(RuntimeError, match="already started"):
        job.start()


def test_cancel_mid_run_keeps_the_model_usable_and_results_so_far():
    x, y = data(num_samples=600)
    model = small_model()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=200, batch_size=4))
    job.start()
    deadline = time.monotonic() + 60
    while job.progress().epoch < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    job.cancel()
    progress = job.wait(timeout=60)
    assert progress.state is JobState.CANCELLED
    assert 1 <= progress.epoch < 200
    assert "Stopped by request" in progress.message
    assert len(progress.history["loss"]) == progress.epoch
    drift = job.drift_frame()
    assert drift.epoch.max() >= progress.epoch
    assert model.predict(x[:2], verbose=0).shape == (2, 3)


def test_nan_loss_ends_the_job_with_a_clear_message():
    x, y = data()
    x[40:] = 1e38  # finite, but the logits overflow: the loss becomes NaN mid-run
    job = TrainingJob(
        small_model(),
        x,
        y,
        config=TrainingConfig(epochs=5, batch_size=16, validation_fraction=0, learning_rate=0.5),
    )
    job.start()
    progress = job.wait(timeout=60)
    assert progress.state is JobState.FAILED
    assert "loss became nan" in progress.message.lower()
    assert "Lower the learning rate" in progress.message
    assert progress.epoch < 5


def test_error_inside_fit_fails_the_job_instead_of_killing_the_thread():
    import tensorflow as tf

    wrong = tf.data.Dataset.from_tensor_slices(
        (np.zeros((8, 5), "float32"), np.zeros(8, "int64"))
    ).batch(4)
    job = TrainingJob(small_model(), train_dataset=wrong, config=TrainingConfig(epochs=1))
    job.start()
    progress = job.wait(timeout=60)
    assert progress.state is JobState.FAILED
    assert progress.message.startswith("Training stopped with an error")


@pytest.mark.parametrize(
    ("features", "labels", "reason", "hint"),
    [
        (
            np.zeros((8, 5), "float32"),
            np.zeros(8, "int64"),
            "is incompatible with the layer: expected axis -1 of input shape to have value 6, "
            "but received input with shape (None, 5).",
            "The data's shape does not fit the model",
        ),
        (
            np.zeros((8, 6), "float32"),
            np.zeros((8, 3), "int64"),
            "Argument `output` must have rank (ndim) `target.ndim - 1`.",
            "The labels do not fit the model's output",
        ),
        (
            np.zeros((8, 6), "float32"),
            np.full(8, 7, "int64"),
            "Received a label value of 7 which is outside the valid range of [0, 3).",
            "Labels must be class numbers from 0",
        ),
        (np.full((8, 6), "a"), np.zeros(8, "int64"), "Cast string to float is not supported.", ""),
    ],
    ids=["features", "label_shape", "label_value", "strings"],
)
def test_a_failed_run_shows_the_real_reason_and_calls_only_shape_errors_shape_errors(
    features, labels, reason, hint
):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)
    job = TrainingJob(small_model(), train_dataset=dataset, config=TrainingConfig(epochs=1))
    progress = job.run()
    assert progress.state is JobState.FAILED
    message = progress.message
    # The reason itself, unwrapped from Keras's "Exception encountered when calling ..." and
    # TensorFlow's "Graph execution error: <traceback>", followed by the hint, if any.
    assert reason in message
    if hint:
        assert message.index(reason) < message.index(hint)
    else:
        assert message.endswith(f"): {reason}")
    assert "Exception encountered" not in message and "Graph execution error" not in message
    assert ("shape does not fit" in message) == (hint.startswith("The data's shape"))


def test_an_error_that_only_mentions_shapes_is_not_called_a_shape_mismatch():
    # Keras lists the inputs' shapes under "Arguments received by ..." for every error raised
    # in a layer; here the real error is a layer name TensorFlow refuses.
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, activation="softmax", name="odd names")],
        name="small",
    )
    x, y = data()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1, batch_size=16))
    progress = job.run()
    assert progress.state is JobState.FAILED
    assert progress.message.startswith(
        "Training stopped with an error (ValueError): 'odd names' is not a valid scope name."
    )
    assert "rename the layer" in progress.message
    assert "shape" not in progress.message


def test_tf_data_input_trains():
    import tensorflow as tf

    x, y = data()
    train = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(16)
    validation = tf.data.Dataset.from_tensor_slices((x[96:], y[96:])).batch(16)
    job = TrainingJob(
        small_model(),
        train_dataset=train,
        validation_dataset=validation,
        config=TrainingConfig(epochs=2),
    )
    assert job.batches_per_epoch == 6
    progress = job.run()
    assert progress.state is JobState.FINISHED, progress.message
    assert "val_loss" in progress.history


def test_freeze_change_then_train_recompiles_so_the_frozen_layer_stays_put():
    x, y = data()
    model = small_model()
    tree = LayerTree(model)
    assert TrainingJob(model, x, y, config=TrainingConfig(epochs=1), tree=tree).run().state is (
        JobState.FINISHED
    )
    tree.set_frozen("small/first", True)
    before = weights_of(model.get_layer("first"))
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
    assert job.run().state is JobState.FINISHED
    for old, new in zip(before, weights_of(model.get_layer("first")), strict=True):
        np.testing.assert_array_equal(old, new)
    assert job.verification().all_unchanged


def test_same_seed_gives_identical_weights():
    x, y = data()
    results = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        model = small_model()
        TrainingJob(model, x, y, config=TrainingConfig(epochs=2, seed=3)).run()
        results.append([w.numpy() for w in model.weights])
    for first, second in zip(*results, strict=True):
        np.testing.assert_array_equal(first, second)


def test_bad_data_and_settings_are_refused_with_clear_messages():
    x, y = data()
    model = small_model()
    with pytest.raises(ValueError, match=r"expects inputs of shape \(6,\).*has \(4,\)"):
        TrainingJob(model, x[:, :4], y)
    with pytest.raises(ValueError, match="Labels range from 0 to 3 but the model has 3 outputs"):
        TrainingJob(model, x, np.where(y == 2, 3, y))
    with pytest.raises(ValueError, match="integers"):
        TrainingJob(model, x, y.astype("float32"))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        TrainingJob(model, bad, y)
    with pytest.raises(ValueError, match="No training data"):
        TrainingJob(model)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingConfig(learning_rate=0)
    with pytest.raises(ValueError, match="Unknown optimizer 'adamax'"):
        TrainingConfig(optimizer="adamax")
    with pytest.raises(TypeError, match="epochs"):
        TrainingConfig(epochs=1.5)
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainingConfig(validation_fraction=0.95)


def test_training_slots_queue_jobs_and_show_their_position():
    from models.training import TrainingSlots

    slots = TrainingSlots(limit=1)
    x, y = data(num_samples=300)
    first = TrainingJob(
        small_model(), x, y, config=TrainingConfig(epochs=30, batch_size=4), slots=slots
    )
    second = TrainingJob(small_model(), x, y, config=TrainingConfig(epochs=1), slots=slots)
    first.start()
    deadline = time.monotonic() + 60
    while first.progress().state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.02)
    second.start()
    while "Waiting for a free training slot" not in second.progress().message:
        assert time.monotonic() < deadline, second.progress().message
        time.sleep(0.02)
    assert second.progress().state is JobState.PENDING
    assert slots.running == 1 and slots.waiting == 1
    first.cancel()
    assert second.wait(120).state is JobState.FINISHED
    assert first.wait(60).state is JobState.CANCELLED
    assert slots.running == 0 and slots.waiting == 0


def test_a_job_cancelled_while_queued_never_trains():
    from models.training import TrainingSlots

    slots = TrainingSlots(limit=1)
    x, y = data()
    blocker = TrainingJob(
        small_model(), x, y, config=TrainingConfig(epochs=200, batch_size=4), slots=slots
    )
    queued = TrainingJob(small_model(), x, y, config=TrainingConfig(epochs=1), slots=slots)
    blocker.start()
    queued.start()
    time.sleep(0.5)
    queued.cancel()
    progress = queued.wait(30)
    assert (
        progress.state is JobState.CANCELLED and "waiting for a training slot" in progress.message
    )
    assert progress.history == {}
    blocker.cancel()
    blocker.wait(60)
    with pytest.raises(ValueError, match="whole number >= 1"):
        TrainingSlots(limit=0)
