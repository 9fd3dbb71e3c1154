"""Runs every benchmark, each in its own process, prints one table and writes report.json.

Usage: `make bench` (or `.venv/bin/python benchmarks/run_all.py [names...]`). Each script runs
in a fresh subprocess so TensorFlow state (threads, caches, compiled functions) never leaks
from one measurement into the next. Results are ratios and numbers measured in this one run on
this machine; nothing here is a pass/fail test.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import JSON_ENVIRONMENT_VARIABLE, REPOSITORY_ROOT, BenchmarkResult, format_table

BENCHMARKS = (
    "drift_overhead",
    "prefix_cache",
    "tree_toggle",
    "drift_memory",
    "demo_end_to_end",
    "many_sessions",
    "levers",
    "diagnostics_cost",
    "advisor",
    "ray_overhead",
)
REPORT_PATH = Path(__file__).resolve().with_name("report.json")
TIMEOUT_SECONDS = 600


def run_one(name: str) -> tuple[list[BenchmarkResult], float, str]:
    """Runs one benchmark script in a subprocess.

    Args:
        name: Script name without ".py".

    Returns:
        Its results (a failed result when the script failed), its wall time, and the tail of
        its output.
    """
    with tempfile.TemporaryDirectory() as folder:
        destination = Path(folder) / "result.json"
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        environment[JSON_ENVIRONMENT_VARIABLE] = str(destination)
        started = time.perf_counter()
        try:
            completed = subprocess.run(
                [sys.executable, str(Path(__file__).with_name(f"{name}.py"))],
                cwd=REPOSITORY_ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
            output = (completed.stdout + completed.stderr)[-2000:]
            failed = completed.returncode != 0
        except subprocess.TimeoutExpired:
            output, failed = f"timed out after {TIMEOUT_SECONDS} s", True
        elapsed = time.perf_counter() - started
        if destination.is_file() and not failed:
            results = [BenchmarkResult(**row) for row in json.loads(destination.read_text())]
            return results, elapsed, output
    return (
        [BenchmarkResult(name, None, "", "script failed", False, {"output": output})],
        (elapsed),
        output,
    )


def main() -> None:
    """Runs the chosen (default: all) benchmarks and writes `benchmarks/report.json`."""
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"Unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}.")
    results: list[BenchmarkResult] = []
    timings: dict[str, float] = {}
    for name in names:
        print(f"running {name} ...", flush=True)
        measured, elapsed, output = run_one(name)
        timings[name] = elapsed
        if measured and measured[0].target == "script failed":
            print(output, file=sys.stderr)
        results += measured
    print()
    print(format_table(results))
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    report = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": load,
        },
        "seconds_per_benchmark": timings,
        "results": [asdict(result) for result in results],
    }
    REPORT_PATH.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    print(f"\nWrote {REPORT_PATH.relative_to(REPOSITORY_ROOT)} ({sum(timings.values()):.0f} s).")


if __name__ == "__main__":
    main()
