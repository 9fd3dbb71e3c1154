"""Step 2 · Freeze, advisor: which of the base's layers the new task pulls hardest, and a plan.

The advisor (`models.advisor`) probes a few batches of the chosen data with everything
trainable and nothing updated, ranks the base's layers (or blocks) by relative gradient norm
‖g‖ / ‖W‖, and proposes the best-ranked ones that fit in a budget of base parameters. This panel
sets the budget, runs the probe, shows the ranking next to the classic "unfreeze the top N"
with the same budget, and applies the advisor's plan to the tree in one click.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from components.figures import advisor_ranking_figure
from components.state import kept_widget
from models.advisor import UnfreezeAdvice

BUDGET_KEY = "advisor_budget"
PROBE = "probe"
APPLY = "apply"
APPLY_TOP_N = "apply_top_n"


@dataclass(frozen=True)
class AdvisorIntent:
    """An advisor button the user clicked.

    Attributes:
        action: `PROBE` (rank the layers and plan), `APPLY` (the advisor's plan to the tree)
            or `APPLY_TOP_N` (the "unfreeze top N" plan with the same budget).
        budget: The base parameters the user allows to train.
    """

    action: str
    budget: int


def ranking_table(advice: UnfreezeAdvice, max_rows: int = 15) -> pd.DataFrame:
    """The best-ranked units as a table: rank, unit, layers, parameters, ‖g‖/‖W‖, chosen."""
    chosen = set(advice.plan.units)
    top = advice.ranking.head(max_rows)
    return pd.DataFrame(
        {
            "rank": top["rank"].astype(int),
            "unit": top["unit"].astype(str),
            "layers": top["num_layers"].astype(int),
            "parameters": top["parameters"].astype(int),
            "‖g‖ / ‖W‖": top["relative_gradient"].map(lambda value: f"{value:.3g}"),
            "in the plan": ["yes" if unit in chosen else "" for unit in top["unit"]],
        }
    )


def render_advisor_panel(
    advice: UnfreezeAdvice | None, base_parameters: int, default_budget: int, *, disabled: bool
) -> AdvisorIntent | None:
    """Renders the advisor: the budget, the probe button, the ranking, the plan and Apply.

    Args:
        advice: The latest advice for this model and data, or None before the first probe.
        base_parameters: The base's trainable-kind parameters (the budget's upper bound).
        default_budget: The budget before the user chose one.
        disabled: True while training runs.

    Returns:
        The clicked button's `AdvisorIntent`, or None.
    """
    intent: AdvisorIntent | None = None
    with st.expander("Advisor: what to unfreeze", expanded=advice is not None):
        st.caption(
            "Runs a few batches of the chosen data through the model with everything "
            "trainable, without updating anything, and ranks the base's layers (or blocks) by "
            "relative gradient norm ‖g‖ / ‖W‖: how hard the new task pulls on each, for its "
            "size (as surgical fine-tuning's Auto-RGN does). The plan unfreezes the best-ranked "
            "ones that fit in your budget of base parameters; the head always trains and "
            "BatchNormalization stays frozen."
        )
        left, right = st.columns([2, 1])
        with left:
            budget = kept_widget(
                st.number_input,
                f"Budget: base parameters that may train (of {base_parameters:,})",
                key=BUDGET_KEY,
                default=min(default_budget, base_parameters),
                min_value=0,
                max_value=max(base_parameters, 0),
                step=max(base_parameters // 100, 1),
                disabled=disabled,
            )
        with right:
            st.write("")
            if st.button(
                "Rank the layers", disabled=disabled, key="advisor_probe", width="stretch"
            ):
                intent = AdvisorIntent(PROBE, int(budget))
        if advice is None:
            st.info("Rank the layers to see the advisor's plan for this model and data.")
            return intent
        st.success(advice.plan.message(), icon=":material/lightbulb:")
        st.caption(
            f"For comparison, with the same budget: {advice.baseline.message()} "
            f"Probed {advice.num_examples} examples in {advice.seconds:.1f} s."
        )
        st.plotly_chart(
            advisor_ranking_figure(advice.ranking, advice.plan.units),
            width="stretch",
            key="advisor_ranking_chart",
        )
        st.dataframe(ranking_table(advice), hide_index=True, width="stretch")
        apply_left, apply_right = st.columns(2)
        if apply_left.button(
            "Apply the advisor's plan",
            type="primary",
            disabled=disabled,
            key="advisor_apply",
            width="stretch",
            help="Freezes the base except the plan's layers; the head keeps training.",
        ):
            intent = AdvisorIntent(APPLY, advice.plan.budget)
        if apply_right.button(
            "Apply unfreeze top N instead",
            disabled=disabled,
            key="advisor_apply_top_n",
            width="stretch",
        ):
            intent = AdvisorIntent(APPLY_TOP_N, advice.baseline.budget)
    return intent
