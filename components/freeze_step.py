"""Step 2 · Freeze: the bulk freezing actions and the legend of the layer tree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from components.state import kept_widget
from models.plans import FreezePlan, PlanKind
from models.tree import LayerNode


@dataclass(frozen=True)
class BulkIntent:
    """A bulk freezing button the user clicked: the plan to apply (`Workspace.bulk_action`)."""

    plan: FreezePlan


def render_bulk_actions(
    nodes: Sequence[LayerNode], base_path: str, base_layer_paths: Sequence[str], *, disabled: bool
) -> BulkIntent | None:
    """Renders the bulk freezing buttons.

    Args:
        nodes: The model's nodes (for the "freeze up to" menu).
        base_path: Path of the base model node.
        base_layer_paths: The base's direct layers (for "unfreeze top N").
        disabled: True while training runs.

    Returns:
        A `BulkIntent` holding the clicked button's `FreezePlan`, or None when no button was
        clicked.
    """
    base_name = base_path.rsplit("/", 1)[-1]
    intent: BulkIntent | None = None
    columns = st.columns(4)
    if columns[0].button(
        f"Freeze base ({base_name})",
        type="primary",
        disabled=disabled,
        width="stretch",
        help="base.trainable = False: the classic feature-extraction set-up.",
    ):
        intent = BulkIntent(FreezePlan(PlanKind.BASE))
    if columns[1].button("Freeze all", disabled=disabled, width="stretch"):
        intent = BulkIntent(FreezePlan(PlanKind.ALL))
    if columns[2].button("Unfreeze all", disabled=disabled, width="stretch"):
        intent = BulkIntent(FreezePlan(PlanKind.NONE))
    if columns[3].button(
        "Freeze all BatchNorm",
        disabled=disabled,
        width="stretch",
        help="Frozen BatchNormalization runs in inference mode: its moving statistics stay fixed.",
    ):
        intent = BulkIntent(FreezePlan(PlanKind.BATCH_NORM))

    left, right = st.columns(2)
    with left:
        paths = [node.path for node in nodes[1:]]
        target = kept_widget(
            st.selectbox,
            "Freeze everything up to and including",
            help=(
                "Sets trainable = False on the chosen layer and on every layer before it in "
                "model order (nested layers included), and True on every layer after it. "
                "Layers without weights (activations, pooling) have nothing to freeze: choosing "
                "one freezes the same weights as choosing the last layer with weights before it."
            ),
            options=paths,
            default=base_path,
            format_func=lambda path: path.split("/", 1)[-1],
            disabled=disabled,
            key="freeze_up_to_target",
        )
        if st.button("Apply freeze up to", disabled=disabled, key="apply_freeze_up_to"):
            intent = BulkIntent(FreezePlan(PlanKind.UP_TO, target))
    with right:
        count = len(base_layer_paths)
        top = kept_widget(
            st.number_input,
            f"Unfreeze the top N of the base's {count} layers with weights",
            help=(
                "The Keras fine-tuning recipe: base.trainable = True, then every layer below "
                "the top N layers with weights is frozen. Only layers with trainable weights "
                "(convolutions, dense, BatchNormalization) are counted; layers without weights "
                "(activations, pooling, dropout) have nothing to train, so they are skipped in "
                "the count and follow their place: frozen below the cut, trainable above it."
            ),
            default=min(2, count),
            min_value=0,
            max_value=max(count, 0),
            step=1,
            disabled=disabled,
            key="unfreeze_top_count",
        )
        if st.button("Apply unfreeze top N", disabled=disabled, key="apply_unfreeze_top"):
            intent = BulkIntent(FreezePlan(PlanKind.TOP, int(top)))
    return intent


def render_freeze_legend() -> None:
    """Explains the tree's checkboxes and badges in one caption."""
    st.caption(
        "☑ = frozen (`layer.trainable = False`). Ticking a model or a layer with sublayers "
        "freezes everything under it, as Keras does; a half-filled box means mixed children. "
        "**BN**: BatchNormalization (frozen = inference mode, moving statistics fixed). "
        "**parent frozen, still trains**: Keras 3 only checks the *top* model's flag, so a layer "
        "set back to trainable inside a frozen nested model is still trained by `fit`."
    )
