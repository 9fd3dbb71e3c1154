"""AppTest checks of LoRA in the Freeze step: the tree's chips, the panel's recipes and counts."""

import json

from streamlit.testing.v1 import AppTest

from tests.app_helpers import open_tab
from tests.test_app import APP, BASE, button, keras_counts, metrics, tree_element

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
