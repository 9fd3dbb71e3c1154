"""Benchmark 10: what training on Ray costs against training here (issue 17).

On the default task (the bundled digits CNN, base frozen but for its top convolution, all the
digits 5-9, 5 epochs, seed 0), with Ray already started (a local instance, `RayExecutor.connect`,
as a server does once at start):

- the ratio of a run's wall time on a Ray worker (Train pressed to the model holding the
  trained weights, everything included: sending the model and data, the worker's training,
  polling, the values coming back and being set, the proof checked again) to the same run as a
  local `TrainingJob` in this process (target <= 1.2x), in interleaved rounds, median;
- the time from Train to the first progress shown (the first poll with a finished batch),
  median over the rounds (target <= 5 s): the dispatcher keeps one worker warm, with TensorFlow
  and Keras imported, so a run does not wait for a process to start.

Both runs train the same model from the same values, so the ratio measures the overhead alone
(the final values are equal bitwise; the benchmark checks it). Nothing is asserted in a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import BenchmarkResult, median, report

EPOCHS = 5
TARGET_RATIO = 1.2
TARGET_FIRST_PROGRESS = 5.0
BASE = "transfer_model/feature_extractor"


def _fresh_model():
    import keras

    from models import build_default_transfer_model
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    for name in ("conv1", "batch_norm1", "conv2", "batch_norm2", "batch_norm3"):
        tree.set_frozen(f"{BASE}/{name}", True)
    return model, tree


def _values(model) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in model.variables]


def main() -> None:
    """Runs the benchmark and reports the ratio and the time to first progress."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        report(
            [
                BenchmarkResult(
                    "ray_overhead", None, "x", f"<= {TARGET_RATIO}", None,
                    {"skipped": "Ray is not installed (pip install -r requirements-ray.txt)"},
                )
            ]
        )  # fmt: skip
        return
    from models.datasets import load_bundled_dataset
    from models.ray_executor import RayExecutor
    from models.training import TrainingJob
    from models.training_config import TrainingConfig

    data = load_bundled_dataset("digits_5_9")
    config = TrainingConfig(epochs=EPOCHS, learning_rate=1e-2)
    started = time.perf_counter()
    executor = RayExecutor.connect()
    connect_seconds = time.perf_counter() - started
    time.sleep(15)  # the warm worker imports TensorFlow once, as after a server's start
    local_seconds, ray_seconds, first_progress = [], [], []
    model, tree = _fresh_model()
    TrainingJob(model, data.x, data.y, config=config, tree=tree).run()  # warms this process
    for round_index in range(arguments.rounds):
        order = ("local", "ray") if round_index % 2 == 0 else ("ray", "local")
        finals = {}
        for variant in order:
            model, tree = _fresh_model()
            started = time.perf_counter()
            if variant == "local":
                TrainingJob(model, data.x, data.y, config=config, tree=tree).run()
                local_seconds.append(time.perf_counter() - started)
            else:
                job = executor.training_job(model, data.x, data.y, config=config, tree=tree)
                job.start()
                first = None
                while not job.progress().done:
                    progress = job.progress()
                    if first is None and (progress.batch or progress.epoch):
                        first = time.perf_counter() - started
                    time.sleep(0.02)
                ray_seconds.append(time.perf_counter() - started)
                first_progress.append(first if first is not None else ray_seconds[-1])
                time.sleep(10)  # the next warm worker starts (as between two learners' runs)
            finals[variant] = _values(model)
        equal = all(
            np.array_equal(a, b) for a, b in zip(finals["local"], finals["ray"], strict=True)
        )
        if not equal:
            raise RuntimeError("The Ray run and the local run ended with different weights.")
    ratio = median(ray_seconds) / median(local_seconds)
    details = {
        "local_seconds": local_seconds,
        "ray_seconds": ray_seconds,
        "first_progress_seconds": first_progress,
        "connect_seconds": connect_seconds,
        "epochs": EPOCHS,
        "executor": executor.description,
    }
    report(
        [
            BenchmarkResult(
                "ray_run_vs_local_run", round(ratio, 2), "x", f"<= {TARGET_RATIO}",
                ratio <= TARGET_RATIO, details,
            ),
            BenchmarkResult(
                "ray_train_to_first_progress", round(median(first_progress), 2), "s",
                f"<= {TARGET_FIRST_PROGRESS}", median(first_progress) <= TARGET_FIRST_PROGRESS,
                details,
            ),
        ]
    )  # fmt: skip


if __name__ == "__main__":
    main()
