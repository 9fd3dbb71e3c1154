"""The bounds of every training setting, in one place: TrainingConfig, links and widgets use them.

Each range is `(low, high)`, both included. `TrainingConfig` refuses values outside them, an
instructor link ignores them with a notice, and the dashboard's widgets offer exactly them, so
a setting one of them accepts is accepted by all (a share link of any run's settings works).

The bounds are those `TrainingConfig` has always accepted, so no stored run or run config
becomes unreadable; in particular a schedule's run holds the epochs of all its phases.
"""

from __future__ import annotations

EPOCHS_RANGE: tuple[int, int] = (1, 1000)
"""Epochs of a run, a phase, or a whole schedule (its phases together)."""

BATCH_SIZE_RANGE: tuple[int, int] = (1, 65_536)
"""Samples per gradient step (the app lowers it to fit a small dataset)."""

LEARNING_RATE_RANGE: tuple[float, float] = (1e-6, 10.0)
"""Optimizer step size; typical: 1e-3 for a new head, 1e-5 for fine-tuning."""

VALIDATION_FRACTION_RANGE: tuple[float, float] = (0.0, 0.9)
"""Share of the data held out for validation (0: none); see `train_validation_split`."""

PROBE_BATCHES_RANGE: tuple[int, int] = (1, 1_000)
"""How many batches the probe may run (a few are enough: it averages their gradients)."""

SEED_RANGE: tuple[int, int] = (0, 2**31 - 1)
"""Seed for the split, the shuffling, dropout and new weights."""

DRIFT_EVERY_BATCHES_RANGE: tuple[int, int] = (1, 10**9)
"""Drift recorded every this many batches (besides epoch ends)."""

TOP_LAYERS_RANGE: tuple[int, int] = (0, 10_000)
"""Base layers with weights left trainable by "unfreeze the top N" (0: all frozen)."""

UNFREEZE_STEPS_RANGE: tuple[int, int] = (1, 20)
"""Unfreezing steps of a gradual schedule, after its head phase."""

LAYERS_PER_STEP_RANGE: tuple[int, int] = (1, TOP_LAYERS_RANGE[1] // UNFREEZE_STEPS_RANGE[1])
"""Base layers added at each gradual unfreezing step (steps x layers stays in TOP_LAYERS_RANGE)."""

LORA_RANK_RANGE: tuple[int, int] = (1, 512)
"""Rank of a LoRA adapter (the inner size of its two matrices); typical: 4 to 16."""

LORA_ALPHA_RANGE: tuple[float, float] = (0.01, 4096.0)
"""LoRA's scale numerator: the adapter adds `(alpha / rank) * a @ b`; Keras's default: the rank."""

MULTIPLIER_RANGE: tuple[float, float] = (0.0, 100.0)
"""A layer's learning-rate multiplier: 0 stops its updates, 1 is the base rate."""

DECAY_FACTOR_RANGE: tuple[float, float] = (0.0, 1.0)
"""Layer-wise decay: each block below the top one learns this factor times the block above."""

LAYERS_PER_BLOCK_RANGE: tuple[int, int] = (1, 10_000)
"""Base layers with weights that share one decay step (e.g. 2 for Conv + BatchNorm pairs)."""

MAX_MULTIPLIER_PATHS: int = 10_000
"""Most layer paths one `LayerRates` may name (a stored or shared setting stays small)."""

MAX_LAYER_PATH_LENGTH: int = 2_000
"""Longest layer path accepted (as in the run config's frozen paths)."""

__all__ = [
    "BATCH_SIZE_RANGE",
    "DECAY_FACTOR_RANGE",
    "DRIFT_EVERY_BATCHES_RANGE",
    "EPOCHS_RANGE",
    "LAYERS_PER_BLOCK_RANGE",
    "LAYERS_PER_STEP_RANGE",
    "LEARNING_RATE_RANGE",
    "LORA_ALPHA_RANGE",
    "LORA_RANK_RANGE",
    "MAX_LAYER_PATH_LENGTH",
    "MAX_MULTIPLIER_PATHS",
    "MULTIPLIER_RANGE",
    "SEED_RANGE",
    "TOP_LAYERS_RANGE",
    "UNFREEZE_STEPS_RANGE",
    "VALIDATION_FRACTION_RANGE",
]
