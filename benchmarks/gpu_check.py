"""GPU check: FreezeLab's core on a GPU vs the CPU, with proof of the device and exact drift.

Needs only `keras`, one backend (JAX or TensorFlow; with CUDA for the GPU part) and `models/`
(no Streamlit, no plotly). Run it once on a machine with an NVIDIA GPU:

    KERAS_BACKEND=jax python benchmarks/gpu_check.py         # or KERAS_BACKEND=tensorflow

It trains the bundled digits model (base frozen, and fine-tuned) and MobileNetV2 (alpha 0.35,
96 px, random init, base frozen, plain `fit` and the frozen-prefix cache) on each device it
finds, prints epoch times per device, shows where the weights live (the proof the GPU was
used), and checks that the frozen layers are still bitwise unchanged. Without a GPU it says so
clearly and runs the CPU part only. Writes benchmarks/gpu_report.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import epoch_timer_callback, mobilenet_transfer_model  # noqa: E402

REPORT_PATH = Path(__file__).resolve().with_name("gpu_report.json")


def find_devices() -> dict[str, list[str]]:
    """Returns the backend's CPU and GPU device names, e.g. {"gpu": ["gpu:0"], "cpu": [...]}."""
    backend = keras.backend.backend()
    found: dict[str, list[str]] = {"gpu": [], "cpu": ["cpu:0"]}
    if backend == "jax":
        import jax

        found["gpu"] = [f"gpu:{d.id}" for d in jax.devices() if d.platform == "gpu"]
    elif backend == "tensorflow":
        import tensorflow as tf

        found["gpu"] = [f"gpu:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
    elif backend == "torch":
        import torch

        found["gpu"] = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def where(variable: keras.Variable) -> str:
    """Returns the device a variable's value lives on, as the backend names it."""
    value = variable.value
    if hasattr(value, "devices"):  # JAX
        return ",".join(str(device) for device in value.devices())
    return str(getattr(value, "device", "unknown"))


def bundled_model(fine_tune: bool):
    """Returns the bundled transfer model with its base frozen (or everything trainable)."""
    from models.bundled import build_default_transfer_model
    from models.tree import LayerTree

    model = build_default_transfer_model()
    tree = LayerTree(model)
    if not fine_tune:
        tree.set_frozen(f"{model.name}/feature_extractor", True)
    return model, tree


def run_case(name: str, builder, device: str, x, y, epochs: int, cache: bool | None) -> dict:
    """Trains one case on one device and returns its epoch times, device proof and check."""
    from models.training import TrainingConfig, TrainingJob

    with keras.device(device):
        keras.utils.set_random_seed(0)
        model, tree = builder()
        job = TrainingJob(
            model,
            x,
            y,
            config=TrainingConfig(epochs=epochs, batch_size=32, drift_every_batches=5),
            tree=tree,
            use_prefix_cache=cache,
        )
        timer = epoch_timer_callback()
        callbacks = job._callbacks
        job._callbacks = lambda: [*callbacks(), timer]
        started = time.perf_counter()
        progress = job.run()
        total = time.perf_counter() - started
    verification = job.verification() if job.recorder.started else None
    return {
        "case": name,
        "device": device,
        "state": progress.state.value,
        "message": progress.message,
        "path": job.execution_plan.path_name,
        "epoch_seconds": timer.durations,
        "epoch_seconds_after_first": float(np.median(timer.durations[1:]))
        if len(timer.durations) > 1
        else None,
        "total_seconds": total,
        "precompute_seconds": job.execution_plan.precompute_seconds,
        "weights_live_on": where(model.trainable_weights[0]),
        "drift_rows": len(job.drift_frame()),
        "frozen_bitwise_unchanged": bool(verification and verification.all_unchanged),
        "verification": verification.message() if verification else "not started",
    }


def main() -> None:
    """Runs every case on the GPU (when present) and the CPU and writes gpu_report.json."""
    from models.datasets import load_bundled_dataset

    devices = find_devices()
    backend = keras.backend.backend()
    print(f"Keras {keras.__version__}, backend {backend}, devices {devices}")
    if not devices["gpu"]:
        print(
            f"NO GPU FOUND by the {backend} backend: only the CPU part runs. Install a CUDA "
            "build of the backend (e.g. `pip install -U 'jax[cuda12]'`) on a machine with an "
            "NVIDIA GPU and run this again."
        )
    data = load_bundled_dataset("digits_5_9")
    x, y = data.x, data.y
    cases = [
        ("bundled, base frozen", lambda: bundled_model(False), x, y, 5, False),
        ("bundled, fine-tune all", lambda: bundled_model(True), x, y, 5, False),
        ("mobilenetv2 0.35 96px, base frozen, plain fit", mobilenet_transfer_model, x, y, 3, False),
        ("mobilenetv2 0.35 96px, base frozen, cached", mobilenet_transfer_model, x, y, 3, None),
    ]
    results = []
    for device in [*devices["gpu"][:1], "cpu:0"]:
        for name, builder, inputs, labels, epochs, cache in cases:
            result = run_case(name, builder, device, inputs, labels, epochs, cache)
            results.append(result)
            print(
                f"{device:6} {name:48} epoch {result['epoch_seconds_after_first'] or 0:7.3f} s"
                f"  on {result['weights_live_on']:28}  {result['verification']}"
            )
    speedups = {}
    if devices["gpu"]:
        for name, *_ in cases:
            gpu = next(r for r in results if r["case"] == name and r["device"] != "cpu:0")
            cpu = next(r for r in results if r["case"] == name and r["device"] == "cpu:0")
            if gpu["epoch_seconds_after_first"] and cpu["epoch_seconds_after_first"]:
                speedups[name] = cpu["epoch_seconds_after_first"] / gpu["epoch_seconds_after_first"]
        for name, value in speedups.items():
            print(f"GPU speed-up per epoch, {name}: {value:.1f}x")
    report = {
        "backend": backend,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "gpu_found": bool(devices["gpu"]),
        "devices": devices,
        "gpu_speedup_per_epoch": speedups,
        "all_frozen_bitwise_unchanged": all(r["frozen_bitwise_unchanged"] for r in results),
        "results": results,
    }
    REPORT_PATH.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"All frozen layers bitwise unchanged: {report['all_frozen_bitwise_unchanged']}")
    print(f"Wrote {REPORT_PATH}")


if __name__ == "__main__":
    main()
