"""Per-layer learning rates in the Train step: the controls, and the rate every layer will get.

The controls build a `models.layer_rates.LayerRates` from two levers practitioners pull:

- a multiplier for the whole base (e.g. 0.1: the base learns ten times slower than the head);
- layer-wise decay (ULMFiT's discriminative fine-tuning, fastai's `slice(lr)`): the base's top
  block at that rate, each block below `decay_factor` times the one above.

Multipliers on other layers (from an instructor link or a restored run config) are kept as they
are and said so. Nothing here resolves paths on a model: `app.py` passes the resolved table
(`models.layer_rates.layer_rates_frame`) to `render_layer_rates_table`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components import state
from components.figures import layer_rates_figure
from components.state import kept_widget
from models.layer_rates import LayerRates
from models.limits import LAYERS_PER_BLOCK_RANGE

BASE_MULTIPLIERS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
"""The base's multipliers offered (0 stops the base's updates, 1 is the head's rate)."""

DECAY_FACTORS = (0.1, 0.25, 0.385, 0.5, 0.7, 0.9)
"""Decay factors offered; 0.385 is ULMFiT's (the rate divided by 2.6 per layer group)."""

# The controls' widget keys, also the names of the settings they show.
BASE_MULTIPLIER_KEY = "base_rate_multiplier"
DECAY_KEY = "layer_decay"
DECAY_FACTOR_KEY = "layer_decay_factor"
DECAY_BLOCK_KEY = "layer_decay_block"


def _with(options: tuple[float, ...], value: float) -> list[float]:
    """The options with `value` among them (a link or a restored config may hold any value)."""
    return sorted({*options, float(value)})


def _show(rates: LayerRates, base_path: str | None) -> None:
    """Makes the controls show `rates` (new defaults replace what the user had chosen)."""
    state.set_setting(BASE_MULTIPLIER_KEY, float(rates.multiplier_map.get(base_path, 1.0)))
    state.set_setting(DECAY_KEY, rates.decay_factor is not None)
    if rates.decay_factor is not None:
        state.set_setting(DECAY_FACTOR_KEY, float(rates.decay_factor))
    state.set_setting(DECAY_BLOCK_KEY, int(rates.layers_per_block))


def render_layer_rates_controls(
    defaults: LayerRates | None, base_path: str | None, *, disabled: bool
) -> LayerRates | None:
    """Draws the per-layer learning-rate controls (in the Train settings).

    Args:
        defaults: The rates to show first (a link's or a restored run's), or None.
        base_path: The base model's path (its multiplier and its decay blocks); None hides the
            base multiplier (a model without a nested base).
        disabled: Whether a run is in progress.

    Returns:
        The chosen `LayerRates`, or None when every layer keeps the base rate.
    """
    if state.get(state.LAYER_RATES_SHOWN) != defaults:  # a link or a restored config
        state.put(state.LAYER_RATES_SHOWN, defaults)
        _show(defaults or LayerRates(), base_path)
    defaults = defaults or LayerRates()
    explicit = defaults.multiplier_map
    base_default = explicit.pop(base_path, 1.0) if base_path is not None else 1.0
    with st.expander("Per-layer learning rates", expanded=not defaults.is_identity):
        multiplier = 1.0
        if base_path is not None:
            multiplier = kept_widget(
                st.select_slider,
                "Base rate × (head × 1)",
                options=_with(BASE_MULTIPLIERS, base_default),
                default=float(base_default),
                format_func=lambda value: f"{value:g}",
                disabled=disabled,
                key=BASE_MULTIPLIER_KEY,
                help="The base's layers learn at this multiple of the learning rate; the new "
                "head at the learning rate itself. 0 stops the base's updates (it still runs "
                "in training mode, unlike freezing).",
            )
        decay = kept_widget(
            st.checkbox,
            "Layer-wise decay (discriminative fine-tuning)",
            default=defaults.decay_factor is not None,
            disabled=disabled,
            key=DECAY_KEY,
            help="ULMFiT / fastai's slice(lr): the base's top block learns at the base rate, "
            "each block below at the decay factor times the block above.",
        )
        factor, per_block = None, defaults.layers_per_block
        if decay:
            factor_default = defaults.decay_factor if defaults.decay_factor is not None else 0.5
            factor = kept_widget(
                st.select_slider,
                "Decay factor per block",
                options=_with(DECAY_FACTORS, factor_default),
                default=float(factor_default),
                format_func=lambda value: f"{value:g}",
                disabled=disabled,
                key=DECAY_FACTOR_KEY,
            )
            per_block = kept_widget(
                st.number_input,
                "Base layers (with weights) per block",
                min_value=LAYERS_PER_BLOCK_RANGE[0],
                max_value=LAYERS_PER_BLOCK_RANGE[1],
                default=int(defaults.layers_per_block),
                disabled=disabled,
                key=DECAY_BLOCK_KEY,
                help="2 keeps a convolution and its BatchNormalization at one rate.",
            )
        if explicit:
            st.caption(
                f"Also kept from the link or restored config: {len(explicit)} layer "
                f"multiplier(s) ({', '.join(f'{p} × {m:g}' for p, m in list(explicit.items())[:3])}"
                f"{', ...' if len(explicit) > 3 else ''})."
            )
    if base_path is not None and float(multiplier) != 1.0:
        explicit[base_path] = float(multiplier)
    rates = LayerRates(
        explicit,
        decay_factor=None if factor is None else float(factor),
        layers_per_block=int(per_block),
        base_path=defaults.base_path if defaults.base_path is not None else base_path,
    )
    return None if rates.is_identity else rates


def render_layer_rates_table(frame: pd.DataFrame, key: str) -> None:
    """Shows the rate every layer will get: a bar per layer and the table.

    Args:
        frame: `models.layer_rates.layer_rates_frame`'s table.
        key: A key unique on the page.
    """
    st.subheader("Learning rate per layer")
    st.caption(
        "What the optimizer will use for each layer's weights: the learning rate times the "
        "layer's multiplier. FreezeLab scales each variable's update (Keras has no parameter "
        "groups); a multiplier of 0 keeps a layer bitwise unchanged."
    )
    st.plotly_chart(layer_rates_figure(frame), width="stretch", key=f"{key}_figure")
    with st.expander("Table"):
        st.dataframe(
            frame.rename(
                columns={
                    "path": "Layer path",
                    "multiplier": "Multiplier",
                    "learning_rate": "Learning rate",
                    "trainable": "Trains",
                }
            ),
            hide_index=True,
            width="stretch",
            column_config={"Learning rate": st.column_config.NumberColumn(format="%.3g")},
        )
