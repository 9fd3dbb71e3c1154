"""AppTest checks of per-layer learning rates in the Train step: controls, preview, proof, drift."""

from dataclasses import replace

import numpy as np
from streamlit.testing.v1 import AppTest

from components import state
from components.actions import DEFAULT_CONFIG
from models.layer_rates import LayerRates, layer_rates_frame
from tests.app_helpers import open_tab
from tests.test_app import APP, BASE, button, wait_for_run


def chosen(at: AppTest):
    """The TrainingConfig the controls show (kept with the URL session's values)."""
    return at.session_state[state.URL_SESSION_VALUES][state.CHOSEN_CONFIG]


def rates_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    return at


def test_a_base_multiplier_of_zero_keeps_the_trainable_base_bitwise_and_the_head_learns():
    at = rates_app()
    workspace = at.session_state["workspace"]
    assert workspace.tree.totals().trainable > 0 and not workspace.tree.frozen_paths()
    at.select_slider(key="base_rate_multiplier").set_value(0.0).run()
    assert not at.exception, [e.value for e in at.exception]
    config = chosen(at)
    assert config.layer_rates == LayerRates({BASE: 0.0}, base_path=BASE)
    base_layers = [workspace.tree.layer(p) for p in workspace.tree.base_layer_paths(BASE)]
    before = [np.array(w, copy=True) for layer in base_layers for w in layer.get_weights()]
    head = workspace.tree.layer("transfer_model/classifier")
    head_before = [np.array(w, copy=True) for w in head.get_weights()]
    button(at, "▶ Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_for_run(at)
    run = workspace.latest_run
    assert run.config.layer_rates == config.layer_rates
    assert run.layer_multipliers[f"{BASE}/conv1"] == 0.0
    assert run.layer_multipliers["transfer_model/classifier"] == 1.0
    # Keras's own weights: the base did not move (BatchNorm's moving statistics aside: a base
    # with multiplier 0 still runs in training mode), the head did.
    after = [w for layer in base_layers for w in layer.get_weights()]
    moving = {id(v) for layer in base_layers for v in layer.non_trainable_weights}
    variables = [v for layer in base_layers for v in layer.weights]
    for variable, start, end in zip(variables, before, after, strict=True):
        if id(variable) not in moving:
            assert np.array_equal(start.view(np.uint8), end.view(np.uint8)), variable.path
    assert any(
        not np.array_equal(a, b) for a, b in zip(head_before, head.get_weights(), strict=True)
    )


def test_decay_previews_each_layers_rate_and_the_drift_step_shows_the_graded_motion():
    at = rates_app()
    workspace = at.session_state["workspace"]
    at.checkbox(key="layer_decay").check().run()
    at.select_slider(key="layer_decay_factor").set_value(0.25).run()
    at.number_input(key="layer_decay_block").set_value(2).run()
    open_tab(at, "4 · Train")
    assert not at.exception, [e.value for e in at.exception]
    config = chosen(at)
    assert config.layer_rates.decay_factor == 0.25 and config.layer_rates.layers_per_block == 2
    expected = layer_rates_frame(config.layer_rates, workspace.tree, config.learning_rate)
    shown = next(frame.value for frame in at.dataframe if "Multiplier" in frame.value)
    assert list(shown["Layer path"]) == list(expected["path"])
    np.testing.assert_array_equal(shown["Learning rate"], expected["learning_rate"])
    # The top block (conv3 + batch_norm3) at 1, the next at 0.25, the lowest at 0.0625.
    multipliers = dict(zip(expected["path"], expected["multiplier"], strict=True))
    assert multipliers[f"{BASE}/conv3"] == multipliers[f"{BASE}/batch_norm3"] == 1.0
    assert multipliers[f"{BASE}/conv2"] == 0.25 and multipliers[f"{BASE}/conv1"] == 0.0625
    button(at, "▶ Train").click().run()
    wait_for_run(at)
    open_tab(at, "5 · Drift")
    assert not at.exception, [e.value for e in at.exception]
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any("Graded motion" in spec for spec in titles)
    assert workspace.latest_run.layer_multipliers == multipliers


def test_rates_from_a_link_or_a_restored_config_show_in_the_controls_and_are_kept():
    at = rates_app()
    head = "transfer_model/classifier"
    restored = LayerRates({BASE: 0.1, head: 0.5}, decay_factor=0.7, base_path=BASE)
    defaults = replace(DEFAULT_CONFIG, layer_rates=restored)
    at.session_state[state.TRAINING_DEFAULTS] = defaults  # as a link or a restore sets them
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.select_slider(key="base_rate_multiplier").value == 0.1
    assert at.checkbox(key="layer_decay").value
    assert at.select_slider(key="layer_decay_factor").value == 0.7
    assert any("1 layer multiplier(s)" in caption.value for caption in at.sidebar.caption)
    assert chosen(at).layer_rates == restored
    at.checkbox(key="layer_decay").uncheck().run()
    at.select_slider(key="base_rate_multiplier").set_value(1.0).run()
    assert chosen(at).layer_rates == LayerRates({head: 0.5}, base_path=BASE)
