"""Pitfall 9: `trainable = True` on a parent of LoRA layers turns LoRA into full fine-tuning.

All three runs put LoRA adapters (rank 4) on the base's three Conv2D layers and follow the
two-phase recipe: the base frozen while the head trains one epoch, then the base unfrozen
(its BatchNormalization layers kept frozen) to train the adapters two epochs. They differ in
how the base is frozen and unfrozen:

- wrong: plain Keras, `base.trainable = False`, then `base.trainable = True`. Keras's setter
  makes every own variable of every layer below trainable, the LoRA kernels included;
- right: FreezeLab's `LayerTree.set_frozen`, which puts each LoRA kernel back to frozen after
  every flag it writes (`models.lora.keep_adapted_variable_frozen`);
- extra: plain Keras, with the kernels re-frozen by hand after the unfreeze. It first tries
  `layer.kernel.trainable = False` and measures whether that did anything.

What is measured: Keras's own `trainable_weights` count against what LoRA should train, and a
bitwise comparison of each LoRA kernel before and after the fine-tuning fit.

Example:
>>> wrong, right, by_hand = run(seed=0)
>>> wrong.numbers["LoRA kernels that moved"], right.numbers["LoRA kernels that moved"]
(3.0, 0.0)
"""

from __future__ import annotations

import dataclasses

from models.drift import VerificationResult
from models.pitfalls.lora_lab import (
    LORA_PATHS,
    LORA_RANK,
    all_adapters,
    build_lora_lab_model,
    kernel_checks,
    lora_budget,
    lora_kernels,
    trainable_params,
)
from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_NAME,
    BASE_PATH,
    HEAD_LEARNING_RATE,
    LabRun,
    accuracy_measurement,
    copy_values,
    max_change,
    moved,
)

HEAD_EPOCHS = 1
LORA_EPOCHS = 2
LORA_LEARNING_RATE = 1e-3

WRONG = "keras"
RIGHT = "freezelab"
BY_HAND = "keras_refrozen"
WAYS = (WRONG, RIGHT, BY_HAND)

PITFALL = Pitfall(
    key="lora_parent_unfreeze",
    number=9,
    title="LoRA silently becomes full fine-tuning after `trainable = True` on a parent",
    explanation=(
        "`layer.enable_lora(rank)` freezes the layer's kernel and adds two small trainable "
        "adapter matrices. But Keras's `trainable` setter makes every own variable of a "
        "layer, and of every layer below it, trainable again, the LoRA kernel included. The "
        "usual two-phase recipe (freeze the base, train the head, then `base.trainable = "
        "True`) therefore re-enables the kernels: the run still looks like LoRA, but it is "
        "full fine-tuning. On JAX any assignment `trainable = True` does it; on TensorFlow "
        "only a change from False to True (TensorFlow skips assigning a flag its current "
        "value). In plain Keras, re-freeze the kernel variable itself after every "
        "`trainable` assignment: `for v in layer.weights: if v.name == 'kernel': "
        "v.trainable = False`, then recompile. Measured: `layer.kernel.trainable = False` "
        "does nothing, silently, because on a LoRA layer `layer.kernel` is a tensor computed "
        "on the fly (kernel + scale · a @ b), not the variable; and `enable_lora` cannot be "
        "called again (Keras refuses a second call)."
    ),
    what_to_look_at=(
        "'Trainable params (Keras)' (Keras's own `model.trainable_weights`) against what "
        "LoRA should train (the adapters and the head), and 'LoRA kernels that moved' (a "
        "bitwise comparison of each conv kernel before and after the fine-tuning fit). The "
        "third run shows which plain-Keras repair works. The wrong run may even reach a "
        "higher accuracy: it trained about seven times more parameters. That is the point: "
        "it was not LoRA (its memory, its optimizer state, and a pretrained kernel kept "
        "intact), whatever the code said."
    ),
    fix=(
        "After any `trainable` change on a LoRA model, put every LoRA kernel back to "
        "`trainable = False` (FreezeLab's freezing does it for you) and check "
        "`model.trainable_weights` before training."
    ),
)


def _freeze_base(run: LabRun, way: str) -> None:
    if way == RIGHT:
        run.tree.set_frozen(BASE_PATH, True)
    else:
        run.tree.layer(BASE_PATH).trainable = False


def _unfreeze_base(run: LabRun, way: str) -> str:
    """Unfreezes the base, BatchNorm kept frozen; returns what re-freezing by hand did."""
    if way == RIGHT:
        run.tree.set_frozen(BASE_PATH, False)
        run.tree.freeze_batch_norm()
        return ""
    run.tree.layer(BASE_PATH).trainable = True
    for path in run.tree.batch_norm_paths():
        run.tree.layer(path).trainable = False
    if way != BY_HAND:
        return ""
    layers = [run.tree.layer(path) for path in LORA_PATHS]
    try:
        for layer in layers:
            layer.kernel.trainable = False  # the folklore repair: measured below
        outcome = "raised nothing"
    except (AttributeError, TypeError) as error:
        outcome = f"raised {type(error).__name__}"
    still = sum(bool(kernel.trainable) for kernel in lora_kernels(run.model))
    for layer in layers:
        for variable in layer.weights:
            if variable.name == "kernel":
                variable.trainable = False  # the repair that works
    return (
        f"`layer.kernel.trainable = False` {outcome}; after it {still} of {len(layers)} "
        "kernels were still trainable."
    )


def _verdict(params: int, budget: int, num_moved: int, num_kernels: int, change: float) -> str:
    if num_moved or params > budget:
        return (
            f"The unfreeze made the LoRA kernels trainable again: Keras trains {params:,} "
            f"params instead of LoRA's {budget:,}, and {num_moved} of {num_kernels} kernels "
            f"moved (max |dW| = {change:.3g}). This was full fine-tuning, not LoRA."
        )
    return (
        f"Keras trains {params:,} params (LoRA's adapters and the head: {budget:,}); all "
        f"{num_kernels} LoRA kernels are bitwise unchanged."
    )


def _measurements(
    params: int,
    budget: int,
    kernels_trainable: int,
    kernels_moved: int,
    change: float,
    adapters_moved: int,
    num_adapters: int,
    history: dict[str, list[float]],
) -> list[Measurement]:
    num_kernels = len(LORA_PATHS)
    return [
        Measurement(
            "Trainable params (Keras)",
            float(params),
            f"{params:,} (LoRA: {budget:,})",
            "Sum over `model.trainable_weights` when the fine-tuning fit starts; LoRA should "
            "train the adapters and the head only.",
        ),
        Measurement(
            "LoRA kernels Keras trains",
            float(kernels_trainable),
            f"{kernels_trainable} of {num_kernels}",
            "Conv kernels under LoRA whose variable is trainable when the fit starts.",
        ),
        Measurement(
            "LoRA kernels that moved",
            float(kernels_moved),
            f"{kernels_moved} of {num_kernels}",
            "Conv kernels under LoRA that differ bitwise after the fine-tuning fit.",
        ),
        Measurement(
            "Largest change in a LoRA kernel",
            change,
            f"{change:.3g}",
            "max |W_end - W_start| over the LoRA kernels; 0 means untouched.",
        ),
        Measurement(
            "Adapters that moved",
            float(adapters_moved),
            f"{adapters_moved} of {num_adapters}",
            "Adapter matrices (lora_kernel_a, lora_kernel_b) that changed during the fit.",
        ),
        accuracy_measurement(history),
    ]


_LABELS = {
    WRONG: "Wrong: plain `base.trainable = True`",
    RIGHT: "Right: FreezeLab's freezing",
    BY_HAND: "Plain Keras, kernels re-frozen by hand",
}
_DESCRIPTIONS = {
    WRONG: "`base.trainable = False`, trained the head, then `base.trainable = True`",
    RIGHT: "`tree.set_frozen(base, True)`, trained the head, then `tree.set_frozen(base, False)`",
    BY_HAND: (
        "`base.trainable = False`, trained the head, `base.trainable = True`, tried "
        "`layer.kernel.trainable = False`, then set `trainable = False` on each LoRA layer's "
        "'kernel' variable from `layer.weights`"
    ),
}


def _variant(seed: int, way: str) -> VariantResult:
    run = LabRun(seed, model=build_lora_lab_model(seed))
    _freeze_base(run, way)
    run.train(HEAD_EPOCHS, HEAD_LEARNING_RATE, measure=False)
    attempt = _unfreeze_base(run, way)
    kernels, adapters = lora_kernels(run.model), all_adapters(run.model)
    params, budget = trainable_params(run.model), lora_budget(run.model)
    kernels_trainable = sum(bool(kernel.trainable) for kernel in kernels)
    kernels_before, adapters_before = copy_values(kernels), copy_values(adapters)
    history = run.train(LORA_EPOCHS, LORA_LEARNING_RATE)
    kernels_moved = sum(moved(kernels, kernels_before))
    change = max_change(kernels, kernels_before)
    adapters_moved = sum(moved(adapters, adapters_before))
    measurements = _measurements(
        params,
        budget,
        kernels_trainable,
        kernels_moved,
        change,
        adapters_moved,
        len(adapters),
        history,
    )
    if way == WRONG:
        measurements.append(_unchanged_true_measurement(seed))
    verdict = _verdict(params, budget, kernels_moved, len(kernels), change)
    if attempt:
        verdict += f" ({attempt})"
    result = run.result(
        label=_LABELS[way],
        description=(
            f"LoRA rank {LORA_RANK} on the base's 3 convs; {_DESCRIPTIONS[way]} "
            f"(BatchNorm kept frozen) and trained {LORA_EPOCHS} epochs at lr "
            f"{LORA_LEARNING_RATE:g}."
        ),
        status=PROBLEM if kernels_moved or params > budget else FINE,
        verdict=verdict,
        measurements=tuple(measurements),
        chart_kind="weights",
    )
    # The recorder checks a LoRA kernel only while it stays frozen; check every one here.
    recorded = result.verification.checks
    checked = {check.path for check in recorded}
    own = kernel_checks(LORA_PATHS, kernels, kernels_before)
    extra = tuple(check for check in own if check.path not in checked)
    return dataclasses.replace(result, verification=VerificationResult(recorded + extra))


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 9: the base unfrozen by plain Keras, by FreezeLab, and repaired by hand.

    Args:
        seed: Seed of the head's weights, the adapters, the data split and the batch order.

    Returns:
        `(wrong, right, by_hand)`. Each one's `verification` includes the bitwise check of
        the three LoRA kernels (`LayerCheck.lora_kernel`).

    Example:
    >>> wrong, right, by_hand = run(seed=0)
    >>> right.numbers["Trainable params (Keras)"]
    2249.0
    """
    return tuple(_variant(seed, way) for way in WAYS)


def _unchanged_true_measurement(seed: int) -> Measurement:
    """What `base.trainable = True` does on a base that is trainable already (no training).

    TensorFlow skips assigning a flag its current value, so the kernels stay frozen; JAX
    runs the setter, so they become trainable. Measured on the installed backend.
    """
    model = build_lora_lab_model(seed)
    before = trainable_params(model)
    model.get_layer(BASE_NAME).trainable = True
    after = trainable_params(model)
    words = "kernels re-enabled" if after > before else "kernels stayed frozen"
    return Measurement(
        "`trainable = True` on a trainable base",
        float(after),
        f"{before:,} -> {after:,} ({words})",
        "Keras's trainable params right after `enable_lora`, then after assigning "
        "`base.trainable = True` to a base that was never frozen (this backend's behaviour).",
    )
