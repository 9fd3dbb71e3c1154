"""Pitfall 10: saving a LoRA model as `.keras`, loading it and fine-tuning on: dead adapters.

A source model gets LoRA adapters (rank 4) on the base's three convs, its BatchNormalization
frozen, and trains its adapters and head for two epochs; then it is saved as `.keras`. Both
runs load that file with `keras.models.load_model` and train two more epochs:

- wrong: as loaded. Keras saved the merged kernel (`kernel + scale * a @ b`) and rebuilt each
  layer with LoRA from the config's `lora_rank`, then set BOTH adapter matrices to zero. With
  `a = 0` and `b = 0` each one's gradient is zero, so the adapters never move again, although
  Keras still lists them in `trainable_weights`;
- right: the LoRA layers' own variables (unmerged kernel, `lora_kernel_a`, `lora_kernel_b`)
  were saved next to the file (`save_lora_variables`) and put back after loading
  (`restore_lora_variables`), so the adapters train on.

What is measured: the adapters' values right after loading, the predictions against the
saved model's, which variables moved during the further training (bitwise), and Keras's own
trainable count against the parameters that really moved.

Example:
>>> wrong, right = run(seed=0)
>>> wrong.numbers["Adapters that moved"], right.numbers["Adapters that moved"]
(0.0, 6.0)
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np

from models.pitfalls.lora_lab import (
    LORA_PATHS,
    LORA_RANK,
    all_adapters,
    build_lora_lab_model,
    lora_kernels,
    num_params,
    restore_lora_variables,
    save_lora_variables,
)
from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    HEAD_LEARNING_RATE,
    LabRun,
    accuracy_measurement,
    compile_model,
    copy_values,
    evaluate,
    fit_model,
    moved,
    task_split,
)
from models.tree import LayerTree

SOURCE_EPOCHS = 2
FURTHER_EPOCHS = 2
FURTHER_LEARNING_RATE = 1e-3

PITFALL = Pitfall(
    key="lora_save_reload",
    number=10,
    title="A LoRA model saved as `.keras`, loaded and fine-tuned further: dead adapters",
    explanation=(
        "Keras saves a LoRA layer's merged kernel (kernel + scale · a @ b), not its "
        "adapters. Loading the `.keras` file rebuilds each layer with LoRA (its config keeps "
        "`lora_rank`) and then sets both adapter matrices to zero. The loaded model predicts "
        "exactly what the saved one did, and `model.trainable_weights` still lists the "
        "adapters; but with both matrices at zero, each one's gradient is zero (the gradient "
        "of `a` goes through `b` and the other way round), so further training never moves "
        "them: in a layer under LoRA only a bias could still learn (the bundled base's convs "
        "have none). `save_weights` and `load_weights` drop the adapters the same way. A "
        "Keras maintainer describes the merge on saving as intended (keras-team/keras#23244)."
    ),
    what_to_look_at=(
        "'Adapters after loading' (their largest absolute value: 0 means zeroed), 'Adapters "
        "that moved' during the further training, and Keras's 'Trainable params' against "
        "'Trainable params that moved'. The chart shows each LoRA layer's effective kernel: "
        "flat when the adapters are dead. The accuracy can stay close (the head still "
        "learns, and on these easy digits that may be enough); the adapters you meant to "
        "fine-tune have simply stopped."
    ),
    fix=(
        "To keep training the adapters, save them yourself (each LoRA layer's kernel, "
        "`lora_kernel_a` and `lora_kernel_b`) and put them back after loading. To keep the "
        "result instead, merge it into a model without adapters "
        "(`models.lora.copy_weights_merging_adapters`) and fine-tune or freeze that."
    ),
)


def _train_source(seed: int) -> keras.Model:
    """The saved model: LoRA on the convs, BatchNorm frozen, adapters and head trained."""
    model = build_lora_lab_model(seed)
    LayerTree(model).freeze_batch_norm()
    compile_model(model, HEAD_LEARNING_RATE)
    fit_model(model, seed, epochs=SOURCE_EPOCHS)
    return model


def _largest(values: list[np.ndarray]) -> float:
    return max((float(np.max(np.abs(value))) for value in values), default=0.0)


def _verdict(
    adapters_at_load: float, adapters_moved: int, num_adapters: int, params: int, moved: int
) -> str:
    loaded = (
        "both adapters of every LoRA layer are zero"
        if adapters_at_load == 0
        else f"the adapters hold their trained values (max |value| = {adapters_at_load:.3g})"
    )
    return (
        f"After loading, {loaded}. Further training moved {adapters_moved} of {num_adapters} "
        f"adapter matrices; of the {params:,} params Keras lists as trainable, {moved:,} moved."
    )


def _measurements(
    adapters_at_load: float,
    prediction_change: float,
    adapters_moved: int,
    num_adapters: int,
    kernels_moved: int,
    params: int,
    params_moved: int,
    loaded_accuracy: float,
    history: dict[str, list[float]],
) -> tuple[Measurement, ...]:
    return (
        Measurement(
            "Adapters after loading",
            adapters_at_load,
            "all zero" if adapters_at_load == 0 else f"max |value| = {adapters_at_load:.3g}",
            "Largest absolute value in lora_kernel_a and lora_kernel_b when training resumes.",
        ),
        Measurement(
            "Prediction change after loading",
            prediction_change,
            f"{prediction_change:.3g}",
            "max |p_loaded - p_saved| over the held-out images: 0 means the same function.",
        ),
        Measurement(
            "Adapters that moved",
            float(adapters_moved),
            f"{adapters_moved} of {num_adapters}",
            "Adapter matrices that changed (bitwise) during the further training.",
        ),
        Measurement(
            "LoRA kernels that moved",
            float(kernels_moved),
            f"{kernels_moved} of {len(LORA_PATHS)}",
            "Frozen conv kernels under LoRA that changed (bitwise): 0 is right.",
        ),
        Measurement(
            "Trainable params (Keras)",
            float(params),
            f"{params:,}",
            "Sum over `model.trainable_weights` when training resumes.",
        ),
        Measurement(
            "Trainable params that moved",
            float(params_moved),
            f"{params_moved:,}",
            "Sum over the trainable variables that changed (bitwise) during the further "
            "training: the parameters that really learned.",
        ),
        Measurement(
            "Validation accuracy when loaded",
            loaded_accuracy,
            f"{loaded_accuracy:.1%}",
            "Accuracy on held-out digits 5-9 right after loading, before further training.",
        ),
        accuracy_measurement(history),
    )


def _variant(
    seed: int, keras_path: str, adapters_path: str | None, saved: np.ndarray
) -> VariantResult:
    model = keras.models.load_model(keras_path)
    if adapters_path is not None:
        restore_lora_variables(model, adapters_path)
    run = LabRun(seed, model=model)
    _, _, x_validation, y_validation = task_split(seed)
    prediction_change = float(
        np.max(np.abs(np.asarray(keras.ops.convert_to_numpy(model(x_validation))) - saved))
    )
    loaded_accuracy = evaluate(model, x_validation, y_validation)[1]
    kernels, adapters = lora_kernels(model), all_adapters(model)
    trainable = list(model.trainable_weights)
    params = num_params(trainable)
    kernels_before, adapters_before = copy_values(kernels), copy_values(adapters)
    trainable_before = copy_values(trainable)
    adapters_at_load = _largest(adapters_before)
    history = run.train(FURTHER_EPOCHS, FURTHER_LEARNING_RATE)
    adapters_moved = sum(moved(adapters, adapters_before))
    kernels_moved = sum(moved(kernels, kernels_before))
    params_moved = num_params(
        [
            v
            for v, changed in zip(trainable, moved(trainable, trainable_before), strict=True)
            if changed
        ]
    )
    measurements = _measurements(
        adapters_at_load,
        prediction_change,
        adapters_moved,
        len(adapters),
        kernels_moved,
        params,
        params_moved,
        loaded_accuracy,
        history,
    )
    if adapters_path is None:
        label = "Wrong: loaded and trained on"
        way = "trained it as loaded"
    else:
        label = "Right: adapters kept next to the file"
        way = "put back the LoRA variables saved next to it, trained on"
    return run.result(
        label=label,
        description=(
            f"LoRA rank {LORA_RANK} on the base's 3 convs, trained {SOURCE_EPOCHS} epochs, "
            f"saved as `.keras`; loaded it with `load_model`, {way} {FURTHER_EPOCHS} epochs "
            f"at lr {FURTHER_LEARNING_RATE:g}."
        ),
        status=PROBLEM if adapters_moved == 0 or kernels_moved else FINE,
        verdict=_verdict(adapters_at_load, adapters_moved, len(adapters), params, params_moved),
        measurements=measurements,
        chart_kind="effective_kernel",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 10: a saved LoRA model loaded and trained on, without and with its adapters.

    The files go to a temporary folder, removed at the end.

    Args:
        seed: Seed of the head's weights, the adapters, the data split and the batch order.

    Returns:
        `(wrong, right)`: "Wrong: loaded and trained on" and "Right: adapters kept next to
        the file".

    Example:
    >>> wrong, right = run(seed=0)
    >>> wrong.numbers["Adapters after loading"]
    0.0
    """
    source = _train_source(seed)
    _, _, x_validation, _ = task_split(seed)
    saved = np.asarray(keras.ops.convert_to_numpy(source(x_validation)))
    with tempfile.TemporaryDirectory(prefix="freezelab_pitfall_") as directory:
        keras_path = os.path.join(directory, "lora.keras")
        adapters_path = os.path.join(directory, "lora_variables.npz")
        source.save(keras_path)
        save_lora_variables(source, adapters_path)
        wrong = _variant(seed, keras_path, None, saved)
        right = _variant(seed, keras_path, adapters_path, saved)
    return wrong, right
