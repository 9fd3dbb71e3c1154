"""Benchmark 7: the four levers of fine-tuning compared on both bundled bases (issue 15).

On each bundled base (the digits CNN and the tiny attention model, both pretrained on digits
0-4) the same transfer task (digits 5-9, 80/20 split, seed 0, batch 32) is trained four ways,
each from the pretrained weights and a new head:

- freeze base: only the new head trains (learning rate 1e-2);
- LoRA: the base frozen, rank-4 adapters on its convolutions (CNN) or on every Dense and
  EinsumDense of the base (attention: q, k, v, output, feed-forward, patch embedding); the
  adapters, their layers' biases and the head train (1e-2, and again at 1e-3, the full
  fine-tune's rate);
- full fine-tune: everything trains (1e-3);
- layer-wise decay: everything trains, the head at 1e-2, the base at 0.1x and each block of two
  layers below the top at half the block above (`LayerRates`).

It reports, per base and lever: trainable parameters (Keras's own count), seconds per epoch,
new-task validation accuracy, forgetting (the base's accuracy on digits 0-4 with its original
classifier after fine-tuning, `models.forgetting`) and the largest final relative drift of the
base's weights (of the effective kernel for a LoRA layer). Everything is measured in this one
run; nothing is asserted. The README's table comes from this script's output (`--markdown`).
"""

from __future__ import annotations

import argparse
import math

from common import BenchmarkResult, report

EPOCHS = 10
BATCH_SIZE = 32
LORA_RANK = 4
LEVERS = ("freeze base", "LoRA r4", "LoRA r4, lr 1e-3", "full fine-tune", "layer-wise decay")


def _lora_paths(workspace) -> list[str]:
    """The base layers the LoRA lever adapts: its convolutions, or every Dense / EinsumDense."""
    from models.lora import lora_targets, supports_lora

    targets = lora_targets(workspace.tree.layer(workspace.base_path), "dense")
    if targets:  # the attention base: q, k, v, output, feed-forward and patch projections
        return [workspace.tree.path_of(layer) for layer in targets]
    paths = workspace.tree.base_layer_paths(workspace.base_path)
    return [path for path in paths if supports_lora(workspace.tree.layer(path))]


def run_lever(model_key: str, lever: str) -> dict:
    """Trains one lever on one bundled base from the pretrained weights; returns its numbers."""
    import keras

    from models.catalogue import bundled_template
    from models.datasets import load_bundled_dataset
    from models.layer_rates import LayerRates
    from models.lora import LoraSetting
    from models.training import JobState, TrainingConfig
    from models.workspace import Workspace

    keras.utils.set_random_seed(0)
    workspace = Workspace(bundled_template(model_key), load_bundled_dataset("digits_5_9"))
    base = workspace.base_path
    config = TrainingConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=1e-2, seed=0)
    if lever == "freeze base":
        workspace.bulk_action("freeze_base")
    elif lever.startswith("LoRA r4"):
        if lever.endswith("1e-3"):
            config = TrainingConfig(
                epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=1e-3, seed=0
            )
        workspace.set_lora(dict.fromkeys(_lora_paths(workspace), LoraSetting(LORA_RANK)))
        workspace.bulk_action("freeze_base")
        for path in workspace.lora_plan():
            workspace.tree.set_frozen(path, False)  # adapters train; FreezeLab keeps kernels
    elif lever == "full fine-tune":
        config = TrainingConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=1e-3, seed=0)
    else:
        rates = LayerRates({base: 0.1}, decay_factor=0.5, layers_per_block=2, base_path=base)
        config = TrainingConfig(
            epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=1e-2, seed=0, layer_rates=rates
        )
    run = workspace.start_run(config, background=False)
    progress = run.job.progress()
    if progress.state is not JobState.FINISHED:
        raise RuntimeError(f"{model_key} / {lever}: {progress.message}")
    drift = run.job.drift_frame()
    rows = drift[drift.layer_path.str.startswith(base + "/")]
    # A LoRA layer's motion is its effective kernel's (its "weights" include the adapters).
    lora = set(rows.layer_path[rows.kind == "effective_kernel"])
    chosen = (rows.kind == "effective_kernel") | (
        (rows.kind == "weights") & ~rows.layer_path.isin(lora)
    )
    final = rows[chosen].groupby("layer_path").tail(1)
    return {
        "model": model_key,
        "lever": lever,
        "trainable_params": run.counts.trainable,
        "seconds_per_epoch": progress.elapsed_seconds / max(1, progress.epoch),
        "validation_accuracy": progress.history["val_accuracy"][-1],
        "pretraining_accuracy": run.pretraining_accuracy,
        "max_base_drift": float(final.relative_change.max()) if len(final) else 0.0,
        "proof": run.job.proof().message(),
    }


def markdown(rows: list[dict]) -> str:
    """The README table: one line per base and lever."""
    lines = [
        "| Base | Lever | Trainable params | s / epoch | Digits 5-9 val. acc. | "
        "Digits 0-4 acc. after | Max base drift |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        before = row["pretraining_accuracy"]
        lines.append(
            f"| {row['model']} | {row['lever']} | {row['trainable_params']:,} | "
            f"{row['seconds_per_epoch']:.2f} | {row['validation_accuracy']:.3f} | "
            f"{'n/a' if before is None else f'{before:.3f}'} | {row['max_base_drift']:.3g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    arguments = parser.parse_args()
    from models.catalogue import BUNDLED_MODEL_KEYS

    rows = [run_lever(key, lever) for key in BUNDLED_MODEL_KEYS for lever in LEVERS]
    if arguments.markdown:
        print(markdown(rows))
    results = []
    for row in rows:
        name = f"levers_{row['model'].removeprefix('bundled_digits_')}_{row['lever']}"
        accuracy = row["validation_accuracy"]
        results.append(
            BenchmarkResult(
                name=name.replace(" ", "_").replace("-", "_"),
                measured=None if math.isnan(accuracy) else accuracy,
                unit="val acc",
                target="reported",
                met=None,
                details=row,
            )
        )
    report(results)


if __name__ == "__main__":
    main()
