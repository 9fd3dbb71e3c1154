"""Tests for the representation probe inside training jobs (`Job.representation()`)."""

import json

import keras
import numpy as np
import pytest

from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.job import JobState
from models.representation import REPRESENTATION_COLUMNS, RepresentationReport, linear_cka
from models.schedule import ScheduledJob, two_phase_schedule
from models.splits import train_validation_split
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend, skip_without_jax

BASE = "transfer_model/feature_extractor"


@pytest.fixture(scope="module")
def digits():
    data = load_bundled_dataset("digits_5_9")
    return data.x[:400], data.y[:400]


def block_outputs(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every direct layer's output of the base on `x`, computed independently of the probe."""
    base = model.get_layer("feature_extractor")
    names = [layer.name for layer in base.layers if layer.weights]
    probe = keras.Model(base.inputs, [base.get_layer(name).output for name in names])
    return dict(zip(names, [np.asarray(o) for o in probe.predict(x, verbose=0)], strict=True))


def test_a_run_compares_each_block_against_its_start_on_the_validation_split(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    for name in ("conv1", "batch_norm1", "batch_norm2", "batch_norm3"):
        tree.set_frozen(f"{BASE}/{name}", True)
    config = TrainingConfig(epochs=2, learning_rate=1e-2)
    _, _, x_validation, _ = train_validation_split(x, y, config.validation_fraction, config.seed)
    before = block_outputs(model, x_validation)
    job = TrainingJob(model, x, y, config=config, tree=tree)
    assert job.representation().frame.empty  # nothing compared before the first epoch ends
    assert job.run().state is JobState.FINISHED
    after = block_outputs(model, x_validation)

    report = job.representation()
    assert isinstance(report, RepresentationReport)
    assert report.held_out and report.epoch == 2 and report.num_examples == len(x_validation)
    assert "held-out validation" in report.note
    frame = report.frame.set_index("block_name")
    assert list(report.frame.columns) == list(REPRESENTATION_COLUMNS)
    # The frozen first block feeds on nothing trained: exactly 1.0, bitwise unchanged.
    assert frame.loc["conv1", "cka"] == 1.0 and frame.loc["conv1", "frozen_through"]
    assert np.array_equal(before["conv1"], after["conv1"])
    # Every other block changed, by what an independent CKA of its outputs says.
    for name in ("conv2", "batch_norm2", "conv3", "batch_norm3"):
        reference = linear_cka(before[name], after[name])
        assert frame.loc[name, "cka"] == pytest.approx(reference, rel=1e-9), name
        assert frame.loc[name, "cka"] < 1.0 and not frame.loc[name, "frozen_through"]
    # batch_norm2 is frozen itself, yet changed: the trained conv2 feeds it.
    assert frame.loc["batch_norm2", "frozen"] and not frame.loc["batch_norm2", "unchanged"]


def test_a_frozen_base_reads_exactly_one_on_the_cached_path(digits):
    x, y = digits
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(BASE, True)
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1), tree=tree)
    job.run()
    assert job.execution_plan.cached
    frame = job.representation().frame
    assert len(frame) == 6 and frame.cka.eq(1.0).all() and frame.frozen_through.all()


def test_a_schedule_compares_against_its_first_phase_start(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    job = ScheduledJob(
        model, x, y, tree, BASE, two_phase_schedule(1, 1e-2, 1, 1e-3), TrainingConfig()
    )
    assert job.representation().frame.empty
    job.run()
    report = job.representation()
    assert report.epoch == 2  # both phases: one comparison against the schedule's start
    assert (report.frame.cka < 1.0).all()  # phase 2 fine-tuned the whole base


def test_a_run_without_a_validation_split_says_it_probed_training_examples(digits):
    x, y = digits
    model = build_default_transfer_model()
    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=1, validation_fraction=0.0))
    job.run()
    report = job.representation()
    assert not report.held_out and "training (no validation split)" in report.note
    assert report.num_examples == 256  # capped at DEFAULT_MAX_EXAMPLES


def test_a_stop_in_the_first_epoch_still_compares(digits):
    x, y = digits
    model = build_default_transfer_model()

    class StopAfterTwoBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                job.cancel()

    job = TrainingJob(model, x, y, config=TrainingConfig(epochs=3))
    original = job._callbacks
    job._callbacks = lambda: [*original(), StopAfterTwoBatches()]
    assert job.run().state is JobState.CANCELLED
    report = job.representation()
    # Keras ends the interrupted epoch (on_epoch_end runs), so the comparison covers it.
    assert len(report.frame) == 6 and (report.frame.cka < 1.0).all()
    assert job.progress().history["loss"] and report.epoch == 1


def test_a_probe_that_cannot_run_never_fails_the_run():
    tf = pytest.importorskip("tensorflow")
    data = load_bundled_dataset("digits_5_9")
    dataset = tf.data.Dataset.from_tensor_slices((data.x[:64], data.y[:64])).batch(32)
    job = TrainingJob(build_default_transfer_model(), train_dataset=dataset)
    assert job.run().state is JobState.FINISHED
    report = job.representation()
    assert report.frame.empty and "tf.data" in report.note


JAX_SCRIPT = """
import json
import keras
from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.training import TrainingJob
from models.training_config import TrainingConfig
from models.tree import LayerTree

data = load_bundled_dataset("digits_5_9")
model = build_default_transfer_model()
tree = LayerTree(model)
for name in ("conv1", "batch_norm1"):
    tree.set_frozen("transfer_model/feature_extractor/" + name, True)
job = TrainingJob(model, data.x[:300], data.y[:300], config=TrainingConfig(epochs=1), tree=tree)
job.run()
frame = job.representation().frame
print("RESULT " + json.dumps({"cka": dict(zip(frame.block_name, frame.cka.tolist())),
                              "through": dict(zip(frame.block_name,
                                                  frame.frozen_through.tolist()))}))
"""


def test_frozen_blocks_read_exactly_one_on_jax():
    skip_without_jax()
    result = run_on_backend(JAX_SCRIPT, "jax")
    assert result["cka"]["conv1"] == 1.0 and result["cka"]["batch_norm1"] == 1.0
    assert result["through"]["batch_norm1"] and not result["through"]["conv2"]
    assert all(result["cka"][name] < 1.0 for name in ("conv2", "conv3", "batch_norm3"))
    json.dumps(result)
