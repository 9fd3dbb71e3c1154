"""Benchmark 4: the drift recorder's memory over 5 vs 50 epochs stays flat.

The recorder keeps one copy of the starting weights and a few scalars per variable per record.
A tiny model trains for 5 and then (fresh) for 50 epochs with a record at every batch; the
benchmark compares what the recorder holds (starting copy; per-record scalars) and the growth of
the Python heap (tracemalloc) and of the process (RSS).
"""

from __future__ import annotations

import resource
import tracemalloc

from common import BenchmarkResult, report


def train(epochs: int) -> dict:
    """Trains a fresh tiny model with a per-batch recorder and returns its memory figures."""
    import keras
    import numpy as np

    from models.drift import DriftRecorder
    from models.tree import LayerTree

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64, activation="relu", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(64, activation="relu", name="second"),
            keras.layers.Dense(4, activation="softmax", name="out"),
        ],
        name="tiny",
    )
    generator = np.random.default_rng(0)
    x = generator.normal(size=(128, 16)).astype("float32")
    y = np.arange(128) % 4
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    recorder = DriftRecorder(LayerTree(model), every_n_batches=1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # warm-up outside the measurement
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[recorder])
    heap_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    groups = recorder._groups or []
    starts = [start for group in groups for start in group.start_values]
    start_bytes = sum(int(np.prod(start.shape)) * 4 for start in starts)
    record_bytes = sum(record.scalars.nbytes for record in recorder._records)
    return {
        "epochs": epochs,
        "records": recorder.steps_recorded,
        "start_copies": len(starts),
        "model_variables": len(model.weights),
        "start_copy_bytes": start_bytes,
        "per_record_bytes": record_bytes / max(recorder.steps_recorded, 1),
        "record_bytes": record_bytes,
        "python_heap_growth_bytes": heap_after - heap_before,
        "max_rss_growth_kib": rss_after - rss_before,
        "weights_bytes": sum(int(np.prod(w.shape)) * 4 for w in model.weights),
    }


def main() -> None:
    """Runs 5 and 50 epochs and reports whether the held memory is flat."""
    short = train(5)
    long = train(50)
    flat_ratio = long["start_copy_bytes"] / short["start_copy_bytes"]
    one_copy = long["start_copies"] == long["model_variables"] == short["start_copies"]
    per_record_same = abs(long["per_record_bytes"] - short["per_record_bytes"]) < 1e-9
    report(
        [
            BenchmarkResult(
                "drift_memory_start_copy_50_vs_5_epochs",
                flat_ratio,
                "x",
                "== 1 (one copy)",
                flat_ratio == 1.0 and one_copy,
                {"5_epochs": short, "50_epochs": long},
            ),
            BenchmarkResult(
                "drift_memory_bytes_per_record",
                long["per_record_bytes"],
                "B",
                "scalars only (2 x 4 B per variable)",
                per_record_same and long["per_record_bytes"] == 2 * 4 * long["model_variables"],
                {"python_heap_growth_bytes_50_epochs": long["python_heap_growth_bytes"]},
            ),
        ]
    )


if __name__ == "__main__":
    main()
