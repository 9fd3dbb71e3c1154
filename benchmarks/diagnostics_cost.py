"""Benchmark: the cost of recording gradients and update ratios every 5 batches vs plain `fit`.

A training run keeps each step's gradient, update and weight norms in its optimizer
(`models.diagnostics`: `TrainingJob.build_optimizer(step_statistics=True)`) and a
`StepStatisticsRecorder` reads them at the drift's record points. This measures what that costs:
two copies of one model (same seed, so the same weights), one compiled with plain Adam and one
with `step_statistics_optimizer(Adam)` under a `StepStatisticsRecorder(every_n_batches=5)`, on the
same data (digits 5-9) and batch size. After a warm-up epoch each (tracing), each round runs both
for one epoch, in alternating order (AB, BA, AB, ...), with the garbage collected before and
paused during each timed fit. The ratio is the median over rounds of the statistics epoch time
over the plain epoch time of the same round: pairing cancels slow changes in the machine's load,
and the median ignores the rounds that another process disturbed.

Two freeze plans: "fine_tune" (the whole model trains, BatchNormalization frozen, as FreezeLab
fine-tunes: every variable of the base gets its norms every step) and "frozen_base" (only the
head trains). The target is on MobileNetV2 (alpha 0.35, 96 px, random init) under a 5-class head,
the worst of both plans; the bundled digits CNN (about 3 ms a step) is reported without a target.
"""

from __future__ import annotations

import argparse
import gc
import time
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

TARGET = 1.10
EVERY_N_BATCHES = 5
VARIANTS = ("plain", "statistics")
PLANS = ("fine_tune", "frozen_base")


def apply_plan(model: Any, tree: Any, base_path: str, plan: str) -> tuple[Any, Any]:
    """Freezes `tree` per `plan`: the base alone ("frozen_base") or BatchNormalization only."""
    tree.unfreeze_all()
    if plan == "frozen_base":
        tree.set_frozen(base_path, True)
    else:
        tree.freeze_batch_norm()
    return model, tree


def mobilenet_model(plan: str) -> tuple[Any, Any]:
    """Returns MobileNetV2 0.35 at 96 px under a 5-class head, and its tree, frozen per `plan`."""
    model, tree = mobilenet_transfer_model()
    base = next(layer for layer in model.layers if "mobilenet" in layer.name)
    return apply_plan(model, tree, tree.path_of(base), plan)


def bundled_model(plan: str) -> tuple[Any, Any]:
    """Returns the bundled transfer model (digits CNN + head) and its tree, frozen per `plan`."""
    import keras

    from models.bundled import build_default_transfer_model
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    model = build_default_transfer_model()
    tree = LayerTree(model)
    return apply_plan(model, tree, f"{model.name}/feature_extractor", plan)


def epoch_clock_callback() -> Any:
    """`epoch_timer_callback` that also keeps each epoch's process CPU seconds in `.cpu`.

    CPU time (all of TensorFlow's threads) is what the statistics add to the work; unlike the
    wall time it barely moves when another process shares the cores, so its ratio is reported
    next to the wall-clock one.
    """
    timer_class = type(epoch_timer_callback())

    class EpochClock(timer_class):
        def __init__(self) -> None:
            super().__init__()
            self.cpu: list[float] = []
            self._cpu_started = 0.0

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._cpu_started = time.process_time()
            super().on_epoch_begin(epoch, logs)

        def on_epoch_end(self, epoch, logs=None) -> None:
            super().on_epoch_end(epoch, logs)
            self.cpu.append(time.process_time() - self._cpu_started)

    return EpochClock()


def time_variants(
    build: Callable[[str], tuple[Any, Any]], plan: str, x, y, rounds: int, batch_size: int
) -> dict[str, list[float]]:
    """Trains the plain and the statistics copy of one model in turn; returns epoch durations.

    Args:
        build: Returns (model, tree) for a freeze plan, the same weights on every call.
        plan: "fine_tune" (everything but BatchNormalization trains) or "frozen_base".
        x: Inputs.
        y: Labels.
        rounds: How many one-epoch fits each variant runs.
        batch_size: Batch size.

    Returns:
        Wall-clock seconds of each timed epoch for each variant ("plain", "statistics"), by
        round, and the same for process CPU seconds (keys "plain_cpu", "statistics_cpu").
    """
    import keras

    from models.diagnostics import StepStatisticsRecorder, step_statistics_optimizer

    optimizers = {
        "plain": lambda: keras.optimizers.Adam(1e-3),
        "statistics": lambda: step_statistics_optimizer(keras.optimizers.Adam, learning_rate=1e-3),
    }
    models: dict[str, Any] = {}
    callbacks: dict[str, list[Any]] = {}
    for variant in VARIANTS:
        model, tree = build(plan)
        model.compile(
            optimizer=optimizers[variant](),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks[variant] = (
            [StepStatisticsRecorder(tree, every_n_batches=EVERY_N_BATCHES)]
            if variant == "statistics"
            else []
        )
        models[variant] = model
    for variant in VARIANTS:  # traces the train steps (and the recorder's first read)
        models[variant].fit(
            x, y, epochs=1, batch_size=batch_size, verbose=0, callbacks=callbacks[variant]
        )
    durations: dict[str, list[float]] = {key: [] for v in VARIANTS for key in (v, f"{v}_cpu")}
    for round_index in range(rounds):
        order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            timer = epoch_clock_callback()
            gc.collect()
            gc.disable()
            try:
                models[variant].fit(
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
            durations[f"{variant}_cpu"] += timer.cpu
    recorder = callbacks["statistics"][0]
    if recorder.frame().empty:
        raise RuntimeError("The statistics variant recorded nothing; the benchmark is void.")
    return durations


def measure(
    name: str,
    build: Callable[[str], tuple[Any, Any]],
    x,
    y,
    rounds: dict[str, int],
    batch_size: int,
) -> tuple[float, dict[str, Any]]:
    """Measures both plans of one model; returns the worst paired ratio and the details.

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
        "every_n_batches": EVERY_N_BATCHES,
        "rounds": rounds,
    }
    worst = 0.0
    for plan in PLANS:
        durations = time_variants(build, plan, x, y, rounds[plan], batch_size)
        ratio, cpu_ratio = (
            median([mine / base for mine, base in zip(durations[a], durations[b], strict=True)])
            for a, b in (("statistics", "plain"), ("statistics_cpu", "plain_cpu"))
        )
        seconds = {key: round(median(values), 4) for key, values in durations.items()}
        details[f"{plan}_median_epoch_seconds"] = seconds
        details[f"{plan}_paired_ratio"] = ratio
        details[f"{plan}_paired_cpu_ratio"] = cpu_ratio
        worst = max(worst, ratio)
        print(f"{name} [{plan}]: wall {ratio:.3f}x, cpu {cpu_ratio:.3f}x; medians {seconds}")
    return worst, details


def main() -> None:
    """Runs the benchmark: the target on MobileNetV2, the bundled CNN reported alongside."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds on MobileNetV2 fine-tuned (3 s epochs)"
    )
    parser.add_argument(
        "--frozen-rounds", type=int, default=16, help="rounds on MobileNetV2 frozen (1 s epochs)"
    )
    parser.add_argument("--small-rounds", type=int, default=16, help="rounds on the bundled CNN")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args()

    x, y = load_digits_arrays(arguments.samples)
    worst, details = measure(
        "MobileNetV2 alpha 0.35, 96 px, random init, 5-class head",
        mobilenet_model,
        x,
        y,
        {"fine_tune": arguments.rounds, "frozen_base": arguments.frozen_rounds},
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
                "diagnostics_cost_every_5_batches",
                worst,
                "x",
                f"<= {TARGET}",
                worst <= TARGET,
                details,
            ),
            BenchmarkResult(
                "diagnostics_cost_every_5_batches_small_cnn",
                small_worst,
                "x",
                "reported",
                None,
                small_details,
            ),
        ]
    )


if __name__ == "__main__":
    main()
