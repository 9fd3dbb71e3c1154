"""Pitfall 7: a custom training loop that differentiates `model.weights`: freezing protects nothing.

`trainable = False` only changes which variables are listed in `model.trainable_weights`; `fit`
differentiates that list. A hand-written loop chooses its own list. Both runs freeze the
pretrained base and train with the same custom loop, seed, data and batches: the wrong run
differentiates every weight in `model.weights`, the right run only `model.trainable_weights`.
The loop is the one of Keras's guides: `tf.GradientTape` + `optimizer.apply_gradients` on
TensorFlow, `model.stateless_call` + `jax.value_and_grad` + `optimizer.stateless_apply` on JAX.

Example:
>>> wrong, right = run(seed=0)
>>> wrong.verification.all_unchanged, right.verification.all_unchanged
(False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_PATH,
    BATCH_SIZE,
    HEAD_LEARNING_RATE,
    LabRun,
    accuracy_measurement,
    evaluate,
    final_drift,
    short_path,
    task_split,
)
from models.tree import WEIGHTS_KIND, LayerTree

SUPPORTED_BACKENDS = ("tensorflow", "jax")
EPOCHS = 2

PITFALL = Pitfall(
    key="custom_loop",
    number=7,
    title="A custom training loop that differentiates `model.weights`",
    explanation=(
        "`layer.trainable = False` does not lock a variable: it removes the layer's "
        "weights from `model.trainable_weights`, and `fit` only differentiates that list. "
        "In a training loop you write yourself (`tf.GradientTape` on TensorFlow, "
        "`stateless_call` with `jax.grad` on JAX), you choose the list. Take "
        "`model.weights` (or `model.variables`) and the optimizer updates the frozen "
        "layers too, whatever their flag says. BatchNormalization's moving statistics are "
        "state, not weights: both loops leave them out of the differentiated list."
    ),
    what_to_look_at=(
        "Both runs freeze the base and train with the same loop, seed and batches. Left: "
        "the loop differentiates `model.weights`; the frozen base's dashed lines leave "
        "zero and the bitwise check fails. Right: it differentiates "
        "`model.trainable_weights`; the base stays bitwise unchanged."
    ),
    fix=(
        "In a custom loop, differentiate and update `model.trainable_weights` (on JAX, "
        "pass `model.trainable_variables` to `jax.grad` and the rest as state), and "
        "rebuild the loop's variable list after every change of `trainable`."
    ),
)


def check_backend() -> str:
    """Returns Keras's backend when this pitfall supports it.

    Raises:
        ValueError: On a backend other than TensorFlow or JAX.

    Example:
    >>> check_backend()
    'tensorflow'
    """
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            "The custom training loop pitfall runs on the TensorFlow and JAX backends "
            f"(tf.GradientTape, jax.grad); Keras runs on '{backend}'. Start FreezeLab with "
            "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
        )
    return backend


def loop_variables(tree: LayerTree, all_weights: bool) -> tuple[list[keras.Variable], int]:
    """The variables the loop differentiates, and how many of `model.weights` it leaves out.

    Args:
        tree: The model's `LayerTree`.
        all_weights: True takes `model.weights` (the mistake), leaving out state such as
            BatchNormalization's moving statistics and any non-float variable; False takes
            `model.trainable_weights`.

    Returns:
        `(variables, num_left_out)`.
    """
    model = tree.model
    if not all_weights:
        chosen = list(model.trainable_weights)
    else:
        weights = {
            id(variable)
            for path in tree.paths()
            for variable, kind in tree.own_variables(path)
            if kind == WEIGHTS_KIND
        }
        chosen = [
            variable
            for variable in model.weights
            if id(variable) in weights and "float" in str(variable.dtype)
        ]
    return chosen, len(model.weights) - len(chosen)


def _tensorflow_step(
    model: keras.Model,
    variables: Sequence[keras.Variable],
    optimizer: keras.optimizers.Optimizer,
    no_gradient: list[str],
) -> Callable[[np.ndarray, np.ndarray], float]:
    """One `tf.GradientTape` step over `variables` (the variables are updated in place)."""
    import tensorflow as tf

    loss_function = keras.losses.SparseCategoricalCrossentropy()
    optimizer.build(variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_function(y, model(x, training=True))
        gradients = tape.gradient(loss, variables)
        # Known while tracing: a variable the loss does not depend on gets None.
        no_gradient[:] = [v.path for g, v in zip(gradients, variables, strict=True) if g is None]
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        return loss

    # AutoGraph off: the step has no data-dependent Python control flow, and AutoGraph would
    # parse source in the page's thread (see models.drift._compiled_measure).
    compiled = tf.function(step, autograph=False, reduce_retracing=True)
    return lambda x, y: float(compiled(tf.constant(x), tf.constant(y)))


def _jax_step(
    model: keras.Model,
    variables: Sequence[keras.Variable],
    optimizer: keras.optimizers.Optimizer,
) -> Callable[[np.ndarray, np.ndarray], float]:
    """One `stateless_call` + `jax.value_and_grad` step over `variables`, written back after."""
    import jax

    loss_function = keras.losses.SparseCategoricalCrossentropy()
    everything = [*model.trainable_variables, *model.non_trainable_variables]
    num_trainable = len(model.trainable_variables)
    position = {id(variable): index for index, variable in enumerate(everything)}
    chosen = [position[id(variable)] for variable in variables]
    optimizer.build(variables)

    def loss_and_values(chosen_values, values, x, y):
        values = list(values)
        for index, value in zip(chosen, chosen_values, strict=True):
            values[index] = value
        predictions, non_trainable_values = model.stateless_call(
            values[:num_trainable], values[num_trainable:], x, training=True
        )
        return loss_function(y, predictions), [*values[:num_trainable], *non_trainable_values]

    gradient_function = jax.value_and_grad(loss_and_values, has_aux=True)

    @jax.jit
    def step(values, optimizer_values, x, y):
        chosen_values = [values[index] for index in chosen]
        (loss, values), gradients = gradient_function(chosen_values, values, x, y)
        chosen_values, optimizer_values = optimizer.stateless_apply(
            optimizer_values, gradients, chosen_values
        )
        for index, value in zip(chosen, chosen_values, strict=True):
            values[index] = value
        return loss, values, optimizer_values

    state = {
        "values": [variable.value for variable in everything],
        "optimizer": [variable.value for variable in optimizer.variables],
    }

    def run_step(x, y):
        loss, state["values"], state["optimizer"] = step(state["values"], state["optimizer"], x, y)
        for variable, value in zip(everything, state["values"], strict=True):
            variable.assign(value)  # so the drift recorder and evaluation see them
        return float(loss)

    return run_step


def _train(run: LabRun, variables: Sequence[keras.Variable], no_gradient: list[str]) -> None:
    """The custom loop: `EPOCHS` epochs of full batches in a seeded order, drift recorded."""
    backend = check_backend()
    optimizer = keras.optimizers.Adam(HEAD_LEARNING_RATE)
    if backend == "tensorflow":
        step = _tensorflow_step(run.model, variables, optimizer, no_gradient)
    else:
        step = _jax_step(run.model, variables, optimizer)
    x_train, y_train, x_validation, y_validation = task_split(run.seed)
    order = np.random.default_rng(run.seed)
    num_batches = len(x_train) // BATCH_SIZE  # full batches only: one traced step
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_accuracy": []}
    run.recorder.on_train_begin()
    for epoch in range(EPOCHS):
        run.recorder.on_epoch_begin(epoch)
        indices = order.permutation(len(x_train))
        losses = []
        for batch in range(num_batches):
            chosen = indices[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE]
            losses.append(step(x_train[chosen], y_train[chosen]))
            run.recorder.on_train_batch_end(batch)
        run.recorder.on_epoch_end(epoch)
        loss, accuracy = evaluate(run.model, x_validation, y_validation)
        history["loss"].append(float(np.mean(losses)))
        history["val_loss"].append(loss)
        history["val_accuracy"].append(accuracy)
    run.history = history


def _variant(seed: int, all_weights: bool) -> VariantResult:
    check_backend()
    run = LabRun(seed)
    run.tree.set_frozen(BASE_PATH, True)
    variables, num_left_out = loop_variables(run.tree, all_weights)
    no_gradient: list[str] = []
    _train(run, variables, no_gradient)
    verification = run.recorder.verify()
    frozen_rows = final_drift(run.recorder.frame(), "weights")
    frozen_rows = frozen_rows[frozen_rows["layer_path"].isin(verification.changed_paths)]
    max_change = float(frozen_rows["max_abs_change"].max()) if len(frozen_rows) else 0.0
    num_changed, num_checked = len(verification.changed_paths), verification.num_checked
    listed = "model.weights" if all_weights else "model.trainable_weights"
    if num_changed:
        worst = frozen_rows.sort_values("max_abs_change").iloc[-1]["layer_path"]
        verdict = (
            f"The loop differentiated {listed}: {num_changed} of {num_checked} frozen layers "
            f"moved; most: '{short_path(worst)}', max |dW| = {max_change:.4g}."
        )
    else:
        verdict = (
            f"The loop differentiated {listed}: all {num_checked} frozen layers are bitwise "
            "unchanged."
        )
    num_weights = len(run.model.weights)
    if not all_weights:
        left_out = " (the frozen layers' weights and the moving statistics are not in it)"
    elif num_left_out:
        left_out = f" ({num_left_out} state variables left out: the moving statistics)"
    else:
        left_out = ""
    skipped = f" {len(no_gradient)} got no gradient and were skipped." if no_gradient else ""
    measurements = (
        Measurement(
            "Variables differentiated",
            float(len(variables)),
            f"{len(variables)} of {num_weights}",
            f"How many of `model.weights` the loop differentiated and updated{left_out}.",
        ),
        Measurement(
            "Frozen layers that moved",
            float(num_changed),
            f"{num_changed} of {num_checked}",
            "Layers whose flag was trainable=False during the loop but whose weights changed.",
        ),
        Measurement(
            "Largest change in a frozen layer",
            max_change,
            f"{max_change:.3g}",
            "max |W_end - W_start| over the frozen layers' weights; 0 means untouched.",
        ),
        accuracy_measurement(run.history),
    )
    loop = "tf.GradientTape" if keras.backend.backend() == "tensorflow" else "jax.value_and_grad"
    return run.result(
        label=f"Wrong: differentiates {listed}" if all_weights else f"Right: {listed}",
        description=(
            f"Froze the base, trained {EPOCHS} epochs with a custom {loop} loop over "
            f"{listed}: {len(variables)} of {num_weights} variables{left_out}.{skipped}"
        ),
        status=PROBLEM if num_changed else FINE,
        verdict=verdict,
        measurements=measurements,
        chart_kind="weights",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 7: the custom loop over `model.weights`, then over `trainable_weights`.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right)`: "Wrong: differentiates model.weights" and
        "Right: model.trainable_weights".

    Raises:
        ValueError: On a backend other than TensorFlow or JAX.

    Example:
    >>> wrong, right = run(seed=0)
    >>> right.numbers["Largest change in a frozen layer"]
    0.0
    """
    check_backend()
    return _variant(seed, all_weights=True), _variant(seed, all_weights=False)
