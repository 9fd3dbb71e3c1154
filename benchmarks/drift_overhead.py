"""Benchmark 1: the cost of recording drift, at every epoch and at every batch, vs plain `fit`.

Same model object (compiled once), same data (digits 5-9), same seed, two freeze plans (the
base frozen under a trainable head, and everything fine-tuned). Three variants take turns: plain
`fit`, a `DriftRecorder` at epoch ends and one at every batch; each variant keeps its recorder
across its fits, as a training run does. After a warm-up epoch (tracing), each round runs every
variant for one epoch in a new random order, with the garbage collected before and paused during
each timed fit (as `timeit` does), so the machine's load and the process's garbage hit every
variant alike. The ratio is the median over rounds of each variant's epoch time over the plain
epoch time of the same round: pairing cancels slow changes in the machine's load, and the
median ignores the rounds that another process disturbed.

Two models:
- The targets are measured on MobileNetV2 (alpha 0.35, 96 px, random init) under a 5-class head,
  the realistic transfer-learning model of benchmark 2.
- The bundled digits CNN (14 k parameters, about 3 ms a step) is reported too, without a target:
  there a record costs about as much as TensorFlow's fixed price of one compiled call (a few
  tenths of a millisecond), which is a tenth of its step; the number shows what that floor means.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from typing import Any

from common import (
    BenchmarkResult,
    epoch_timer_callback,
    load_digits_arrays,
    median,
    mobilenet_transfer_model,
    report,
)

EPOCH_TARGET = 1.03
BATCH_TARGET = 1.15
VARIANTS = ("plain", "epoch", "batch")
PLANS = ("frozen_base", "fine_tune")


def mobilenet_model(plan: str) -> tuple[Any, Any]:
    """Returns MobileNetV2 0.35 at 96 px under a 5-class head, and its tree, frozen per `plan`."""
    model, tree = mobilenet_transfer_model()  # the base comes frozen
    if plan == "fine_tune":
        tree.unfreeze_all()
    return model, tree


def bundled_model(plan: str) -> tuple[Any, Any]:
    """Returns the bundled transfer model (digits CNN + head) and its tree, frozen per `plan`."""
    import keras

    from models.bundled import build_default_transfer_model
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    if plan == "frozen_base":
        tree.set_frozen(f"{model.name}/feature_extractor", True)
    return model, tree


def time_variants(
    build: Callable[[str], tuple[Any, Any]], plan: str, x, y, rounds: int, batch_size: int
) -> dict[str, list[float]]:
    """Trains one model under the three variants in turn and returns their epoch durations.

    Args:
        build: Returns (model, tree) for a freeze plan.
        plan: "frozen_base" (only the head trains) or "fine_tune" (everything trains).
        x: Inputs.
        y: Labels.
        rounds: How many one-epoch fits each variant runs.
        batch_size: Batch size.

    Returns:
        Seconds of each timed epoch for each variant ("plain", "epoch", "batch"), by round.
    """
    import keras
    import numpy as np

    from models.drift import DriftRecorder

    model, tree = build(plan)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # traces the train step
    callbacks = {
        "plain": [],
        "epoch": [DriftRecorder(tree)],
        "batch": [DriftRecorder(tree, every_n_batches=1)],
    }
    durations: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for variant in order.permutation(VARIANTS).tolist():
            timer = epoch_timer_callback()
            gc.collect()
            gc.disable()
            try:
                model.fit(
                    x,
                    y,
                    epochs=1,
                    batch_size=batch_size,
                    shuffle=True,
                    verbose=0,
                    callbacks=[*callbacks[variant], timer],
                )
            finally:
                gc.enable()
            durations[variant] += timer.durations
    return durations


def paired_ratios(durations: dict[str, list[float]]) -> dict[str, float]:
    """Median over rounds of each recorder variant's epoch time over that round's plain one."""
    plain = durations["plain"]
    return {
        variant: median([mine / base for mine, base in zip(durations[variant], plain, strict=True)])
        for variant in ("epoch", "batch")
    }


def measure(
    name: str,
    build: Callable[[str], tuple[Any, Any]],
    x,
    y,
    rounds: dict[str, int],
    batch_size: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Measures both plans of one model; returns the worst ratio per variant and the details.

    Args:
        name: The model's description, for the report.
        build: Returns (model, tree) for a freeze plan.
        x: Inputs.
        y: Labels.
        rounds: Rounds per plan (a plan with faster epochs can afford more).
        batch_size: Batch size.
    """
    details: dict[str, Any] = {
        "model": name,
        "samples": len(x),
        "batch_size": batch_size,
        "rounds": rounds,
    }
    worst = {"epoch": 0.0, "batch": 0.0}
    for plan in PLANS:
        durations = time_variants(build, plan, x, y, rounds[plan], batch_size)
        ratios = paired_ratios(durations)
        details[f"{plan}_median_epoch_seconds"] = {
            variant: median(values) for variant, values in durations.items()
        }
        details[f"{plan}_paired_ratios"] = ratios
        for variant, ratio in ratios.items():
            worst[variant] = max(worst[variant], ratio)
    return worst, details


def main() -> None:
    """Runs the benchmark: targets on MobileNetV2, the bundled CNN reported alongside."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds on MobileNetV2 fine-tuned (3 s epochs)"
    )
    parser.add_argument(
        "--frozen-rounds", type=int, default=24, help="rounds on MobileNetV2 frozen (1 s epochs)"
    )
    parser.add_argument("--small-rounds", type=int, default=20, help="rounds on the bundled CNN")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args()

    x, y = load_digits_arrays(arguments.samples)
    worst, details = measure(
        "MobileNetV2 alpha 0.35, 96 px, random init, 5-class head",
        mobilenet_model,
        x,
        y,
        {"frozen_base": arguments.frozen_rounds, "fine_tune": arguments.rounds},
        arguments.batch_size,
    )
    x_all, y_all = load_digits_arrays()
    small_worst, small_details = measure(
        "bundled digits CNN (feature_extractor + dropout + Dense(5))",
        bundled_model,
        x_all,
        y_all,
        dict.fromkeys(PLANS, arguments.small_rounds),
        arguments.batch_size,
    )
    report(
        [
            BenchmarkResult(
                "drift_overhead_every_epoch",
                worst["epoch"],
                "x",
                f"<= {EPOCH_TARGET}",
                worst["epoch"] <= EPOCH_TARGET,
                details,
            ),
            BenchmarkResult(
                "drift_overhead_every_batch",
                worst["batch"],
                "x",
                f"<= {BATCH_TARGET}",
                worst["batch"] <= BATCH_TARGET,
                {"worst_of_plans": worst},
            ),
            BenchmarkResult(
                "drift_overhead_every_epoch_small_cnn",
                small_worst["epoch"],
                "x",
                "reported",
                None,
                small_details,
            ),
            BenchmarkResult(
                "drift_overhead_every_batch_small_cnn",
                small_worst["batch"],
                "x",
                "reported",
                None,
                {"worst_of_plans": small_worst},
            ),
        ]
    )


if __name__ == "__main__":
    main()
