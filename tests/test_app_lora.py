"""AppTest checks of LoRA in the Freeze step: the tree's chips, the panel's recipes and counts."""

import json

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.app_helpers import open_tab
from tests.test_app import APP, BASE, button, keras_counts, metrics, tree_element, wait_for_run

TRIGGER_SUFFIX = "events"


def click_lora_chip(at: AppTest, path: str) -> AppTest:
    """Sends the chip's trigger exactly as the browser does (the callback runs first)."""
    from streamlit.components.v2.bidi_component.main import _make_trigger_id

    element = tree_element(at)
    states = at._tree.get_widget_states()
    widget = states.widgets.add()
    widget.id = _make_trigger_id(element.proto.id, TRIGGER_SUFFIX)
    widget.json_trigger_value = json.dumps([{"event": "lora", "value": path}])
    return at._run(states)


def payload_node(at: AppTest, path: str) -> dict:
    nodes = json.loads(tree_element(at).proto.json)["nodes"]
    return next(node for node in nodes if node["path"] == path)


def test_a_chip_adds_lora_with_the_panels_rank_and_a_second_click_removes_it():
    at = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    conv = f"{BASE}/conv1"
    assert payload_node(at, conv)["supports_lora"] and payload_node(at, conv)["lora_rank"] is None
    assert not payload_node(at, f"{BASE}/batch_norm1")["supports_lora"]
    at.number_input(key="lora_rank").set_value(2).run()
    at.number_input(key="lora_alpha").set_value(8.0).run()
    click_lora_chip(at, conv)
    assert not at.exception, [e.value for e in at.exception]
    workspace = at.session_state["workspace"]
    node = payload_node(at, conv)
    assert (node["lora_rank"], node["lora_alpha"]) == (2, 8.0)
    states = {name: trains for name, _params, trains in node["variables"]}
    # The CNN's convolutions have no bias (BatchNormalization follows): only the adapters train.
    assert states == {"kernel": False, "lora_kernel_a": True, "lora_kernel_b": True}
    trainable, non_trainable = keras_counts(workspace.model)
    assert metrics(at)["Trainable params"] == f"{trainable:,}"
    assert metrics(at)["Non-trainable params"] == f"{non_trainable:,}"
    # The browser's own sums (own_params - own_never_trains) equal Keras's.
    nodes = json.loads(tree_element(at).proto.json)["nodes"]
    browser = sum(n["own_params"] - n["own_never_trains"] for n in nodes if n["trainable"])
    assert browser == trainable
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["feature_extractor/conv1"]
    assert table["trains now"][0] == "lora_kernel_a, lora_kernel_b"

    click_lora_chip(at, conv)  # the second click removes it
    assert not at.exception
    assert at.session_state["workspace"].lora_plan() == {}
    assert payload_node(at, conv)["lora_rank"] is None


def test_recipes_say_how_many_layers_they_adapt_and_remove_all_undoes_them():
    at = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    dense = button(at, "LoRA on every Dense (0)")  # the CNN's base has no Dense layer
    assert dense.disabled and button(at, "LoRA on attention q, v (0)").disabled
    assert button(at, "Remove all adapters").disabled
    workspace = at.session_state["workspace"]
    click_lora_chip(at, f"{BASE}/conv2")
    assert list(workspace.lora_plan()) == [f"{BASE}/conv2"]
    button(at, "Remove all adapters").click().run()
    assert not at.exception
    assert workspace.lora_plan() == {}
    assert any("Removed every LoRA adapter" in s.value for s in at.success)


def test_a_chip_on_a_layer_keras_cannot_adapt_says_why_and_changes_nothing():
    at = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    click_lora_chip(at, f"{BASE}/batch_norm1")
    assert not at.exception
    assert at.session_state["workspace"].lora_plan() == {}
    assert any("not on BatchNormalization" in w.value for w in at.warning)


def test_after_a_lora_run_the_drift_step_shows_each_effective_kernel_next_to_its_adapter():
    at = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    at.number_input(key="lora_rank").set_value(2).run()
    click_lora_chip(at, f"{BASE}/conv3")
    workspace = at.session_state["workspace"]
    button(at, "▶ Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_for_run(at)
    open_tab(at, "5 · Drift")
    assert not at.exception, [e.value for e in at.exception]
    proof = "The LoRA layer's frozen kernel is bitwise unchanged."
    assert any(s.value == proof for s in at.success), [s.value for s in at.success]
    table = next(
        frame.value for frame in at.dataframe if "Effective kernel relative change" in frame.value
    )
    layer = workspace.tree.layer(f"{BASE}/conv3")
    row = table.iloc[0]
    setting = workspace.lora_plan()[f"{BASE}/conv3"]
    assert setting.rank == 2
    assert row["Layer path"] == f"{BASE}/conv3"
    assert row["Adapter"] == f"r2 α{setting.effective_alpha:g}"
    # Sizes from Keras's own variables.
    a, b, kernel = (
        np.asarray(v.numpy()) for v in (layer.lora_kernel_a, layer.lora_kernel_b, layer._kernel)
    )
    assert row["Adapter parameters"] == a.size + b.size
    assert row["Kernel parameters"] == kernel.size
    assert row["Effective kernel relative change"] > 0
    drift = workspace.latest_run.job.drift_frame()
    final = drift[(drift.layer_path == f"{BASE}/conv3") & (drift.kind == "effective_kernel")]
    assert row["Effective kernel relative change"] == final.relative_change.iloc[-1]
    words = f"the effective kernel moved **{final.relative_change.iloc[-1]:.2%}** of its norm"
    assert any(words in text.value for text in at.markdown)
