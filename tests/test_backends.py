"""The core (tree, training, drift, verification, prefix cache) runs on JAX as on TensorFlow.

Each backend runs in its own subprocess, since Keras picks its backend once per process from
`KERAS_BACKEND`.
"""

import importlib.util

import numpy as np
import pytest

from tests.backend_subprocess import run_on_backend

CORE_SCRIPT = """
import json

import keras
import numpy as np

from models.training import JobState, TrainingConfig, TrainingJob
from models.tree import LayerTree


def small_model():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="small",
    )


generator = np.random.default_rng(1)
y = np.arange(120) % 3
x = generator.normal(size=(120, 6)).astype("float32") + y[:, None]
result = {"backend": keras.backend.backend()}
for name, use_prefix_cache in (("plain", False), ("automatic", None)):
    keras.utils.set_random_seed(0)
    model = small_model()
    tree = LayerTree(model)
    tree.set_frozen("small/first", True)
    tree.set_frozen("small/bn", True)
    frozen = model.get_layer("first").weights + model.get_layer("bn").weights
    before = [np.array(w.numpy(), copy=True) for w in frozen]
    config = TrainingConfig(epochs=2, batch_size=16, drift_every_batches=2)
    job = TrainingJob(model, x, y, config=config, tree=tree, use_prefix_cache=use_prefix_cache)
    progress = job.run()
    drift = job.drift_frame()
    head = drift[(drift.layer_path == "small/out") & (drift.step > 0)]
    counts = tree.totals()
    result[name] = {
        "finished": progress.state is JobState.FINISHED,
        "message": progress.message,
        "cached": job.execution_plan.cached,
        "drift_rows": len(drift),
        "head_moved_at_every_record": bool((head.relative_change > 0).all()),
        "frozen_rows_zero": bool((drift[drift.frozen].max_abs_change == 0).all()),
        "all_unchanged": job.verification().all_unchanged,
        "num_checked": job.verification().num_checked,
        "bitwise": all(
            np.array_equal(a, np.asarray(w.numpy())) for a, w in zip(before, frozen)
        ),
        "counts": [counts.trainable, counts.non_trainable],
        "keras_counts": [
            int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            int(sum(np.prod(w.shape) for w in model.non_trainable_weights)),
        ],
        "head_weights": [np.asarray(w.numpy()).tolist() for w in model.get_layer("out").weights],
    }
print("RESULT " + json.dumps(result))
"""


def run_core(backend: str) -> dict:
    return run_on_backend(CORE_SCRIPT, backend, timeout=240)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_core_trains_records_drift_and_verifies_on_the_backend(backend):
    if backend == "jax" and importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed: pip install -r requirements-dev.txt")
    result = run_core(backend)
    assert result["backend"] == backend
    for name in ("plain", "automatic"):
        run = result[name]
        assert run["finished"], run["message"]
        assert run["drift_rows"] > 0
        assert run["head_moved_at_every_record"]
        assert run["frozen_rows_zero"]
        assert run["all_unchanged"] and run["num_checked"] == 2
        assert run["bitwise"]
        assert run["counts"] == run["keras_counts"] == [27, 88]
    assert not result["plain"]["cached"]
    assert result["automatic"]["cached"]
    # The cached path trains the same head weights as plain fit on this backend too.
    for plain, cached in zip(
        result["plain"]["head_weights"], result["automatic"]["head_weights"], strict=True
    ):
        np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=1e-6)
