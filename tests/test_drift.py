"""Tests for models.drift: drift figures against NumPy, frozen layers flat, bitwise verification."""

import keras
import numpy as np
import pytest

from models.drift import DRIFT_COLUMNS, DriftRecorder, verify_frozen_unchanged
from models.tree import LayerTree


def tiny_model() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(4, name="middle"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="tiny",
    )


def tiny_data(num_samples: int = 64):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(num_samples, 6)).astype("float32") * 3 + 1
    y = generator.integers(0, 3, size=num_samples)
    return x, y


def fit(model, recorder, epochs=2, batch_size=16):
    x, y = tiny_data()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[recorder])


def expected_drift(start: list[np.ndarray], end: list[np.ndarray]) -> tuple[float, float]:
    """Independent NumPy reference of the documented definitions."""
    delta = np.concatenate(
        [(e.astype(np.float64) - s).ravel() for s, e in zip(start, end, strict=True)]
    )
    start_norm = np.sqrt(sum(np.sum(np.square(s.astype(np.float64))) for s in start))
    change = np.linalg.norm(delta)
    relative = change / start_norm if start_norm > 0 else change
    return relative, float(np.max(np.abs(delta)))


def test_drift_equals_numpy_computation_on_hand_captured_weights():
    model = tiny_model()
    tree = LayerTree(model)
    start = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in model.layers}
    recorder = DriftRecorder(tree)
    fit(model, recorder)
    final = recorder.final_frame()
    for layer in model.layers:
        weights = [w.numpy() for w in layer.trainable_weights]
        kinds = {"weights": (slice(0, 2),)}
        if layer.name == "bn":
            kinds["state"] = (slice(2, 4),)
        for kind, (part,) in kinds.items():
            row = final[(final.layer_path == f"tiny/{layer.name}") & (final.kind == kind)].iloc[0]
            end = [w.numpy() for w in layer.weights][part]
            relative, maximum = expected_drift(start[layer.name][part], end)
            assert row.relative_change == pytest.approx(relative, rel=1e-5, abs=1e-7)
            assert row.max_abs_change == pytest.approx(maximum, rel=1e-5, abs=1e-7)
            assert not row.unchanged
        assert weights  # every layer here trains


def test_zero_start_norm_reports_the_absolute_change():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="zeros", name="zero")],
        name="m",
    )
    recorder = DriftRecorder(LayerTree(model))
    x = np.ones((8, 3), "float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.ones((8, 2), "float32"), epochs=1, verbose=0, callbacks=[recorder])
    row = recorder.final_frame().iloc[0]
    change = np.sqrt(sum(np.sum(np.square(w.numpy().astype(np.float64))) for w in model.weights))
    assert row.relative_change == pytest.approx(change, rel=1e-5)
    assert row.relative_change > 0


def test_frozen_layers_report_exactly_zero_at_every_epoch_and_trainable_ones_every_batch():
    model = tiny_model()
    tree = LayerTree(model)
    tree.set_frozen("tiny/first", True)
    tree.set_frozen("tiny/bn", True)
    recorder = DriftRecorder(tree, every_n_batches=1)
    fit(model, recorder, epochs=2)
    frame = recorder.frame()
    assert list(frame.columns) == list(DRIFT_COLUMNS)
    frozen = frame[frame.layer_path.isin(["tiny/first", "tiny/bn"])]
    assert (frozen.relative_change == 0).all() and (frozen.max_abs_change == 0).all()
    assert frozen.unchanged.all() and frozen.frozen.all()
    moving = frame[(frame.layer_path == "tiny/middle") & (frame.step > 0)]
    assert (moving.relative_change > 0).all() and not moving.frozen.any()
    # One record at the start plus one per batch: 2 epochs x 4 batches. Batch records measure
    # the layers that train; frozen ones are measured at the start and at each epoch end.
    assert sorted(frame.step.unique()) == list(range(0, 9))
    assert sorted(moving.step.unique()) == list(range(1, 9))
    for path in ("tiny/first", "tiny/bn"):
        assert sorted(frozen[frozen.layer_path == path].step.unique()) == [0, 4, 8]
    assert frame.groupby("step").epoch.first().tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    result = verify_frozen_unchanged(recorder)
    assert result.all_unchanged
    assert [check.path for check in result.checks] == ["tiny/first", "tiny/bn"]
    assert result.message() == "All 2 frozen layers are bitwise unchanged."


def test_trainable_batch_norm_moves_its_state_and_frozen_one_does_not():
    trainable_model = tiny_model()
    recorder = DriftRecorder(LayerTree(trainable_model))
    fit(trainable_model, recorder)
    state = recorder.final_frame().query("layer_path == 'tiny/bn' and kind == 'state'").iloc[0]
    assert state.relative_change > 0 and not state.unchanged

    frozen_model = tiny_model()
    tree = LayerTree(frozen_model)
    tree.set_frozen("tiny/bn", True)
    recorder = DriftRecorder(tree)
    fit(frozen_model, recorder)
    state = recorder.final_frame().query("layer_path == 'tiny/bn' and kind == 'state'").iloc[0]
    assert state.relative_change == 0 and state.max_abs_change == 0 and state.unchanged


def test_verification_names_a_frozen_layer_that_changed():
    model = tiny_model()
    tree = LayerTree(model)
    tree.set_frozen("tiny/first", True)
    tree.set_frozen("tiny/bn", True)
    recorder = DriftRecorder(tree)
    fit(model, recorder, epochs=1)
    # Something outside the optimizer edits frozen values: the proof must catch it.
    kernel = model.get_layer("first").kernel
    kernel.assign(kernel.numpy() + 1e-7)
    moving_mean = model.get_layer("bn").moving_mean
    moving_mean.assign(moving_mean.numpy() * 2 + 1)
    result = recorder.verify()
    assert not result.all_unchanged
    assert result.changed_paths == ("tiny/first", "tiny/bn")
    assert "tiny/first (weights)" in result.message()
    assert "tiny/bn (state)" in result.message()


def test_verification_is_bitwise_negative_zero_counts_as_a_change():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2, bias_initializer="zeros", name="d")], name="m"
    )
    tree = LayerTree(model)
    tree.freeze_all()
    recorder = DriftRecorder(tree)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 2)), epochs=1, verbose=0, callbacks=[recorder])
    assert recorder.verify().all_unchanged
    model.get_layer("d").bias.assign(np.array([-0.0, 0.0], "float32"))
    assert recorder.verify().changed_paths == ("m/d",)


def test_one_starting_copy_whatever_the_number_of_epochs_and_fits():
    model = tiny_model()
    recorder = DriftRecorder(LayerTree(model))
    fit(model, recorder, epochs=1)
    starts = [id(value) for group in recorder._groups for value in group.start_values]
    fit(model, recorder, epochs=3)
    assert [id(value) for group in recorder._groups for value in group.start_values] == starts
    assert len(starts) == len(model.weights)
    # Steps keep counting across fits; drift stays relative to the very first start.
    frame = recorder.frame()
    assert frame.epoch.max() == 4 and frame.step.max() == 16


def test_verify_before_training_is_a_clear_error():
    with pytest.raises(ValueError, match="has not seen training start"):
        DriftRecorder(LayerTree(tiny_model())).verify()
    with pytest.raises(ValueError, match="every_n_batches"):
        DriftRecorder(LayerTree(tiny_model()), every_n_batches=0)


def test_no_frozen_layers_says_so():
    model = tiny_model()
    recorder = DriftRecorder(LayerTree(model))
    fit(model, recorder, epochs=1)
    result = recorder.verify()
    assert result.num_checked == 0 and result.all_unchanged
    assert "nothing to verify" in result.message()


def test_a_change_too_small_to_survive_squaring_still_counts_and_nan_counts():
    from models.drift import _unchanged

    start = np.array([1e-30, 2.0], "float32")
    moved = np.array([2e-30, 2.0], "float32")
    squared = np.sum(np.square(moved - start))
    maximum = np.max(np.abs(moved - start))
    assert squared == 0 and maximum > 0  # float32 underflow: the square alone would miss it
    assert not _unchanged(np.array([squared]), np.array([maximum]))[0]
    assert not _unchanged(np.array([np.nan]), np.array([0.0]))[0]  # a maximum that dropped NaN
    assert _unchanged(np.array([0.0]), np.array([0.0]))[0]


def test_a_layer_unfrozen_in_a_later_fit_gets_batch_records_from_then_on():
    model = tiny_model()
    tree = LayerTree(model)
    tree.set_frozen("tiny/first", True)
    recorder = DriftRecorder(tree, every_n_batches=1)
    fit(model, recorder, epochs=1)
    tree.set_frozen("tiny/first", False)
    fit(model, recorder, epochs=1)  # recompiles, as a schedule's next phase does
    first = recorder.frame().query("layer_path == 'tiny/first'")
    assert sorted(first.step.unique()) == [0, 4, 5, 6, 7, 8]
    assert first[first.step <= 4].frozen.all() and not first[first.step > 4].frozen.any()
    assert (first[first.step > 4].relative_change > 0).all()
    assert recorder.verify().num_checked == 0  # not frozen throughout: nothing to prove


def test_batch_records_of_a_fully_frozen_model_add_no_rows():
    model = tiny_model()
    tree = LayerTree(model)
    tree.freeze_all()
    recorder = DriftRecorder(tree, every_n_batches=1)
    fit(model, recorder, epochs=2)
    frame = recorder.frame()
    assert sorted(frame.step.unique()) == [0, 4, 8]
    assert frame.unchanged.all() and recorder.verify().all_unchanged


def test_a_batch_record_equals_numpy_on_weights_captured_at_that_batch():
    model = tiny_model()
    tree = LayerTree(model)
    tree.set_frozen("tiny/first", True)
    start = [w.numpy().copy() for w in model.get_layer("middle").weights]
    captured = {}

    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # the second step of the first epoch: step 2
                captured["middle"] = [w.numpy().copy() for w in model.get_layer("middle").weights]

    recorder = DriftRecorder(tree, every_n_batches=2)
    x, y = tiny_data()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder, Capture()])
    row = recorder.frame().query("layer_path == 'tiny/middle' and step == 2").iloc[0]
    relative, maximum = expected_drift(start, captured["middle"])
    assert row.relative_change == pytest.approx(relative, rel=1e-5)
    assert row.max_abs_change == pytest.approx(maximum, rel=1e-5)
    assert not row.unchanged and not row.frozen
