"""Benchmark 1: the cost of recording drift, at every epoch and at every batch, vs plain `fit`.

Same model object (the bundled transfer model, compiled once), same data (digits 5-9), same
seed. After one warm-up epoch (tracing), the three variants (plain `fit`, recorder at epoch
ends, recorder at every batch) take turns over several rounds, so a change in the machine's load
hits them alike; every epoch is timed. The ratio compares the lower quartile of the epoch times
with the recorder to that without it: other processes on a shared machine only ever slow an
epoch down, so the fast quartile is the steadiest estimate of the intrinsic cost (the medians
are in the report's details too).
"""

from __future__ import annotations

import argparse

from common import (
    BenchmarkResult,
    epoch_timer_callback,
    load_digits_arrays,
    median,
    report,
)

EPOCH_TARGET = 1.03
BATCH_TARGET = 1.15
VARIANTS = ("plain", "epoch", "batch")


def time_variants(
    plan: str, x, y, rounds: int, epochs: int, batch_size: int
) -> dict[str, list[float]]:
    """Trains one model under the three variants in turn and returns their epoch durations.

    Args:
        plan: "fine_tune" (everything trains) or "frozen_base" (only the head trains).
        x: Inputs.
        y: Labels.
        rounds: How many times each variant runs.
        epochs: Epochs per run.
        batch_size: Batch size.

    Returns:
        Seconds per epoch for each variant ("plain", "epoch", "batch").
    """
    import keras

    from models.bundled import build_default_transfer_model
    from models.drift import DriftRecorder
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    if plan == "frozen_base":
        tree.set_frozen(f"{model.name}/feature_extractor", True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # traces the train step
    durations: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            callbacks = []
            if variant != "plain":
                every = 1 if variant == "batch" else None
                callbacks.append(DriftRecorder(tree, every_n_batches=every))
            timer = epoch_timer_callback()
            callbacks.append(timer)
            model.fit(
                x,
                y,
                epochs=epochs,
                batch_size=batch_size,
                shuffle=True,
                verbose=0,
                callbacks=callbacks,
            )
            durations[variant] += timer.durations
    return durations


def main() -> None:
    """Runs the benchmark and reports the two ratios (worst over the two freeze plans)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args()
    import numpy as np

    x, y = load_digits_arrays()
    details: dict = {
        "model": "bundled transfer model (feature_extractor + dropout + Dense(5))",
        "samples": len(x),
        "batch_size": arguments.batch_size,
        "epochs_per_run": arguments.epochs,
        "rounds": arguments.rounds,
    }
    ratios: dict[str, dict[str, float]] = {"epoch": {}, "batch": {}}
    for plan in ("fine_tune", "frozen_base"):
        durations = time_variants(
            plan, x, y, arguments.rounds, arguments.epochs, arguments.batch_size
        )
        medians = {variant: median(values) for variant, values in durations.items()}
        quartiles = {
            variant: float(np.percentile(values, 25)) for variant, values in durations.items()
        }
        details[f"{plan}_median_epoch_seconds"] = medians
        details[f"{plan}_lower_quartile_epoch_seconds"] = quartiles
        details[f"{plan}_median_ratios"] = {
            variant: medians[variant] / medians["plain"] for variant in ("epoch", "batch")
        }
        for variant in ("epoch", "batch"):
            ratios[variant][plan] = quartiles[variant] / quartiles["plain"]
    details["ratios"] = ratios
    epoch_ratio = max(ratios["epoch"].values())
    batch_ratio = max(ratios["batch"].values())
    report(
        [
            BenchmarkResult(
                "drift_overhead_every_epoch",
                epoch_ratio,
                "x",
                f"<= {EPOCH_TARGET}",
                epoch_ratio <= EPOCH_TARGET,
                details,
            ),
            BenchmarkResult(
                "drift_overhead_every_batch",
                batch_ratio,
                "x",
                f"<= {BATCH_TARGET}",
                batch_ratio <= BATCH_TARGET,
                {"ratios": ratios},
            ),
        ]
    )


if __name__ == "__main__":
    main()
