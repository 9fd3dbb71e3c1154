"""Gradient and update diagnostics (models.diagnostics): the numbers against an independent
reference (a GradientTape / jax.grad step done by hand), bitwise-neutral training, the job."""

import math

import keras
import numpy as np
import pytest

from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.diagnostics import (
    STATISTICS_COLUMNS,
    StepStatisticsOptimizer,
    StepStatisticsRecorder,
    speed_verdicts,
    step_statistics_optimizer,
    step_statistics_optimizer_class,
)
from models.layer_rates import LayerRates, layer_rate_optimizer_class, variable_multipliers
from models.training import TrainingConfig, TrainingJob
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend, skip_without_jax

BASE = "transfer_model/feature_extractor"

ONE_STEP_SCRIPT = """
import json
import math
import keras
import numpy as np
from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.diagnostics import StepStatisticsRecorder, step_statistics_optimizer
from models.tree import LayerTree

data = load_bundled_dataset("digits_5_9")
x, y = data.x[:32], data.y[:32]
keras.utils.set_random_seed(0)
model = build_default_transfer_model(dropout=0.0)
tree = LayerTree(model)
tree.set_frozen("transfer_model/feature_extractor/conv1", True)
model.compile(
    optimizer=step_statistics_optimizer(keras.optimizers.Adam, learning_rate=1e-2),
    loss="sparse_categorical_crossentropy",
)
before = {p: [np.array(v.numpy(), np.float64) for v, k in tree.own_variables(p)
              if v.trainable] for p in tree.paths()}
# The independent reference: the same batch's gradient, by the backend's own autodiff.
loss_fn = keras.losses.SparseCategoricalCrossentropy()
trainable = model.trainable_variables
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = [np.asarray(g, np.float64) for g in tape.gradient(loss, trainable)]
else:
    import jax
    def compute(values):
        out, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables],
                                      x, training=True)
        return loss_fn(y, out)
    grads = [np.asarray(g, np.float64) for g in jax.grad(compute)([v.value for v in trainable])]
gradient_of = {id(v): g for v, g in zip(trainable, grads)}
recorder = StepStatisticsRecorder(tree)
model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[recorder], verbose=0)
frame = recorder.frame().set_index("layer_path")
result = {}
for path in tree.paths():
    variables = [v for v, k in tree.own_variables(path) if v.trainable]
    if not variables or path not in frame.index:
        continue
    after = [np.array(v.numpy(), np.float64) for v in variables]
    change = math.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before[path])))
    weight = math.sqrt(sum(np.sum(b ** 2) for b in before[path]))
    gradient = math.sqrt(sum(np.sum(gradient_of[id(v)] ** 2) for v in variables))
    row = frame.loc[path]
    result[path] = {
        "recorded": [row.gradient_norm, row.update_norm, row.weight_norm, row.update_ratio],
        "reference": [gradient, change, weight, change / weight],
    }
print("RESULT " + json.dumps(result))
"""


def check_one_step(report: dict) -> None:
    assert "transfer_model/classifier" in report
    assert f"{BASE}/conv1" not in report  # frozen: no gradient, no update, not reported
    assert f"{BASE}/conv2" in report and f"{BASE}/batch_norm2" in report
    for path, values in report.items():
        assert values["recorded"] == pytest.approx(values["reference"], rel=2e-4, abs=1e-7), path


def test_one_step_statistics_equal_the_gradient_tape_and_the_weights_change():
    namespace: dict = {}
    exec(ONE_STEP_SCRIPT.replace('print("RESULT " + json.dumps(result))', ""), namespace)
    check_one_step(namespace["result"])


def test_one_step_statistics_equal_jax_grad_on_jax():
    skip_without_jax()
    check_one_step(run_on_backend(ONE_STEP_SCRIPT, "jax"))


def fit_weights(optimizer: keras.optimizers.Optimizer, every: int | None = None):
    data = load_bundled_dataset("digits_5_9")
    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    recorder = StepStatisticsRecorder(LayerTree(model), every_n_batches=every)
    model.fit(
        data.x[:256], data.y[:256], batch_size=32, epochs=2, shuffle=False,
        callbacks=[recorder], verbose=0,
    )  # fmt: skip
    return model.get_weights(), recorder


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_keeping_the_statistics_trains_bitwise_as_the_plain_optimizer(name):
    plain_class = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[name]
    plain, silent = fit_weights(plain_class(learning_rate=1e-2))
    kept, recorder = fit_weights(step_statistics_optimizer(plain_class, learning_rate=1e-2), 3)
    assert silent.frame().empty  # a plain optimizer keeps no statistics: nothing recorded
    for a, b in zip(plain, kept, strict=True):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    frame = recorder.frame()
    assert list(frame.columns) == list(STATISTICS_COLUMNS)
    # Every 3 batches plus the epoch ends (8 batches an epoch): steps 3, 6, 8, 9, 12, 15, 16.
    assert sorted(frame.step.unique()) == [3, 6, 8, 9, 12, 15, 16]


def test_the_statistics_compose_with_per_layer_rates_and_a_zero_rate_reports_nothing():
    model = build_default_transfer_model()
    tree = LayerTree(model)
    rates = LayerRates({f"{BASE}/conv1": 0.0})
    both = step_statistics_optimizer_class(layer_rate_optimizer_class(keras.optimizers.Adam))
    assert both.__name__ == "StepStatisticsLayerRateAdam"
    optimizer = both(variable_multipliers=variable_multipliers(rates, tree), learning_rate=1e-2)
    assert isinstance(optimizer, StepStatisticsOptimizer)
    data = load_bundled_dataset("digits_5_9")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    conv1 = np.array(tree.layer(f"{BASE}/conv1").kernel.numpy(), copy=True)
    recorder = StepStatisticsRecorder(tree, every_n_batches=2)
    model.fit(data.x[:128], data.y[:128], batch_size=32, epochs=1, callbacks=[recorder], verbose=0)
    assert np.array_equal(conv1, tree.layer(f"{BASE}/conv1").kernel.numpy())
    rows = recorder.frame()
    conv1_rows = rows[rows.layer_path == f"{BASE}/conv1"]
    # A multiplier of 0: a gradient, but no update.
    assert (conv1_rows.gradient_norm > 0).all() and (conv1_rows.update_norm == 0).all()


def test_a_job_records_the_statistics_and_ends_compiled_with_the_plain_optimizer():
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(f"{BASE}/conv1", True)
    data = load_bundled_dataset("digits_5_9")
    config = TrainingConfig(epochs=2, batch_size=32, drift_every_batches=5)
    job = TrainingJob(model, data.x, data.y, config=config, tree=tree)
    job.run()
    frame = job.step_statistics_frame()
    assert set(frame.layer_path) == {p for p in tree.paths() if p != f"{BASE}/conv1"} & set(
        frame.layer_path
    )
    assert f"{BASE}/conv1" not in set(frame.layer_path)
    assert set(frame.step) == set(job.drift_frame().step) - {0}  # the drift's record points
    assert type(model.optimizer) is keras.optimizers.Adam  # saved files load in plain Keras
    assert int(model.optimizer.iterations.numpy()) == 2 * job.batches_per_epoch  # state kept
    assert job.proof().all_unchanged


def test_speed_verdicts_name_the_layers_far_from_the_guide():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "step": [5, 5, 5, 5],
            "epoch": [0, 0, 0, 0],
            "layer_path": ["a", "b", "c", "d"],
            "gradient_norm": [1.0, 1.0, 1.0, 0.0],
            "update_norm": [0.5, 1e-3, 1e-6, 0.1],
            "weight_norm": [1.0, 1.0, 1.0, 0.0],
            "update_ratio": [0.5, 1e-3, 1e-6, 0.1],
            "relative_gradient": [1.0, 1.0, 1.0, 0.0],
        }
    )
    assert speed_verdicts(frame) == {"too_fast": ["a"], "too_slow": ["c"]}
    with pytest.raises(ValueError, match="lacks the columns"):
        speed_verdicts(frame.drop(columns="update_ratio"))
    assert math.isfinite(frame.update_ratio.max())


def test_a_schedule_records_the_base_only_once_a_phase_unfreezes_it():
    from models.schedule import ScheduledJob, two_phase_schedule

    model = build_default_transfer_model()
    tree = LayerTree(model)
    data = load_bundled_dataset("digits_5_9")
    phases = two_phase_schedule(1, 1e-2, 1, 1e-4)
    config = TrainingConfig(batch_size=64, drift_every_batches=4)
    job = ScheduledJob(model, data.x, data.y, tree, BASE, phases, config)
    job.run()
    frame = job.step_statistics_frame()
    second = job.phase_boundaries()[1].first_step
    base_rows = frame[frame.layer_path.str.startswith(BASE + "/")]
    assert not base_rows.empty and base_rows.step.min() > second
    head = frame[frame.layer_path == "transfer_model/classifier"]
    assert head.step.min() <= second < head.step.max()  # the head trains in both phases
