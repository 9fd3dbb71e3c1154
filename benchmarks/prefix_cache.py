"""Benchmark 2: frozen-prefix caching vs plain `fit` with a frozen base (MobileNetV2 0.35, 96 px).

The same `TrainingJob` runs twice from the same initial weights and seed: once with
`use_prefix_cache=False` (plain `fit`: every epoch runs the frozen base), once automatically
(the base's outputs computed once, only the head trains). The ratio is the median epoch time
after the first epoch, plain over cached; the final head weights must agree to float tolerance.
"""

from __future__ import annotations

import argparse
import time

from common import (
    BenchmarkResult,
    epoch_timer_callback,
    load_digits_arrays,
    median,
    mobilenet_transfer_model,
    report,
)

TARGET = 5.0


def train(x, y, epochs: int, use_prefix_cache: bool | None):
    """Trains a fresh model through `TrainingJob` and returns (job, model, epoch durations)."""
    from models.training import JobState, TrainingConfig, TrainingJob

    model, tree = mobilenet_transfer_model()
    config = TrainingConfig(epochs=epochs, batch_size=32, seed=0)
    job = TrainingJob(model, x, y, config=config, tree=tree, use_prefix_cache=use_prefix_cache)
    timer = epoch_timer_callback()
    callbacks = job._callbacks
    job._callbacks = lambda: [*callbacks(), timer]  # benchmark only: time each epoch
    started = time.perf_counter()
    progress = job.run()
    total = time.perf_counter() - started
    if progress.state is not JobState.FINISHED:
        raise RuntimeError(progress.message)
    return job, model, timer.durations, total


def main() -> None:
    """Runs both paths and reports the per-epoch speed-up and the weight agreement."""
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=6)
    arguments = parser.parse_args()
    x, y = load_digits_arrays(arguments.samples)
    plain_job, plain_model, plain_epochs, plain_total = train(x, y, arguments.epochs, False)
    cached_job, cached_model, cached_epochs, cached_total = train(x, y, arguments.epochs, None)
    plan = cached_job.execution_plan
    plain_epoch = median(plain_epochs[1:])
    cached_epoch = median(cached_epochs[1:])
    ratio = plain_epoch / cached_epoch
    differences = [
        float(np.max(np.abs(np.asarray(a.numpy()) - np.asarray(b.numpy()))))
        for a, b in zip(plain_model.weights, cached_model.weights, strict=True)
    ]
    same_weights = all(
        np.allclose(np.asarray(b.numpy()), np.asarray(a.numpy()), rtol=1e-5, atol=1e-6)
        for a, b in zip(plain_model.weights, cached_model.weights, strict=True)
    )
    verified = cached_job.verification().all_unchanged and plain_job.verification().all_unchanged
    details = {
        "samples": len(x),
        "epochs": arguments.epochs,
        "plain_epoch_seconds": plain_epochs,
        "cached_epoch_seconds": cached_epochs,
        "plain_total_seconds": plain_total,
        "cached_total_seconds": cached_total,
        "precompute_seconds": plan.precompute_seconds,
        "cached": plan.cached,
        "reason": plan.reason,
        "feature_shape": plan.feature_shape,
        "max_abs_weight_difference": max(differences),
        "same_final_weights_rtol_1e-5": same_weights,
        "frozen_verified_bitwise": verified,
    }
    report(
        [
            BenchmarkResult(
                "prefix_cache_epoch_speedup",
                ratio,
                "x",
                f">= {TARGET} (same weights)",
                bool(ratio >= TARGET and same_weights and verified and plan.cached),
                details,
            ),
            BenchmarkResult(
                "prefix_cache_total_speedup",
                plain_total / cached_total,
                "x",
                "reported",
                None,
                {"precompute_seconds": plan.precompute_seconds},
            ),
        ]
    )


if __name__ == "__main__":
    main()
