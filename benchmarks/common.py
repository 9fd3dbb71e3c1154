"""Shared helpers of the benchmarks: results, the table, the JSON hand-off and epoch timing.

Every benchmark script ends with `report(results)`: it prints a table and, when run by
`benchmarks/run_all.py`, writes the results as JSON to the path in `FREEZELAB_BENCH_JSON`.
Benchmarks measure ratios within one run on one machine; they never assert timings.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

JSON_ENVIRONMENT_VARIABLE = "FREEZELAB_BENCH_JSON"


@dataclass
class BenchmarkResult:
    """One measured number and its target.

    Attributes:
        name: Short id, e.g. "drift_overhead_every_batch".
        measured: The measured value (a ratio, milliseconds, seconds...), None when not measured.
        unit: Unit of `measured`, e.g. "x", "ms", "s", "MiB".
        target: The target in words, e.g. "<= 1.03".
        met: Whether the target is met; None when there is no target (a reported number).
        details: Extra numbers behind the measurement (raw timings, sizes, settings).
    """

    name: str
    measured: float | None
    unit: str
    target: str
    met: bool | None
    details: dict[str, Any] = field(default_factory=dict)


def format_table(results: list[BenchmarkResult]) -> str:
    """Returns the results as a fixed-width text table (name, measured, target, met?).

    Args:
        results: The results to show.

    Returns:
        The table, one line per result, with a header line.

    Example:
    >>> print(format_table([BenchmarkResult("x", 1.01, "x", "<= 1.03", True)]))
    """
    header = ("benchmark", "measured", "target", "met?")
    rows = [header]
    for result in results:
        measured = "n/a" if result.measured is None else f"{result.measured:.3g} {result.unit}"
        met = {True: "yes", False: "NO", None: "-"}[result.met]
        rows.append((result.name, measured.strip(), result.target, met))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    separator = tuple("-" * width for width in widths)
    return "\n".join([line(rows[0]), line(separator), *(line(row) for row in rows[1:])])


def report(results: list[BenchmarkResult]) -> None:
    """Prints the results and writes them as JSON where `run_all.py` asked for it.

    Args:
        results: The results of one benchmark script.
    """
    print(format_table(results), flush=True)
    destination = os.environ.get(JSON_ENVIRONMENT_VARIABLE)
    if destination:
        Path(destination).write_text(
            json.dumps([asdict(result) for result in results], indent=2, default=float),
            encoding="utf-8",
        )


def median(values: list[float]) -> float:
    """Returns the median of a non-empty list."""
    return float(statistics.median(values))


def epoch_timer_callback() -> Any:
    """Returns a Keras callback that records each epoch's wall-clock duration in `.durations`.

    Put it LAST in the callback list so that the other callbacks' epoch-end work (a drift
    record, for instance) is inside the measured time.

    Example:
    >>> timer = epoch_timer_callback()
    >>> model.fit(x, y, epochs=3, callbacks=[recorder, timer])
    >>> timer.durations  # three floats, seconds
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.durations: list[float] = []
            self._started = 0.0

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.durations.append(time.perf_counter() - self._started)

    return EpochTimer()


def load_digits_arrays(limit: int | None = None) -> tuple[Any, Any]:
    """Returns the bundled digits 5-9 task as (x, y) arrays, optionally the first `limit`."""
    from models.datasets import load_bundled_dataset

    dataset = load_bundled_dataset("digits_5_9")
    x, y = dataset.x, dataset.y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def mobilenet_transfer_model() -> tuple[Any, Any]:
    """Returns MobileNetV2 (alpha 0.35, 96 px, random init) frozen under a 5-class head.

    The realistic transfer-learning model of the benchmarks (and of `gpu_check.py`): the base
    takes the 8x8 digits resized inside the model. Seeded, so every call builds the same weights.

    Returns:
        `(model, tree)`, the base frozen.
    """
    import keras

    from models.transfer import build_transfer_model
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None
    )
    model = build_transfer_model(base, (8, 8, 1), 5, rescaling=(2.0, -1.0))
    tree = LayerTree(model)
    tree.set_frozen(tree.path_of(base), True)
    return model, tree
