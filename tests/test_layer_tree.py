"""Tests for components.layer_tree: the payload, plan validation and the AppTest round trip.

How AppTest drives this Custom Components v2 component (checked with Streamlit 1.67):

- The mounted component is an `UnknownElement` of type "bidi_component":
  `el = at.get("bidi_component")[0]`; `el.key` is the user key, `el.value` the state mapping
  (`{"frozen": [...]}`), `json.loads(el.proto.json)` the `data` payload sent to the browser.
- Public way: `at.session_state["layer_tree"] = {"frozen": [...]}` then `at.run()`. The mount
  returns that state, so `render_layer_tree` returns the new plan. The `on_frozen_change`
  callback does NOT run (like any widget, callbacks fire only for changes from the frontend).
- Exactly what the browser does (callback included): `AppTest` has no setter for unknown
  elements, so send a widget state through the private `_run`, as the frontend would:
      ws = at._tree.get_widget_states()
      w = ws.widgets.add(); w.id = el.proto.id
      w.json_value = json.dumps({"frozen": [...]})
      at._run(ws)
  The callback then runs before the script body, so the same run already sends the new flags.
"""

import json
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from components.layer_tree import frozen_plan_from_state, render_layer_tree, tree_payload
from models.tree import LayerTree
from tests.test_tree import small_nested_model

ASSETS = Path(__file__).resolve().parents[1] / "components" / "layer_tree"


# ------------------------------------------------------------------------------ tree_payload
def test_payload_lists_every_node_in_pre_order_with_parent_indices():
    tree = LayerTree(small_nested_model())
    payload = tree_payload(tree.nodes())
    nodes = payload["nodes"]
    assert payload["root"] == "outer"
    assert [n["path"] for n in nodes] == tree.paths()
    assert [n["path"] for n in nodes] == [
        "outer",
        "outer/inner",
        "outer/inner/a",
        "outer/inner/bn",
        "outer/inner/b",
        "outer/c",
    ]
    for node in nodes:
        if node["parent"] is None:
            assert node["path"] == "outer"
        else:
            parent = nodes[node["parent"]]
            assert node["path"].startswith(parent["path"] + "/")
            assert node["depth"] == parent["depth"] + 1
    assert [n["num_children"] for n in nodes] == [2, 3, 0, 0, 0, 0]


def test_payload_carries_flags_counts_and_badges():
    model = small_nested_model()
    tree = LayerTree(model)
    tree.set_frozen("outer/inner", True)
    model.get_layer("inner").get_layer("b").trainable = True  # back on under a frozen parent
    by_path = {n["path"]: n for n in tree_payload(tree.nodes())["nodes"]}

    assert by_path["outer/inner"]["trainable"] is False
    assert by_path["outer/inner/a"]["trainable"] is False
    b = by_path["outer/inner/b"]
    assert (b["trainable"], b["ancestor_frozen"], b["effectively_trainable"]) == (True, True, True)
    assert by_path["outer/inner/bn"]["is_batch_norm"] is True
    assert by_path["outer/inner"]["is_model"] is True
    assert not any(n["is_shared"] for n in by_path.values())
    root = by_path["outer"]
    assert root["trainable_params"] == sum(int(w.numpy().size) for w in model.trainable_weights)
    assert root["non_trainable_params"] == sum(
        int(w.numpy().size) for w in model.non_trainable_weights
    )

    tree.set_frozen("outer", True)
    model.get_layer("inner").get_layer("b").trainable = True
    b = {n["path"]: n for n in tree_payload(tree.nodes())["nodes"]}["outer/inner/b"]
    assert (b["ancestor_frozen"], b["effectively_trainable"]) == (True, False)


def test_payload_marks_shared_layers():
    shared = keras.layers.Dense(2, name="shared")
    inputs = keras.Input((2,))
    outputs = shared(shared(inputs))
    tree = LayerTree(keras.Model(inputs, outputs, name="m"))
    by_path = {n["path"]: n for n in tree_payload(tree.nodes())["nodes"]}
    assert by_path["m/shared"]["is_shared"] is True


def test_payload_is_plain_json():
    payload = tree_payload(LayerTree(small_nested_model()).nodes())
    assert json.loads(json.dumps(payload)) == payload
    allowed = (str, int, float, bool, type(None))

    def plain(value) -> bool:
        if isinstance(value, list):
            return all(plain(item) for item in value)
        return isinstance(value, allowed)

    assert all(plain(v) for n in payload["nodes"] for v in n.values())


def test_payload_of_no_nodes_is_empty():
    assert tree_payload([]) == {"root": None, "nodes": []}


def test_payload_rejects_nodes_out_of_pre_order():
    nodes = LayerTree(small_nested_model()).nodes()
    with pytest.raises(ValueError, match="comes before its parent"):
        tree_payload(list(reversed(nodes)))


# --------------------------------------------------------------------- frozen_plan_from_state
def test_plan_from_list_of_paths():
    assert frozen_plan_from_state(["m/b", "m"]) == frozenset({"m", "m/b"})
    assert frozen_plan_from_state([]) == frozenset()
    assert frozen_plan_from_state(("m",)) == frozenset({"m"})


def test_plan_from_session_state_mapping_and_none():
    assert frozen_plan_from_state({"frozen": ["m/a"]}) == frozenset({"m/a"})
    assert frozen_plan_from_state({}) is None
    assert frozen_plan_from_state({"frozen": None}) is None
    assert frozen_plan_from_state(None) is None


@pytest.mark.parametrize("value", ["m/a", b"m/a", 3, {"m/a": True}.keys(), 1.5])
def test_plan_rejects_non_lists(value):
    with pytest.raises(TypeError, match="list of layer paths"):
        frozen_plan_from_state(value)


@pytest.mark.parametrize("value", [["m", 3], [None], [["m/a"]]])
def test_plan_rejects_non_string_items(value):
    with pytest.raises(TypeError, match="only layer paths"):
        frozen_plan_from_state(value)


# --------------------------------------------------------------------------- AppTest round trip
def _tree_app():
    """A tiny app: the layer tree over a nested model, applying the plan in the callback."""
    import keras
    import streamlit as st

    from components.layer_tree import frozen_plan_from_state, render_layer_tree
    from models.tree import LayerTree

    if "model" not in st.session_state:
        inner = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(3, name="b")],
            name="inner",
        )
        st.session_state.model = keras.Sequential(
            [keras.Input((4,)), inner, keras.layers.Dense(2, name="c")], name="outer"
        )
        st.session_state.callbacks = 0
    tree = LayerTree(st.session_state.model)

    def apply_plan():
        st.session_state.callbacks += 1
        tree.apply_frozen_paths(frozen_plan_from_state(st.session_state["layer_tree"]))

    st.session_state.returned = render_layer_tree(
        tree.nodes(), key="layer_tree", on_change=apply_plan
    )
    st.session_state.model_frozen = tree.frozen_paths()


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_function(_tree_app, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def _sent_flags(at: AppTest) -> dict[str, bool]:
    """The `trainable` flags in the data the app sent to the browser this run."""
    payload = json.loads(at.get("bidi_component")[0].proto.json)
    return {n["path"]: n["trainable"] for n in payload["nodes"]}


def test_component_mounts_with_current_plan_as_default(app):
    (element,) = app.get("bidi_component")
    assert element.proto.component_name == "freezelab_layer_tree"
    assert element.key == "layer_tree"
    assert element.value == {"frozen": []}
    assert app.session_state["returned"] == frozenset()
    assert all(_sent_flags(app).values())


def test_session_state_plan_reaches_the_return_value(app):
    plan = ["outer/inner", "outer/inner/a", "outer/inner/b"]
    app.session_state["layer_tree"] = {"frozen": plan}
    app.run()
    assert not app.exception
    assert app.session_state["returned"] == frozenset(plan)
    # A programmatic session-state write is not a user change: no callback, model unchanged.
    assert app.session_state["callbacks"] == 0
    assert app.session_state["model_frozen"] == frozenset()


def test_browser_state_change_runs_callback_before_the_script(app):
    plan = ["outer/inner", "outer/inner/a"]  # inner/b set back to trainable under frozen inner
    element = app.get("bidi_component")[0]
    widget_states = app._tree.get_widget_states()
    state = widget_states.widgets.add()
    state.id = element.proto.id
    state.json_value = json.dumps({"frozen": plan})
    app._run(widget_states)
    assert not app.exception
    assert app.session_state["callbacks"] == 1
    assert app.session_state["returned"] == frozenset(plan)
    assert app.session_state["model_frozen"] == frozenset(plan)
    # The same run already sends the applied flags, so the browser redraws the new plan.
    assert _sent_flags(app) == {
        "outer": True,
        "outer/inner": False,
        "outer/inner/a": False,
        "outer/inner/b": True,
        "outer/c": True,
    }


def test_stale_plan_from_another_model_is_ignored(app):
    app.session_state["layer_tree"] = {"frozen": ["other_model/dense"]}
    app.run()
    assert not app.exception
    assert app.session_state["returned"] == frozenset()


def test_malformed_plan_raises_a_clear_error(app):
    app.session_state["layer_tree"] = {"frozen": "outer"}
    # .streamlit/config.toml redacts error details (showErrorDetails = "none"); show them here.
    with patch_config_options({"client.showErrorDetails": "full"}):
        app.run()
    assert "list of layer paths" in app.exception[0].message


def test_render_outside_streamlit_returns_none():
    nodes = LayerTree(small_nested_model()).nodes()
    assert render_layer_tree(nodes, key="bare") is None


# ----------------------------------------------------------------------- static checks on the JS
def _js() -> str:
    return (ASSETS / "tree.js").read_text(encoding="utf-8")


def test_js_never_parses_html():
    source = _js()
    assert not re.search(r"\.(innerHTML|outerHTML)\s*\+?=", source)
    assert "insertAdjacentHTML" not in source
    assert "createContextualFragment" not in source
    assert "document.write" not in source


def test_js_labels_every_checkbox_and_caret():
    source = _js()
    assert 'setAttribute("aria-label", `freeze ${node.path}`)' in source
    assert 'setAttribute("aria-label", `expand ${node.path}`)' in source
    assert 'setAttribute("data-path", node.path)' in source
    assert 'setAttribute("aria-label", "search layers")' in source
    assert '"Expand all"' in source and '"Collapse all"' in source
    assert "setStateValue(STATE_KEY, plan)" in source and 'const STATE_KEY = "frozen"' in source


def test_assets_load_nothing_from_the_network():
    for name in ("tree.html", "tree.css", "tree.js"):
        text = (ASSETS / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|@import|url\(|fetch\(|import\s*\(", text), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_payload_own_counts_sum_to_keras_totals_for_random_plans(seed):
    """The browser sums own counts into the totals on a click; the data must allow it."""
    model = small_nested_model()
    tree = LayerTree(model)
    generator = np.random.default_rng(seed)
    paths = tree.paths()
    tree.apply_frozen_paths({p for p in paths if generator.random() < 0.4})
    nodes = tree_payload(tree.nodes())["nodes"]
    root_trainable = nodes[0]["trainable"]
    trainable = sum(
        n["own_params"] - n["own_state_params"] for n in nodes if n["trainable"] and root_trainable
    )
    total = sum(n["own_params"] for n in nodes)
    assert trainable == sum(math.prod(w.shape) for w in model.trainable_weights)
    assert total - trainable == sum(math.prod(w.shape) for w in model.non_trainable_weights)
