"""Pitfall 4: a child set back to trainable under a frozen parent, and what Keras really trains.

Both runs set the base's layer "conv3" back to `trainable=True` after freezing a parent. Under
the frozen nested base it IS trained by `fit` (a surprise); under a frozen top model nothing
trains, whatever the child's flag says.

Example:
>>> nested, top = run(seed=0)
>>> nested.numbers["Really trains"], top.numbers["Really trains"]
(1.0, 0.0)
"""

from __future__ import annotations

from models.pitfalls.results import NOTE, SURPRISE, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import BASE_NAME, BASE_PATH, LabRun, copy_values, layer_change, moved
from models.tree import LayerNode, ParameterCounts

CHILD_NAME = "conv3"

PITFALL = Pitfall(
    key="child_under_frozen_parent",
    number=4,
    title="A child set trainable under a frozen parent: what really happens",
    explanation=(
        "`layer.trainable = False` freezes a layer and everything inside it. You may "
        "then set one child back to `trainable = True`. Does it train? In Keras 3 it "
        "depends on where the frozen parent is. Only the top model's flag stops "
        "training: under a frozen nested model (the usual pretrained base) the child "
        "IS trained by `fit`, although its parent says frozen. Under a frozen top "
        "model nothing trains, although the child's flag says trainable (and "
        "`model.summary()` prints it as trainable)."
    ),
    what_to_look_at=(
        f"Both runs set '{CHILD_NAME}' back to trainable. Left: only the base is "
        f"frozen, and '{CHILD_NAME}' moves. Right: the whole model is frozen, and it "
        "stays bitwise unchanged. Compare the flag with 'really trains' (what the "
        "layer tree reports, from Keras's own `trainable_weights`)."
    ),
    fix=(
        "Never trust one flag alone: check `model.trainable_weights` (or the layer "
        "tree's 'really trains' column) after freezing, and recompile."
    ),
)


def _measurements(
    node: LayerNode, change: float, counts: ParameterCounts
) -> tuple[Measurement, ...]:
    return (
        Measurement(
            f"'{CHILD_NAME}' flag",
            float(node.trainable),
            "trainable" if node.trainable else "frozen",
            "The layer's own `trainable` flag.",
        ),
        Measurement(
            "Really trains",
            float(node.effectively_trainable),
            "yes" if node.effectively_trainable else "no",
            "Whether its weights are in the top model's `trainable_weights`.",
        ),
        Measurement(
            f"'{CHILD_NAME}' change",
            change,
            f"{change:.3g}",
            "max |W_end - W_start| of the child's weights.",
        ),
        Measurement(
            "Trainable params (Keras)",
            float(counts.trainable),
            f"{counts.trainable:,}",
            "Sum over `model.trainable_weights`.",
        ),
    )


def _verdict(child_moved: bool, change: float, parent_words: str) -> str:
    if child_moved:
        return (
            f"'{CHILD_NAME}' trained (max |dW| = {change:.4g}) although {parent_words} is frozen."
        )
    return (
        f"'{CHILD_NAME}' says trainable=True, but {parent_words} is frozen: its weights "
        "are bitwise unchanged."
    )


def _variant(seed: int, freeze_top: bool) -> VariantResult:
    run = LabRun(seed)
    parent_path = run.tree.root_path if freeze_top else BASE_PATH
    child_path = f"{BASE_PATH}/{CHILD_NAME}"
    run.tree.set_frozen(parent_path, True)
    run.tree.set_frozen(child_path, False)
    node = run.tree.node(child_path)
    child = run.tree.layer(child_path)
    in_keras_list = any(
        variable is weight for variable in child.weights for weight in run.model.trainable_weights
    )
    before = copy_values(child.weights)
    run.train(epochs=2)
    child_moved = any(moved(child.weights, before))
    change = layer_change(run.recorder.frame(), child_path, "weights")
    counts = run.tree.totals()
    nothing_trains = (
        " Keras only warns: 'The model does not have any trainable weights.'"
        if counts.trainable == 0
        else ""
    )
    return run.result(
        label="Top model frozen" if freeze_top else "Surprise: nested base frozen",
        description=(
            f"Froze {'the whole model' if freeze_top else 'the base'}, set '{CHILD_NAME}' back "
            f"to trainable, trained 2 epochs. Its weights in the model's trainable_weights: "
            f"{'yes' if in_keras_list else 'no'}." + nothing_trains
        ),
        status=SURPRISE if child_moved else NOTE,
        verdict=_verdict(
            child_moved, change, "the top model" if freeze_top else f"its parent '{BASE_NAME}'"
        ),
        measurements=_measurements(node, change, counts),
        chart_kind="weights",
    )


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 4: the child under a frozen nested base, then under a frozen top model.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(nested, top)`: "Surprise: nested base frozen" and "Top model frozen".

    Example:
    >>> nested, top = run(seed=0)
    >>> top.numbers["Trainable params (Keras)"]
    0.0
    """
    return _variant(seed, freeze_top=False), _variant(seed, freeze_top=True)
