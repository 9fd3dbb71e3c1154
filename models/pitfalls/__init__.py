"""Run the pitfall lab: each freezing mistake done the wrong way and the right way, measured.

Every pitfall trains the bundled pretrained feature extractor (three Conv2D + BatchNormalization
blocks, pretrained on digits 0-4) with a new head on the bundled digits 5-9, twice or three
times from identical weights (same seed, same data split, same batch order), once the wrong way
and once the right way, and reports what really happened: per-layer drift from
`models.drift.DriftRecorder`, the bitwise check of the frozen layers, and a few key numbers.

The verdicts are computed from the measurement, never written in advance. The explanations
state what Keras 3.15 (TensorFlow backend) really does, which in two places differs from the
folklore:

- A child set back to `trainable=True` under a frozen *nested* model IS trained by `fit` on the
  outer model; only a frozen *top* model stops it.
- Calling a base with `base(x, training=False)` does not keep its BatchNormalization layers in
  inference mode during `fit` (keras-team/keras#20285); freezing them does.

One owner for each thing:

- `results`: the value objects (`Pitfall`, `Measurement`, `VariantResult`, `PitfallResult`)
  and the statuses.
- `runner`: the lab's model, data, compile and fit, and `LabRun`, which does them once for
  every variant and packs the evidence.
- `stale_compile`, `batch_norm`, `early_fine_tuning` (with `two_phase_fine_tune`),
  `child_under_frozen_parent`, `shared_layer` (one base under two models), `save_and_load`
  (which flags survive `.keras`, `load_weights`, `clone_model`, `from_config`; with
  `measure_routes`), `custom_loop` (a `GradientTape` / `jax.grad` loop over `model.weights`),
  `training_false`, and three LoRA traps: `lora_parent_unfreeze` (`trainable = True` on a
  parent re-enables the LoRA kernels), `lora_save_reload` (a `.keras` file keeps the merged
  kernel, and the loaded adapters are zero and never move), `lora_small_cnn` (LoRA against
  head-only and full fine-tuning on the small bundled CNN): one experiment each, its texts and
  its runs.
- `lora_lab`: the lab model with LoRA adapters on the base's convs, and LoRA's counts and
  checks shared by the three LoRA experiments.
- `lab`: the registry `PITFALLS` in order and `run_pitfall`.

Example:
>>> result = run_pitfall("stale_compile", seed=0)
>>> result.wrong.verdict
"6 of 6 'frozen' layers moved; most: 'feature_extractor/batch_norm3', max |dW| = 0.1793."
>>> result.right.verification.all_unchanged
True
"""

from models.pitfalls.child_under_frozen_parent import CHILD_NAME
from models.pitfalls.early_fine_tuning import (
    EARLY_EPOCHS,
    EARLY_LEARNING_RATE,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LEARNING_RATE,
    HEAD_EPOCHS,
    two_phase_fine_tune,
)
from models.pitfalls.lab import PITFALLS, run_pitfall
from models.pitfalls.results import (
    FINE,
    NOTE,
    PROBLEM,
    STATUSES,
    SURPRISE,
    Measurement,
    Pitfall,
    PitfallResult,
    VariantResult,
)
from models.pitfalls.runner import (
    BASE_NAME,
    BASE_PATH,
    BATCH_SIZE,
    DRIFT_EVERY_BATCHES,
    HEAD_LEARNING_RATE,
    MODEL_NAME,
    PRETRAINED_TASK,
    TASK,
    VALIDATION_FRACTION,
    LabRun,
    base_drift,
    build_lab_model,
    compile_model,
    evaluate,
    final_drift,
    fit_model,
    original_task_accuracy,
    pretrained_base,
    task_split,
)

__all__ = [
    "BASE_NAME",
    "BASE_PATH",
    "BATCH_SIZE",
    "CHILD_NAME",
    "DRIFT_EVERY_BATCHES",
    "EARLY_EPOCHS",
    "EARLY_LEARNING_RATE",
    "FINE",
    "FINE_TUNE_EPOCHS",
    "FINE_TUNE_LEARNING_RATE",
    "HEAD_EPOCHS",
    "HEAD_LEARNING_RATE",
    "MODEL_NAME",
    "NOTE",
    "PITFALLS",
    "PRETRAINED_TASK",
    "PROBLEM",
    "STATUSES",
    "SURPRISE",
    "TASK",
    "VALIDATION_FRACTION",
    "LabRun",
    "Measurement",
    "Pitfall",
    "PitfallResult",
    "VariantResult",
    "base_drift",
    "build_lab_model",
    "compile_model",
    "evaluate",
    "final_drift",
    "fit_model",
    "original_task_accuracy",
    "pretrained_base",
    "run_pitfall",
    "task_split",
    "two_phase_fine_tune",
]
