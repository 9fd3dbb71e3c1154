"""Pitfall 1: changing `trainable` after `compile()` without recompiling, measured both ways.

Both runs train everything for one epoch (which builds Keras's training step with every layer
trainable), freeze the pretrained base, and train two more epochs: the wrong run reuses the
old `compile()`, the right run compiles again. The bitwise check shows which one really froze.

What the wrong run does depends on the Keras version and backend (see
`models.keras_version.VERSION_NOTES["stale_compile"]`): the verdict is read from the
measurement, and anything Keras said (a warning, a refusal) is kept in `keras_messages`.

Example:
>>> wrong, right = run(seed=0)  # Keras 3.15.1 on TensorFlow
>>> wrong.verification.all_unchanged, right.verification.all_unchanged
(False, True)
"""

from __future__ import annotations

import dataclasses
import warnings

from models.pitfalls.results import FINE, NOTE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_PATH,
    LabRun,
    accuracy_measurement,
    copy_values,
    final_drift,
    short_path,
)

PITFALL = Pitfall(
    key="stale_compile",
    number=1,
    title="Changing `trainable` after `compile()` without recompiling",
    explanation=(
        "Keras decides which weights the optimizer updates when the training step is "
        "built, after `compile()`. If you train, then set `trainable = False` and train "
        "again without calling `compile()` once more, what happens depends on the Keras "
        "version and backend: the old training step may keep updating the layers you just "
        "froze (their flag says frozen, their weights still move), Keras may warn, or it "
        "may refuse to train. The wrong run below measures what the installed Keras does, "
        "and shows anything Keras said."
    ),
    what_to_look_at=(
        "Both runs first train everything for one epoch, then freeze the pretrained "
        "base and train two more epochs. Look at the dashed grey lines (the frozen "
        "layers): without the recompile they leave zero; with it they stay flat, and "
        "the bitwise check passes."
    ),
    fix="Call `model.compile(...)` again after every change of `trainable`.",
    version_note="stale_compile",
)


def _keras_warnings(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """The warnings Keras itself raised, verbatim, each once, in order."""
    messages: list[str] = []
    for warning in caught:
        text = str(warning.message)
        from_keras = "keras" in str(warning.filename)
        if from_keras and issubclass(warning.category, UserWarning) and text not in messages:
            messages.append(text)
    return tuple(messages)


def _warning_words(messages: tuple[str, ...]) -> str:
    if not messages:
        return " Keras gave no warning."
    return f' Keras warned: "{messages[0][:160]}..."'


def _variant(seed: int, recompile: bool) -> VariantResult:
    run = LabRun(seed)
    run.train(epochs=1, measure=False)  # builds Keras's training step with every layer trainable
    run.tree.set_frozen(BASE_PATH, True)
    refusal = ""
    before = copy_values(run.model.weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            history = run.train(epochs=2, recompile=recompile)
        except ValueError as error:  # e.g. JAX on Keras 3.15.1 refuses the stale optimizer
            refusal = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            history = {}
    keras_warnings = _keras_warnings(caught)
    messages = keras_warnings + ((refusal,) if refusal else ())
    if refusal and not _readable(run.model.weights):
        # Measured on JAX: the failed fit leaves the model's variables without values.
        for variable, value in zip(run.model.weights, before, strict=True):
            variable.assign(value)
        messages += (
            "(FreezeLab: after this error the model's variables had no values left; their "
            "values from before the fit were put back to measure them.)",
        )
    verification = run.recorder.verify()
    frozen_rows = final_drift(run.recorder.frame(), "weights")
    frozen_rows = frozen_rows[frozen_rows["layer_path"].isin(verification.changed_paths)]
    max_change = float(frozen_rows["max_abs_change"].max()) if len(frozen_rows) else 0.0
    num_changed, num_checked = len(verification.changed_paths), verification.num_checked
    if refusal:
        verdict = (
            f"Keras refused to train with the stale compile ({refusal}). Nothing moved "
            f"silently ({num_changed} of {num_checked} frozen layers changed)."
        )
        status = NOTE
    elif num_changed:
        worst = frozen_rows.sort_values("max_abs_change").iloc[-1]["layer_path"]
        verdict = (
            f"{num_changed} of {num_checked} 'frozen' layers moved; most: "
            f"'{short_path(worst)}', max |dW| = {max_change:.4g}." + _warning_words(keras_warnings)
        )
        status = PROBLEM
    else:
        verdict = f"All {num_checked} frozen layers are bitwise unchanged."
        if not recompile:
            verdict += _warning_words(keras_warnings)
        status = FINE
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
        Measurement(
            "Keras warnings",
            float(len(keras_warnings)),
            str(len(keras_warnings)),
            "Warnings Keras raised during the second fit (shown below the chart).",
        ),
        accuracy_measurement(history) if history else _not_trained(),
    )
    result = run.result(
        label="Right: recompiled" if recompile else "Wrong: no recompile",
        description=(
            "Trained 1 epoch, froze the base, "
            + ("called compile() again, " if recompile else "did NOT recompile, ")
            + "trained 2 more epochs."
        ),
        status=status,
        verdict=verdict,
        measurements=measurements,
        chart_kind="weights",
    )
    return dataclasses.replace(result, keras_messages=messages)


def _readable(variables: list) -> bool:
    """Whether every variable still holds a value (a failed JAX fit can leave them empty)."""
    try:
        for variable in variables:
            variable.numpy()
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _not_trained() -> Measurement:
    return Measurement(
        "Validation accuracy",
        float("nan"),
        "not trained",
        "Keras refused the second fit, so there is no accuracy after it.",
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
