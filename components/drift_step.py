"""Step 5 · Drift: how far every layer moved, and the bitwise proof for frozen layers."""

from __future__ import annotations

import streamlit as st

from components.figures import (
    drift_heatmap_figure,
    drift_lines_figure,
    final_drift_bar_figure,
    final_drift_table,
    graded_motion_figure,
    lora_drift_table,
    representation_figure,
    state_drift_figure,
    step_statistics_figure,
)
from components.state import escape_markdown
from models.diagnostics import TOO_FAST_RATIO, TOO_SLOW_RATIO, speed_verdicts
from models.drift import EFFECTIVE_KERNEL_KIND, VerificationResult
from models.export import download_file_name, drift_csv_bytes
from models.snapshot import RunSnapshot, VerificationSummary
from models.tree import format_paths

MAX_LINE_LAYERS = 40
MAX_LORA_LINES = 6  # LoRA layers summarised in words; the table lists every one


def render_verification(result: VerificationResult | VerificationSummary) -> None:
    """Shows the bitwise proof: a green banner, or a red alarm naming every changed layer."""
    if result.num_checked == 0:
        st.info(result.message())
    elif result.all_unchanged:
        st.success(result.message(), icon=":material/verified:")
    else:
        st.error(result.message(), icon=":material/gpp_bad:")


def render_drift(run: RunSnapshot) -> None:
    """Renders every drift view of a run: banner, lines, heatmap, final bars, state, table.

    Args:
        run: The run's snapshot; while it trains only the drift lines are drawn (the proof,
            heatmap, final drift and tables appear once it ends).
    """
    live = not run.done
    drift = run.drift
    if drift.empty:
        st.info("Drift appears here once training starts.")
        return
    if live:
        st.info(
            "Training is running: drift so far. The heatmap, final drift, BatchNorm state and "
            "the bitwise proof appear when it ends."
        )
    elif run.verification is not None:
        render_verification(run.verification)
    order = list(run.layer_order)
    prefix = f"run{run.run_id}"
    many = drift.layer_path.nunique() > MAX_LINE_LAYERS
    lines = drift_lines_figure(
        drift, "weights", layer_order=order, max_layers=MAX_LINE_LAYERS if many else None
    )
    for boundary in run.phase_boundaries:
        if boundary.first_step > 0:
            lines.add_vline(
                x=boundary.first_step, line_dash="dot", line_color="#888",
                annotation_text=boundary.name, annotation_position="top left",
            )  # fmt: skip
    st.plotly_chart(lines, width="stretch", key=f"{prefix}_drift_lines")
    render_step_statistics(run)
    render_representation(run)
    if live:
        return  # keep live refreshes light: the training thread needs the CPU more
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            drift_heatmap_figure(drift, "weights", layer_order=order, depths=run.depths),
            width="stretch",
            key=f"{prefix}_drift_heatmap",
        )
    with right:
        st.plotly_chart(
            final_drift_bar_figure(drift, "weights", layer_order=order),
            width="stretch",
            key=f"{prefix}_drift_bars",
        )
    st.subheader("Non-trainable state (BatchNorm moving statistics)")
    st.plotly_chart(
        state_drift_figure(drift, layer_order=order), width="stretch", key=f"{prefix}_state"
    )
    render_lora_drift(run)
    if run.layer_multipliers:
        st.subheader("Per-layer learning rates: graded motion")
        st.plotly_chart(
            graded_motion_figure(drift, run.layer_multipliers, layer_order=order),
            width="stretch",
            key=f"{prefix}_graded_motion",
        )
    st.subheader("Final drift per layer")
    table = final_drift_table(drift, layer_order=order)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        "Download drift CSV (every record)",
        drift_csv_bytes(drift),
        file_name=download_file_name("drift", run.run_id),
        mime="text/csv",
        key=f"{prefix}_download_drift",
    )


def render_lora_drift(run: RunSnapshot) -> None:
    """Shows each LoRA layer's effective-kernel drift next to its adapters' size (if any)."""
    table = lora_drift_table(
        run.drift, run.adapters, run.adapter_parameters, layer_order=list(run.layer_order)
    )
    if table.empty:
        return
    st.subheader("LoRA layers: how far the effective kernel moved")
    st.caption(
        "A LoRA layer computes with kernel + (α/r)·a·b. Its own kernel stays frozen (checked "
        "bitwise above); the adapters a and b train. The effective kernel's drift is how far "
        "the layer's function moved, next to what the adapters cost."
    )
    for row in table.head(MAX_LORA_LINES).to_dict("records"):
        frozen = " (frozen: adapters too)" if row["Frozen"] else ""
        st.markdown(
            f"**{escape_markdown(row['Layer path'])}** ({row['Adapter']}){frozen}: the "
            f"effective kernel moved **{row['Effective kernel relative change']:.2%}** of its "
            f"norm; its adapters hold {row['Adapter parameters']:,} parameters, "
            f"{row['Adapter / kernel']:.0%} of its kernel's {row['Kernel parameters']:,}."
        )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "Adapter / kernel": st.column_config.NumberColumn(format="percent"),
            "Effective kernel relative change": st.column_config.NumberColumn(format="%.4g"),
            "Effective kernel max abs change": st.column_config.NumberColumn(format="%.4g"),
        },
        key=f"run{run.run_id}_lora_table",
    )
    st.plotly_chart(
        drift_lines_figure(run.drift, EFFECTIVE_KERNEL_KIND, layer_order=list(run.layer_order)),
        width="stretch",
        key=f"run{run.run_id}_lora_lines",
    )


def render_step_statistics(run: RunSnapshot) -> None:
    """Shows how fast each training layer moves per step, against the 1e-3 rule of thumb."""
    frame = run.step_statistics
    if frame.empty:
        return
    st.subheader("Gradients and updates per step")
    st.caption(
        "For each layer that trains, at the drift's record points: the update-to-weight ratio "
        "‖ΔW‖ / ‖W‖ of the last step (around 1e-3 is the usual rule of thumb, CS231n; the "
        "green band is 1e-4 to 1e-2) and the gradient norm ‖g‖. Measured inside the training "
        "step by the optimizer, so the updates are the same as without it."
    )
    verdicts = speed_verdicts(frame)
    fast, slow = verdicts["too_fast"], verdicts["too_slow"]
    if fast:
        st.warning(
            f"Too fast (ratio above {TOO_FAST_RATIO:g} at the last record): "
            f"{escape_markdown(format_paths(fast))}. A lower learning rate for these layers "
            "(Per-layer learning rates) would move them less.",
            icon=":material/speed:",
        )
    if slow:
        st.info(
            f"Barely moving (ratio below {TOO_SLOW_RATIO:g}): "
            f"{escape_markdown(format_paths(slow))}. They train but learn little at this rate."
        )
    if not fast and not slow:
        st.success(
            f"Every layer that trains moves within {TOO_SLOW_RATIO:g} to {TOO_FAST_RATIO:g} of "
            "its weights per step."
        )
    order = list(run.layer_order)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            step_statistics_figure(frame, "update_ratio", layer_order=order),
            width="stretch",
            key=f"run{run.run_id}_update_ratio",
        )
    with right:
        st.plotly_chart(
            step_statistics_figure(frame, "gradient_norm", layer_order=order),
            width="stretch",
            key=f"run{run.run_id}_gradient_norm",
        )


def render_representation(run: RunSnapshot) -> None:
    """Shows how much each block's features changed: linear CKA per block, live and after."""
    report = run.representation
    if report.frame.empty and not report.note:
        return  # a run stored before FreezeLab measured it
    st.subheader("How much each block's features changed")
    st.caption(
        "Linear CKA (centred kernel alignment) between each block's output before training "
        "and now, on the same examples: 1 means the block computes exactly what it did "
        "(bitwise), lower means its features changed. A frozen block reads 1 only when every "
        "layer before it is frozen too: a frozen block after a trained one sees new inputs."
    )
    frame = report.frame
    if frame.empty:
        st.info(report.note)
        return
    st.plotly_chart(
        representation_figure(frame), width="stretch", key=f"run{run.run_id}_representation"
    )
    changed = frame[~frame.unchanged & frame.cka.notna()]
    notes = [report.note]
    if not changed.empty:
        most = changed.loc[changed.cka.idxmin()]
        notes.append(f"Most changed: {escape_markdown(str(most.block_name))} (CKA {most.cka:.4f}).")
    wrong = frame[frame.frozen_through & ~frame.unchanged]
    if not wrong.empty:
        st.error(
            "Frozen all the way from the input, yet changed: "
            f"{escape_markdown(format_paths(wrong.block_path.tolist()))}. This breaks the "
            "bitwise proof: check the run's freeze plan.",
            icon=":material/gpp_bad:",
        )
    st.caption(" ".join(notes))
