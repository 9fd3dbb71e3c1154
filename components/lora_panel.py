"""Step 2 · Freeze, LoRA: the adapters' rank and alpha, the bulk recipes, and what they train.

LoRA is the third state of a layer, next to frozen and trainable (see `models.lora`): its kernel
stays frozen while two small matrices learn a low-rank change to it. Single layers get or lose
an adapter with the "+ LoRA" chip on their row in the tree; this panel sets the rank and alpha
those chips use, applies the bulk recipes and lists the adapters with what each one trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from components.state import kept_widget, setting
from models.limits import LORA_ALPHA_RANGE, LORA_RANK_RANGE
from models.lora import ADAPTED_VARIABLE_NAMES, LORA_TARGETS, LORA_VARIABLE_NAMES, LoraSetting
from models.tree import LayerNode

RANK_KEY = "lora_rank"
ALPHA_KEY = "lora_alpha"
DEFAULT_RANK = 4
REMOVE_ALL = "remove_all"


@dataclass(frozen=True)
class LoraIntent:
    """A LoRA button the user clicked.

    Attributes:
        recipe: A key of `models.lora.LORA_TARGETS` ("dense", "attention"), or "remove_all".
        setting: The rank and alpha to use.
    """

    recipe: str
    setting: LoraSetting


def chosen_setting() -> LoraSetting:
    """The rank and alpha the panel shows (what a "+ LoRA" chip in the tree adds)."""
    rank = int(setting(RANK_KEY, DEFAULT_RANK))
    return LoraSetting(rank, float(setting(ALPHA_KEY, float(rank))))


def adapters_frame(nodes: Sequence[LayerNode]) -> pd.DataFrame:
    """One row per layer with a LoRA adapter: what trains in it and what stays frozen.

    Args:
        nodes: `LayerTree.nodes()`.

    Returns:
        Columns "layer", "rank", "alpha", "adapter params" (a and b), "frozen kernel params",
        "trains now" (the variables `fit` updates now, e.g. "lora_kernel_a, lora_kernel_b,
        bias"; "nothing (frozen)" for a frozen layer).
    """
    rows = []
    for node in nodes:
        if not node.lora_rank:
            continue
        adapters = sum(v.params for v in node.variables if v.name in LORA_VARIABLE_NAMES)
        kernel = sum(v.params for v in node.variables if v.name in ADAPTED_VARIABLE_NAMES)
        training = [v.name for v in node.variables if v.trains]
        rows.append(
            {
                "layer": node.path.split("/", 1)[-1],
                "rank": node.lora_rank,
                "alpha": node.lora_alpha,
                "adapter params": adapters,
                "frozen kernel params": kernel,
                "trains now": ", ".join(training) if training else "nothing (frozen)",
            }
        )
    return pd.DataFrame(
        rows,
        columns=["layer", "rank", "alpha", "adapter params", "frozen kernel params", "trains now"],
    )


def render_lora_panel(
    nodes: Sequence[LayerNode],
    target_counts: Mapping[str, int],
    *,
    disabled: bool,
) -> LoraIntent | None:
    """Renders the LoRA settings, bulk recipes and the table of adapters.

    Args:
        nodes: `LayerTree.nodes()` (for the table and whether any layer supports LoRA).
        target_counts: How many layers of the base each recipe would adapt, by recipe.
        disabled: True while training runs.

    Returns:
        A `LoraIntent` for the clicked button, or None.
    """
    adaptable = sum(1 for node in nodes if node.supports_lora)
    adapted = adapters_frame(nodes)
    intent: LoraIntent | None = None
    title = "LoRA adapters: a third state between frozen and trainable"
    with st.expander(title, expanded=not adapted.empty):
        st.caption(
            "`layer.enable_lora(rank)` freezes a layer's kernel and adds two small trainable "
            "matrices, so the layer computes with kernel + (alpha / rank) · a @ b; b starts at "
            "zero, so the model is unchanged until it trains. The bias keeps training. Use the "
            f"**+ LoRA** chip on a layer's row ({adaptable} layers here support it: Dense, "
            "EinsumDense, Embedding, Conv) or a recipe below. Freezing a LoRA layer freezes "
            "its adapters too; unfreezing never re-enables its kernel here (it does in plain "
            "Keras)."
        )
        left, right = st.columns(2)
        rank = kept_widget(
            left.number_input, "LoRA rank", key=RANK_KEY, default=DEFAULT_RANK,
            min_value=LORA_RANK_RANGE[0], max_value=LORA_RANK_RANGE[1], step=1,
            help="Inner size of the adapter matrices: a is (in x rank), b is (rank x out).",
            disabled=disabled,
        )  # fmt: skip
        kept_widget(
            right.number_input, "LoRA alpha", key=ALPHA_KEY, default=float(rank),
            min_value=LORA_ALPHA_RANGE[0], max_value=LORA_ALPHA_RANGE[1], step=1.0,
            help="Scale of the adapter's change: alpha / rank. Keras's default is the rank.",
            disabled=disabled,
        )  # fmt: skip
        chosen = chosen_setting()
        columns = st.columns(3)
        for column, recipe in zip(columns, ("dense", "attention"), strict=False):
            count = target_counts.get(recipe, 0)
            label = {"dense": "LoRA on every Dense", "attention": "LoRA on attention q, v"}[recipe]
            if column.button(
                f"{label} ({count})",
                disabled=disabled or count == 0,
                width="stretch",
                help=f"Adapters of rank {chosen.rank} on {LORA_TARGETS[recipe]}.",
                key=f"lora_recipe_{recipe}",
            ):
                intent = LoraIntent(recipe, chosen)
        if columns[2].button(
            "Remove all adapters",
            disabled=disabled or adapted.empty,
            width="stretch",
            help="What the adapters learned is merged into their kernels first.",
            key="lora_remove_all",
        ):
            intent = LoraIntent(REMOVE_ALL, chosen)
        if adapted.empty:
            st.caption("No adapters yet.")
        else:
            st.dataframe(adapted, hide_index=True, width="stretch")
    return intent


__all__ = [
    "ALPHA_KEY",
    "RANK_KEY",
    "REMOVE_ALL",
    "LoraIntent",
    "adapters_frame",
    "chosen_setting",
    "render_lora_panel",
]
