"""Layer tree: a Custom Components v2 widget that shows a model's layers and returns a freeze plan.

The component shows every node of `models.tree.LayerTree` as a collapsible row with a tri-state
checkbox ("frozen" = the layer's own `trainable` flag is False), parameter counts and badges for
the surprising Keras cases. It reports one state value, `frozen`: the sorted paths the user wants
frozen. Python stays the source of truth: the app applies the plan with
`LayerTree.apply_frozen_paths`, and the JavaScript always redraws from the `data` it is sent.

The HTML, CSS and JavaScript live beside this file (`tree.html`, `tree.css`, `tree.js`). They are
read once at import and registered once; nothing is fetched from the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from models.lora import ADAPTED_VARIABLE_NAMES
from models.tree import LayerNode

COMPONENT_NAME = "freezelab_layer_tree"
STATE_KEY = "frozen"
LORA_TRIGGER = "lora"  # the path of a layer whose LoRA chip was clicked (a one-shot trigger)
_ASSET_DIR = Path(__file__).resolve().parent


def _read_asset(filename: str) -> str:
    return (_ASSET_DIR / filename).read_text(encoding="utf-8")


# Registered once, at import. Mounting (below) happens on every script run.
_COMPONENT = st.components.v2.component(
    COMPONENT_NAME,
    html=_read_asset("tree.html"),
    css=_read_asset("tree.css"),
    js=_read_asset("tree.js"),
)


def tree_payload(nodes: list[LayerNode]) -> dict[str, Any]:
    """Turns the core's layer nodes into the plain JSON data the browser component draws.

    Pure function: no Streamlit call, so it can be tested and timed on its own. Nodes keep their
    pre-order; each node names its parent by index in the list, which is all the JavaScript needs
    to rebuild the hierarchy (a subtree is the contiguous run of deeper nodes after its root).

    Args:
        nodes: `LayerTree(model).nodes()`, the top model first, in pre-order.

    Returns:
        `{"root": <top model path or None>, "nodes": [<node dict>, ...]}`. Each node dict holds
        `path`, `name`, `class_name`, `depth`, `parent` (index or None), `num_children`,
        `trainable` (own flag), `effectively_trainable`, `ancestor_frozen`, `trainable_params`,
        `non_trainable_params` (subtree), `own_params` and `own_never_trains` (the layer's own
        variables, each counted once, and those that never train, moving statistics and a LoRA
        layer's kernel: the browser sums them into the model's totals on a click),
        `is_batch_norm`, `is_model`, `is_shared`, `supports_lora`, `lora_rank`, `lora_alpha`
        and `variables` ([name, params, trains] of its own variables); only str, int, float,
        bool, None and lists of them, so `json.dumps` accepts it.

    Raises:
        ValueError: If the nodes are not in pre-order (a parent must come before its children).

    Example:
    >>> payload = tree_payload(LayerTree(model).nodes())
    >>> payload["nodes"][0]["path"] == payload["root"]
    True
    """
    index_of: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for index, node in enumerate(nodes):
        parent: int | None = None
        if node.parent_path is not None:
            if node.parent_path not in index_of:
                raise ValueError(
                    f"Layer node '{node.path}' comes before its parent '{node.parent_path}'. "
                    "tree_payload expects LayerTree(model).nodes(), which lists parents first."
                )
            parent = index_of[node.parent_path]
        index_of[node.path] = index
        never_trains = int(node.own_state_params)
        if node.lora_rank:
            never_trains += sum(
                v.params for v in node.variables if v.name in ADAPTED_VARIABLE_NAMES
            )
        rows.append(
            {
                "path": str(node.path),
                "name": str(node.name),
                "class_name": str(node.class_name),
                "depth": int(node.depth),
                "parent": parent,
                "num_children": len(node.children),
                "trainable": bool(node.trainable),
                "effectively_trainable": bool(node.effectively_trainable),
                "ancestor_frozen": bool(node.ancestor_frozen),
                "trainable_params": int(node.trainable_params),
                "non_trainable_params": int(node.non_trainable_params),
                "own_params": int(node.own_params),
                "own_state_params": int(node.own_state_params),
                "own_never_trains": never_trains,
                "is_batch_norm": bool(node.is_batch_norm),
                "is_model": bool(node.is_model),
                "is_shared": bool(node.is_shared),
                "supports_lora": bool(node.supports_lora),
                "lora_rank": int(node.lora_rank) if node.lora_rank else None,
                "lora_alpha": float(node.lora_alpha) if node.lora_rank else None,
                "variables": [[str(v.name), int(v.params), bool(v.trains)] for v in node.variables],
            }
        )
    return {"root": rows[0]["path"] if rows else None, "nodes": rows}


def frozen_plan_from_state(value: Any) -> frozenset[str] | None:
    """Validates the freeze plan the browser sent back and turns it into a frozenset of paths.

    The value comes from the browser, so it is checked rather than trusted.

    Args:
        value: The component's `frozen` state: a list of layer paths. A mapping with a
            `"frozen"` entry (what the session holds under the component's key, handy in an
            `on_change` callback) is read through. `None` means no plan yet.

    Returns:
        The set of paths to freeze, or None when `value` (or its `"frozen"` entry) is None.

    Raises:
        TypeError: If the value is not a list of strings.

    Example:
    >>> sorted(frozen_plan_from_state(["model/dense", "model"]))
    ['model', 'model/dense']
    >>> frozen_plan_from_state(state.get("layer_tree"))  # inside on_change
    frozenset({'model/dense'})
    """
    if isinstance(value, Mapping):
        value = value.get(STATE_KEY)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(
            "The layer tree's freeze plan must be a list of layer paths (strings), received "
            f"{type(value).__name__}: {value!r:.80}. Send setStateValue('frozen', [paths])."
        )
    wrong = [item for item in value if not isinstance(item, str)]
    if wrong:
        raise TypeError(
            "The layer tree's freeze plan must contain only layer paths (strings), received "
            f"{len(wrong)} other value(s), e.g. {wrong[0]!r:.80} ({type(wrong[0]).__name__})."
        )
    return frozenset(value)


def _ignore_change() -> None:
    """No-op callback: CCv2 only accepts state named by an `on_<name>_change` callback."""


def lora_toggle_from_state(value: Any) -> str | None:
    """The layer path whose LoRA chip the user clicked, from the component's state.

    Args:
        value: What the session holds under the component's key (a mapping with a `"lora"`
            trigger), or the trigger's value itself.

    Returns:
        The path, or None when no chip was clicked in this run.

    Raises:
        TypeError: When the browser sent something other than a path.
    """
    if isinstance(value, Mapping):
        value = value.get(LORA_TRIGGER)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            "The layer tree's LoRA toggle must be a layer path (a string), received "
            f"{type(value).__name__}: {value!r:.80}."
        )
    return value


def render_layer_tree(
    nodes: list[LayerNode],
    *,
    key: str,
    on_change: Callable[[], None] | None = None,
    on_lora_toggle: Callable[[], None] | None = None,
    height: int | None = None,
) -> frozenset[str] | None:
    """Draws the layer tree and returns the set of layer paths the user wants frozen.

    The component shows the flags in `nodes`; it never keeps its own copy of the model. When the
    user ticks a box, the browser sends the whole resulting plan (the node and, as Keras does,
    all its descendants take the clicked state) and Streamlit reruns. Apply the plan in
    `on_change` (it runs before the script, so this run already draws the new flags), e.g. with
    `LayerTree.apply_frozen_paths(frozen_plan_from_state(state.get(key)))`.

    The component remembers the last plan under `key` until the key changes. When something
    else changes the flags (bulk buttons, another model), mount it with a new `key`, or the old
    plan comes back. A plan naming paths that are not in `nodes` (left over from another model)
    is ignored and the current plan is returned.

    Args:
        nodes: `LayerTree(model).nodes()`, in pre-order.
        key: Fixed Streamlit key of this component instance; the state lives under it in
            the session under that key (a mapping with a `"frozen"` list).
        on_change: Called, before the rerun's script body, when the user changed the plan.
        on_lora_toggle: Called, before the rerun's script body, when the user clicked a
            layer's LoRA chip (read the path with `lora_toggle_from_state(state.get(key))`).
            None hides the chips.
        height: Height in pixels; None lets the component size itself (it scrolls past ~520 px).

    Returns:
        The frozen paths the user wants (equal to the current frozen paths until they click),
        or None when there is no state (outside a Streamlit run).

    Raises:
        TypeError: If the browser sent a malformed plan.

    Example:
    >>> tree = LayerTree(model)
    >>> def apply_plan():
    ...     tree.apply_frozen_paths(frozen_plan_from_state(state.get("layer_tree")))
    >>> wanted = render_layer_tree(tree.nodes(), key="layer_tree", on_change=apply_plan)
    """
    current = sorted(node.path for node in nodes if not node.trainable)
    data = tree_payload(nodes)
    data["lora_chips"] = on_lora_toggle is not None
    result = _COMPONENT(
        key=key,
        data=data,
        default={STATE_KEY: current},
        height=height if height is not None else "content",
        on_frozen_change=on_change if on_change is not None else _ignore_change,
        on_lora_change=on_lora_toggle if on_lora_toggle is not None else _ignore_change,
    )
    plan = frozen_plan_from_state(result.get(STATE_KEY))
    if plan is None:
        return None
    known = {node.path for node in nodes}
    if not plan <= known:
        return frozenset(current)
    return plan
