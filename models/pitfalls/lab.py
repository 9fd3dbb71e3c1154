"""List the pitfall lab's experiments in order (`PITFALLS`) and run one both ways (`run_pitfall`).

Each experiment module owns its texts (`PITFALL`) and its runs (`run(seed)`); this module only
puts them in the lab's order and checks the request.

Example:
>>> list(PITFALLS)
['stale_compile', 'batch_norm', 'early_fine_tuning', 'child_under_frozen_parent', 'shared_layer',
 'save_and_load', 'custom_loop', 'training_false', 'lora_parent_unfreeze', 'lora_save_reload',
 'lora_small_cnn']
>>> run_pitfall("batch_norm").right.verification.all_unchanged
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from models.keras_version import installed_keras
from models.pitfalls import (
    batch_norm,
    child_under_frozen_parent,
    custom_loop,
    early_fine_tuning,
    lora_parent_unfreeze,
    lora_save_reload,
    lora_small_cnn,
    save_and_load,
    shared_layer,
    stale_compile,
    training_false,
)
from models.pitfalls.results import Pitfall, PitfallResult, VariantResult
from models.validation import check_choice, check_whole_number

_EXPERIMENTS = (
    stale_compile,
    batch_norm,
    early_fine_tuning,
    child_under_frozen_parent,
    shared_layer,
    save_and_load,
    custom_loop,
    training_false,
    lora_parent_unfreeze,
    lora_save_reload,
    lora_small_cnn,
)

PITFALLS: Mapping[str, Pitfall] = MappingProxyType(
    {experiment.PITFALL.key: experiment.PITFALL for experiment in _EXPERIMENTS}
)
_RUNNERS: Mapping[str, Callable[[int], tuple[VariantResult, ...]]] = MappingProxyType(
    {experiment.PITFALL.key: experiment.run for experiment in _EXPERIMENTS}
)


def run_pitfall(key: str, seed: int = 0) -> PitfallResult:
    """Runs one pitfall the wrong way and the right way, from identical weights and data.

    Each variant builds the bundled pretrained base with a new head seeded by `seed`, trains on
    the bundled digits 5-9 (80/20 split by `seed`, same batch order) and is measured with a
    `DriftRecorder`. A few seconds per pitfall on 2 CPU cores.

    Args:
        key: One of `PITFALLS`: "stale_compile", "batch_norm", "early_fine_tuning",
            "child_under_frozen_parent", "shared_layer", "save_and_load", "custom_loop"
            (TensorFlow and JAX only), "training_false", "lora_parent_unfreeze",
            "lora_save_reload", "lora_small_cnn".
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        A `PitfallResult`: `.wrong`, `.right` and `.extra` variants with verdicts and drift
        (for "lora_small_cnn": LoRA, head only, then full fine-tuning).

    Raises:
        ValueError: For an unknown key or a negative seed, or "custom_loop" on a backend
            other than TensorFlow or JAX.

    Example:
    >>> result = run_pitfall("batch_norm")
    >>> result.right.verification.all_unchanged
    True
    """
    check_choice("pitfall", key, PITFALLS)
    seed = check_whole_number("seed", seed, 0)
    started = time.perf_counter()
    variants = _RUNNERS[key](seed)
    return PitfallResult(
        key=key,
        title=PITFALLS[key].title,
        seed=seed,
        variants=tuple(variants),
        seconds=time.perf_counter() - started,
        environment=installed_keras(),
    )
