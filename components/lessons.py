"""Render the lessons page: one interactive step per freezing idea, with live numbers from Keras.

Every number shown comes from a real Keras layer or model built by `models.lessons`. The cheap
numbers are cached in the session (`state.LESSONS_CACHE`) per setting; the two steps that train
run only when their button is clicked and keep their result under "lessons_" keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd
import streamlit as st

from components import state
from models.keras_version import installed_keras
from models.lessons import (
    LayerWeights,
    batch_norm_weights,
    dense_weights,
    diagnostics_lesson,
    flag_versus_training,
    frozen_dense,
    nested_freeze,
    train_with_frozen_layer,
    transfer_workflow,
)

_INNER_CHOICES = ("not set", "True", "False")
_RUN_LOCK = threading.Lock()  # one training lesson at a time per server process


def _cached(name: str, function: Callable[..., Any], *args: Hashable) -> Any:
    """Returns `function(*args)`, computed once per session and setting."""
    cache: dict = state.setdefault(state.LESSONS_CACHE, {})
    key = (name, *args)
    if key not in cache:
        cache[key] = function(*args)
    return cache[key]


def _weights_table(info: LayerWeights) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Weight": weight.name,
                "Shape": str(weight.shape),
                "Trainable": "yes" if weight.trainable else "no",
                "Parameters": weight.num_params,
            }
            for weight in info.weights
        ]
    )


def _weight_metrics(info: LayerWeights) -> None:
    columns = st.columns(3)
    columns[0].metric("len(layer.weights)", info.num_weights)
    columns[1].metric("len(layer.trainable_weights)", info.num_trainable_weights)
    columns[2].metric("len(layer.non_trainable_weights)", info.num_non_trainable_weights)
    st.dataframe(_weights_table(info), hide_index=True, width="stretch")


def _guarded(render: Callable[[], None]) -> None:
    """Runs one step's rendering; an error shows as a message, never as a traceback."""
    try:
        render()
    except Exception as error:
        st.error(f"This step could not run: {type(error).__name__}: {error}")


# ------------------------------------------------------------------------------------ steps
def _step_dense() -> None:
    st.markdown(
        "A layer's **weights** are its learnable numbers. A `Dense` layer has two: a *kernel* "
        "(inputs x units) and a *bias* (one per unit). Both are trainable: the optimizer "
        "changes them during training."
    )
    left, right = st.columns(2)
    units = left.number_input("units", 1, 64, 2, key="lessons_units")
    input_dim = right.number_input("input size", 1, 64, 3, key="lessons_input_dim")
    st.code(
        f"layer = keras.layers.Dense({units})\nlayer.build((None, {input_dim}))", language="python"
    )
    _weight_metrics(_cached("dense", dense_weights, int(units), int(input_dim)))


def _step_batch_norm() -> None:
    st.markdown(
        "`BatchNormalization` has **four** weights: *gamma* and *beta* are trainable; the "
        "*moving mean* and *moving variance* are non-trainable. No optimizer touches them, "
        "but a trainable BatchNormalization layer updates them itself on every training batch."
    )
    features = st.number_input("features (channels)", 1, 64, 3, key="lessons_bn_features")
    st.code(
        f"layer = keras.layers.BatchNormalization()\nlayer.build((None, {features}))",
        language="python",
    )
    _weight_metrics(_cached("batch_norm", batch_norm_weights, int(features)))


def _step_freeze() -> None:
    st.markdown(
        "Setting `layer.trainable = False` **freezes** the layer: all its weights move from "
        "`trainable_weights` to `non_trainable_weights`, and training no longer updates them."
    )
    trainable = st.checkbox("layer.trainable", value=False, key="lessons_dense_trainable")
    st.code(
        f"layer = keras.layers.Dense(2)\nlayer.build((None, 3))\nlayer.trainable = {trainable}",
        language="python",
    )
    _weight_metrics(_cached("frozen_dense", frozen_dense, bool(trainable)))


def _step_train_frozen() -> None:
    st.markdown(
        "Does a frozen layer really stay put? Build `Dense(3) -> Dense(3)`, freeze the first, "
        "**compile**, train, and compare every weight byte for byte with its value before."
    )
    if st.button("▶ Train 3 epochs", key="lessons_train_frozen"):
        with st.spinner("Training a tiny model..."), _RUN_LOCK:
            state.put(state.LESSONS_FROZEN_TRAINING, train_with_frozen_layer(seed=0))
    check = state.get(state.LESSONS_FROZEN_TRAINING)
    if check is None:
        st.info("Click the button to train and check.")
        return
    columns = st.columns(len(check.layers))
    for column, layer in zip(columns, check.layers, strict=True):
        with column:
            st.markdown(f"**{layer.name}** (trainable={layer.trainable})")
            st.metric("Bitwise equal after fit", "yes" if layer.bitwise_equal else "no")
            st.metric("Largest change", f"{layer.max_abs_change:.4g}")
            st.dataframe(
                pd.DataFrame(
                    {"kernel before": layer.kernel_before, "kernel after": layer.kernel_after}
                ),
                hide_index=True,
            )
    frozen = check.layer("frozen_dense")
    if frozen.bitwise_equal:
        st.success(check.verification_message, icon=":material/verified:")
    else:
        st.error(check.verification_message, icon=":material/gpp_bad:")


def _step_nested() -> None:
    st.markdown(
        "A model can contain another model. Setting `trainable` on a model sets it on "
        "**every layer inside, recursively**. You may then set a layer back to trainable. "
        "What really trains is what is in the *outer* model's `trainable_weights`: the table "
        "reads it from Keras for the flags you set (step 6 trains the model to check)."
    )
    columns = st.columns(3)
    outer = columns[0].checkbox("outer.trainable", value=False, key="lessons_outer_trainable")
    inner_choice = columns[1].radio(
        "inner.trainable", _INNER_CHOICES, key="lessons_inner_trainable", horizontal=True
    )
    child = columns[2].checkbox(
        "inner.dense_a.trainable", value=False, key="lessons_child_trainable"
    )
    inner = None if inner_choice == "not set" else inner_choice == "True"
    lines = ["outer.trainable = " + str(outer)]
    if inner is not None:
        lines.append(f"inner.trainable = {inner}")
    lines.append(f"inner.get_layer('dense_a').trainable = {child}")
    st.code("\n".join(lines), language="python")
    result = _cached("nested", _nested, bool(outer), bool(child), inner)
    table = pd.DataFrame(
        [
            {
                "Layer": node.path,
                "Class": node.class_name,
                "Flag (trainable)": "yes" if node.trainable else "no",
                "Really trains": "yes" if node.effectively_trainable else "no",
                "Trainable params": node.trainable_params,
                "Non-trainable params": node.non_trainable_params,
            }
            for node in result.nodes
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch")
    metrics = st.columns(3)
    metrics[0].metric("len(outer.trainable_weights)", len(result.keras_trainable_weights))
    metrics[1].metric("len(inner.trainable_weights)", result.inner_trainable_weights)
    metrics[2].metric("Trainable params", f"{result.trainable_params:,}")
    trained = ", ".join(result.keras_trainable_weights) or "nothing"
    st.caption(f"`fit` on the outer model updates: {trained}")
    child_node = result.node("outer/inner/dense_a")
    inner_node = result.node("outer/inner")
    if child_node.effectively_trainable and not inner_node.trainable:
        st.warning(
            "Surprise: the inner model says trainable=False, yet 'dense_a' trains, because "
            "only the outer model's flag gates training.",
            icon=":material/warning:",
        )
    elif child_node.trainable and not child_node.effectively_trainable:
        st.info(
            "'dense_a' says trainable=True, but the outer model is frozen, so nothing trains.",
            icon=":material/info:",
        )


def _step_flag_versus_training() -> None:
    st.markdown(
        "A layer's `trainable` flag is not always what Keras trains. Here the inner model is "
        "frozen (`inner.trainable = False`), then its layer `dense_a` is set back, and the "
        "outer model is trained for one epoch. The table compares each layer's flag, the "
        "badge FreezeLab's tree shows, Keras's own `outer.trainable_weights`, and whether its "
        "kernel really moved (bitwise)."
    )
    child = st.checkbox(
        "inner.dense_a.trainable = True (after freezing inner)",
        value=True,
        key="lessons_flag_child",
    )
    result = _cached("flag_versus_training", _flag_versus_training, bool(child))
    table = pd.DataFrame(
        [
            {
                "Layer": layer.path,
                "Flag (trainable)": "yes" if layer.flag else "no",
                "Tree badge: trains": "yes" if layer.badge_trains else "no",
                "In outer.trainable_weights": "yes" if layer.in_trainable_weights else "no",
                "Kernel moved in fit": "yes" if layer.moved else "no",
                "max |dW|": layer.kernel_change,
            }
            for layer in result.layers
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch")
    child_layer = result.layer("outer/inner/dense_a")
    if child_layer.moved:
        st.warning(
            "Measured: 'dense_a' trained although its parent model 'inner' is frozen.",
            icon=":material/warning:",
        )
    else:
        st.info("Measured: 'dense_a' did not train.", icon=":material/info:")
    if result.badge_matches_keras:
        st.success(
            "The tree's badges match what Keras really trained, layer by layer.",
            icon=":material/verified:",
        )
    else:
        st.error(
            "The tree's badges differ from what Keras trained: please report this with your "
            "Keras version.",
            icon=":material/error:",
        )
    st.caption(f"Measured on {result.keras_version}.")


def _flag_versus_training(child: bool) -> Any:
    return flag_versus_training(seed=0, child_trainable=child)


def _nested(outer: bool, child: bool, inner: bool | None) -> Any:
    return nested_freeze(outer, child, inner_trainable=inner)


def _step_workflow() -> None:
    st.markdown(
        "The transfer-learning workflow, on the bundled base (pretrained on digits 0-4) and "
        "digits 5-9:\n"
        "1. **Freeze the base** (`base.trainable = False`) and **add a new head**.\n"
        "2. **Train** the head.\n"
        "3. **Fine-tune**: unfreeze the base (keep BatchNormalization frozen), **recompile** "
        "with a low learning rate, train a little more."
    )
    if st.button("▶ Run the workflow", key="lessons_run_workflow"):
        with st.spinner("Training both phases (a few seconds)..."), _RUN_LOCK:
            state.put(state.LESSONS_WORKFLOW, transfer_workflow(seed=0))
    result = state.get(state.LESSONS_WORKFLOW)
    if result is None:
        st.info("Click the button to run both phases and measure them.")
    else:
        columns = st.columns(len(result.phases))
        titles = {"head": "Phase 1 · frozen base, new head", "fine_tune": "Phase 2 · fine-tune"}
        for column, phase in zip(columns, result.phases, strict=True):
            with column:
                st.markdown(f"**{titles.get(phase.name, phase.name)}**")
                st.caption(
                    f"{phase.description} Learning rate {phase.learning_rate:g}, "
                    f"{phase.epochs} epochs."
                )
                st.metric("Trainable params", f"{phase.trainable_params:,}")
                st.metric("Non-trainable params", f"{phase.non_trainable_params:,}")
                st.metric("Validation accuracy (digits 5-9)", f"{phase.validation_accuracy:.1%}")
                st.metric("Base drift since the start", f"{phase.base_drift:.1%}")
                st.metric("Digits 0-4 still recognised", f"{phase.original_task_accuracy:.1%}")
        st.caption(f"Measured in {result.seconds:.1f} s.")
    st.markdown(
        "**Do it in the dashboard:** tab **2 · Freeze** to freeze the base (or use the bulk "
        "actions), tab **4 · Train** to train the head, then back to **2 · Freeze** to unfreeze "
        "and **4 · Train** again with a lower learning rate (FreezeLab recompiles for you), "
        "and tab **5 · Drift** to see that frozen layers stayed bitwise unchanged."
    )


def _step_diagnostics() -> None:
    st.markdown(
        "Freezing decides *what may move*; three diagnostics say *what should move* and *what "
        "did*. On the bundled base and digits 5-9:\n"
        "1. **The advisor** (before training): the gradient of the loss with respect to every "
        "layer of the base, with everything trainable and nothing updated, ranks the layers by "
        "relative gradient ‖g‖ / ‖W‖; the plan unfreezes the best-ranked ones within a budget "
        "of a quarter of the base's parameters.\n"
        "2. **Update-to-weight ratios** (during training): how far each training layer moves "
        "per step, ‖ΔW‖ / ‖W‖; about 1e-3 is the usual rule of thumb.\n"
        "3. **Representation change** (after training): linear CKA between each block's output "
        "before and after, on held-out examples; 1 means the block computes exactly what it did."
    )
    learning_rate = st.select_slider(
        "Learning rate of the run",
        options=[1e-3, 1e-2, 1e-1],
        value=1e-2,
        format_func=lambda value: f"{value:g}",
        key="lessons_diagnostics_rate",
        help="1e-1 is too high for some layers: their ratios leave the healthy band.",
    )
    if st.button("▶ Run the diagnostics", key="lessons_run_diagnostics"):
        with st.spinner("Ranking the layers, training the plan for 3 epochs..."), _RUN_LOCK:
            state.put(state.LESSONS_DIAGNOSTICS, diagnostics_lesson(0, float(learning_rate)))
    result = state.get(state.LESSONS_DIAGNOSTICS)
    if result is None:
        st.info("Click the button to run the advisor, train its plan and read all three.")
        return
    st.markdown(f"**1 · The advisor.** {result.plan_message}")
    st.caption(f"With the same budget: {result.baseline_message}")
    st.dataframe(
        result.ranking.rename(columns={"relative_gradient": "‖g‖ / ‖W‖", "in_plan": "in plan"}),
        hide_index=True,
        width="stretch",
    )
    fast = result.statistics.verdict.eq("too fast").sum()
    st.markdown(
        f"**2 · How fast each layer moved** (learning rate {result.learning_rate:g}, "
        f"{result.epochs} epochs, last record): {fast} layer(s) above 1e-2 per step."
    )
    st.dataframe(result.statistics, hide_index=True, width="stretch")
    frozen = result.representation[result.representation.frozen_through]
    st.markdown(
        "**3 · How much each block's features changed.** "
        + (
            f"{len(frozen)} block(s) fed only by frozen layers read exactly 1. "
            if len(frozen)
            else "Every block sees at least one trained layer before it, so none reads 1. "
        )
        + f"Validation accuracy after the run: {result.validation_accuracy:.1%}."
    )
    st.dataframe(result.representation, hide_index=True, width="stretch")
    st.caption(f"Measured in {result.seconds:.1f} s.")
    st.markdown(
        "**Do it in the dashboard:** the advisor is in tab **2 · Freeze** (*Advisor: what to "
        "unfreeze*), and every run's ratios and CKA are in tab **5 · Drift**."
    )


STEPS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("1 · The weights of a layer (Dense)", _step_dense),
    ("2 · BatchNormalization: trainable and non-trainable weights", _step_batch_norm),
    ("3 · Freezing a layer", _step_freeze),
    ("4 · Training with a frozen layer", _step_train_frozen),
    ("5 · Freezing a model freezes everything inside it", _step_nested),
    ("6 · The flag vs what Keras really trains", _step_flag_versus_training),
    ("7 · The transfer-learning workflow", _step_workflow),
    ("8 · What to unfreeze, how fast, what changed: the diagnostics", _step_diagnostics),
)


def render_lessons() -> None:
    """Renders the lessons page: one expander per idea, each with live numbers from Keras.

    Works standalone: it only reads and writes session-state keys starting with "lessons_".
    Nothing trains on a rerun; the two training steps run when their buttons are clicked.

    Example:
    >>> render_lessons()  # inside a Streamlit script or tab
    """
    st.markdown(
        "The ideas behind FreezeLab, after the Keras guide *Transfer learning & fine-tuning*. "
        "Each number below is read from a real Keras layer or model, measured on "
        f"**{installed_keras().label}**."
    )
    for index, (title, render) in enumerate(STEPS):
        with st.expander(title, expanded=index == 0):
            _guarded(render)
