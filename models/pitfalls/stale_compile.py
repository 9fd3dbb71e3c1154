"""Pitfall 1: changing `trainable` after `compile()` without recompiling, measured both ways.

Both runs train everything for one epoch (which builds Keras's training step with every layer
trainable), freeze the pretrained base, and train two more epochs: the wrong run reuses the
old `compile()`, the right run compiles again. The bitwise check shows which one really froze.

Example:
>>> wrong, right = run(seed=0)
>>> wrong.verification.all_unchanged, right.verification.all_unchanged
(False, True)
"""

from __future__ import annotations

from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import BASE_PATH, LabRun, accuracy_measurement, final_drift, short_path

PITFALL = Pitfall(
    key="stale_compile",
    number=1,
    title="Changing `trainable` after `compile()` without recompiling",
    explanation=(
        "Keras decides which weights the optimizer updates when the training step is "
        "first built, after `compile()`. If you train, then set `trainable = False` "
        "and train again without calling `compile()` once more, the old training step "
        "is reused and keeps updating the layers you just froze. Their flag says "
        "frozen; their weights still move."
    ),
    what_to_look_at=(
        "Both runs first train everything for one epoch, then freeze the pretrained "
        "base and train two more epochs. Look at the dashed grey lines (the frozen "
        "layers): without the recompile they leave zero; with it they stay flat, and "
        "the bitwise check passes."
    ),
    fix="Call `model.compile(...)` again after every change of `trainable`.",
)


def _variant(seed: int, recompile: bool) -> VariantResult:
    run = LabRun(seed)
    run.train(epochs=1, measure=False)  # builds Keras's training step with every layer trainable
    run.tree.set_frozen(BASE_PATH, True)
    history = run.train(epochs=2, recompile=recompile)
    verification = run.recorder.verify()
    frozen_rows = final_drift(run.recorder.frame(), "weights")
    frozen_rows = frozen_rows[frozen_rows["layer_path"].isin(verification.changed_paths)]
    max_change = float(frozen_rows["max_abs_change"].max()) if len(frozen_rows) else 0.0
    num_changed, num_checked = len(verification.changed_paths), verification.num_checked
    if num_changed:
        worst = frozen_rows.sort_values("max_abs_change").iloc[-1]["layer_path"]
        verdict = (
            f"{num_changed} of {num_checked} 'frozen' layers moved; most: "
            f"'{short_path(worst)}', max |dW| = {max_change:.4g}."
        )
    else:
        verdict = f"All {num_checked} frozen layers are bitwise unchanged."
    measurements = (
        Measurement(
            "Frozen layers that moved",
            float(num_changed),
            f"{num_changed} of {num_checked}",
            "Layers whose flag was trainable=False during the run but whose weights changed.",
        ),
        Measurement(
            "Largest change in a frozen layer",
            max_change,
            f"{max_change:.3g}",
            "max |W_end - W_start| over the frozen layers' weights; 0 means untouched.",
        ),
        accuracy_measurement(history),
    )
    return run.result(
        label="Right: recompiled" if recompile else "Wrong: no recompile",
        description=(
            "Trained 1 epoch, froze the base, "
            + ("called compile() again, " if recompile else "did NOT recompile, ")
            + "trained 2 more epochs."
        ),
        status=FINE if not num_changed else PROBLEM,
        verdict=verdict,
        measurements=measurements,
        chart_kind="weights",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 1 without and with the recompile, from identical weights and data.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right)`: "Wrong: no recompile" and "Right: recompiled".

    Example:
    >>> wrong, right = run(seed=0)
    >>> right.numbers["Largest change in a frozen layer"]
    0.0
    """
    return _variant(seed, recompile=False), _variant(seed, recompile=True)
