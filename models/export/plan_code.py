"""Freeze plans off the live model: counts, restriction to its layers, statements on layers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import keras

from models.export.source import LINE_LIMIT, list_lines, literal
from models.lora import adapted_variable
from models.names import display_name
from models.tree import LayerTree, ParameterCounts, format_paths

_NAMED_ACCESS = re.compile(r'^(?P<parent>.+)\.get_layer\((?P<name>"(?:[^"\\]|\\.)*")\)$')
_MIN_LOOP = 4  # this many statements on named children of one parent become a loop


def restrict_plan(frozen_paths: Iterable[str], tree: LayerTree) -> tuple[frozenset[str], list[str]]:
    """Keeps the paths of a freeze plan that exist in a model, and names the others.

    Args:
        frozen_paths: Paths to freeze, e.g. from a run config or a share link.
        tree: The `LayerTree` of the model the plan is for.

    Returns:
        `(plan, notices)`: the paths that exist in `tree`, and one notice naming the paths
        that do not (empty when all exist).

    Example:
    >>> plan, notices = restrict_plan(["transfer_model/feature_extractor", "nope"], tree)
    >>> sorted(plan), len(notices)
    (['transfer_model/feature_extractor'], 1)
    """
    if isinstance(frozen_paths, str):
        raise TypeError(
            f"frozen_paths must be a collection of layer paths; received the single string "
            f"{frozen_paths!r}. Wrap it in a list: [{frozen_paths!r}]."
        )
    wanted = {str(path) for path in frozen_paths}
    existing = set(tree.paths())
    plan = frozenset(wanted & existing)
    missing = sorted(wanted - existing)
    notices = []
    if missing:
        notices.append(
            f"{len(missing)} frozen layer path(s) do not exist in the current model and were "
            f"skipped: {format_paths(missing)}. The model has {len(existing)} layers; the rest "
            "of the plan was applied."
        )
    return plan, notices


def plan_counts(tree: LayerTree, frozen_paths: Iterable[str]) -> ParameterCounts:
    """The parameter counts a model would have with a freeze plan, without touching it.

    A weight trains when its own layer's flag is True and the top model's flag is True (see
    `models.tree`); state such as BatchNormalization's moving statistics never does, nor does
    the kernel a LoRA adapter adapts (`models.lora`): only its adapters and bias can.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan: paths whose flag would be False.

    Returns:
        The `ParameterCounts` Keras would report after `tree.apply_frozen_paths(frozen_paths)`.

    Example:
    >>> plan_counts(tree, [tree.root_path]).trainable
    0
    """
    plan = set(frozen_paths)
    root_trainable = tree.root_path not in plan
    trainable = non_trainable = 0
    for node in tree.nodes():
        weights = node.own_params - node.own_state_params
        adapted = 0
        if node.lora_rank is not None:
            adapted = math.prod(adapted_variable(tree.layer(node.path)).shape)
        if root_trainable and node.path not in plan:
            trainable += weights - adapted
            non_trainable += adapted
        else:
            non_trainable += weights
        non_trainable += node.own_state_params
    return ParameterCounts(trainable, non_trainable)


def freeze_statements(tree: LayerTree, frozen_paths: Iterable[str]) -> list[tuple[str, bool]]:
    """The fewest top-down `trainable` assignments that give a fresh model a freeze plan.

    Walks the tree in pre-order from an all-trainable model. Setting `trainable` on a layer
    sets it on everything under it, so a node needs a statement only when its wanted flag
    differs from the one its nearest assigned ancestor left it with: freeze a node whose
    parent is trainable, re-enable a node whose parent is frozen. Every statement changes
    the flag of every layer it reaches, so TensorFlow's skipping of unchanged assignments
    never matters.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan: paths whose flag is `trainable=False`.

    Returns:
        `(path, trainable)` pairs in the order to apply them.

    Example:
    >>> freeze_statements(tree, tree.frozen_paths())
    [('transfer_model/feature_extractor', False)]
    """
    plan = set(frozen_paths)
    statements: list[tuple[str, bool]] = []
    flag: dict[str, bool] = {}
    for path in tree.paths():
        ancestors = tree.ancestors(path)
        inherited = flag[ancestors[0]] if ancestors else True
        wanted = path not in plan
        if wanted != inherited:
            statements.append((path, wanted))
        flag[path] = wanted
    return statements


def plan_lines(tree: LayerTree, plan: set[str], base_path: str) -> list[str]:
    """The script's freeze plan: `freeze_statements` as code, runs of siblings as a loop.

    Args:
        tree: The model's `LayerTree`.
        plan: The paths to freeze (all in `tree`).
        base_path: The path of the nested base, which the script calls `base`.

    Returns:
        Source lines, comments first.

    Example:
    >>> base_path = "transfer_model/feature_extractor"
    >>> plan_lines(tree, {base_path}, base_path)[-1]
    'base.trainable = False'
    """
    statements = freeze_statements(tree, plan)
    if not statements:
        return ["# Freeze plan: nothing is frozen, every layer trains."]
    lines = [
        f"# Freeze plan: {len(plan)} frozen layer(s), set with {len(statements)} statement(s).",
        "# Setting `trainable` on a layer sets it on every layer inside it, so the statements",
        "# go top-down: freeze a layer, then re-enable the children that should train.",
    ]
    rows = [
        (address(tree, path, base_path), f".trainable = {flag}", _REENABLED if flag else "")
        for path, flag in statements
    ]
    return lines + statement_lines(rows)


_REENABLED = "re-enabled inside a frozen parent"


def statement_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    """Statements on layers, each run of `_MIN_LOOP` or more on named siblings as one loop.

    Args:
        rows: `(target, action, comment)` in order: `target` reaches a layer from `model` or
            `base` (`address`), `action` follows it (".trainable = False",
            ".enable_lora(4, lora_alpha=4.0)") and `comment` ("" for none) ends its line
            when it fits.

    Returns:
        Source lines: consecutive rows with the same action on children of one parent
        reached by name become `for name in [...]:` loops.

    Example:
    >>> statement_lines([("base", ".trainable = False", "")])
    ['base.trainable = False']
    """
    keyed = [(*row, *_loop_key(row[0], row[1])) for row in rows]
    lines: list[str] = []
    index = 0
    while index < len(keyed):
        target, action, comment, key, _ = keyed[index]
        end = index + 1
        while key is not None and end < len(keyed) and keyed[end][3] == key:
            end += 1
        if end - index >= _MIN_LOOP:
            lines += _loop_lines(key, [row[4] for row in keyed[index:end]])
            index = end
            continue
        lines += _statement_lines(target, action, comment)
        index += 1
    return lines


def _loop_key(target: str, action: str) -> tuple[tuple[str, str] | None, str | None]:
    """`((parent, action), name literal)`: rows sharing a loop key form a loop."""
    match = _NAMED_ACCESS.match(target)
    if match is None:
        return None, None
    return (match.group("parent"), action), match.group("name")


def _loop_lines(key: tuple[str, str], names: list[str]) -> list[str]:
    """One `for name in [...]` loop over consecutive named children of one parent."""
    parent, action = key
    return [
        f"# {len(names)} consecutive layers of {parent}, in model order.",
        *list_lines("for name in ", names, "", ":"),
        f"    {parent}.get_layer(name){action}",
    ]


def _statement_lines(target: str, action: str, comment: str) -> list[str]:
    """One statement, split in two when the line would be too long."""
    statement = f"{target}{action}"
    if len(statement) >= LINE_LIMIT:
        return [f"layer = {target}", f"layer{action}"]
    commented = f"{statement}  # {comment}" if comment else statement
    return [statement if len(commented) >= LINE_LIMIT else commented]


def address(tree: LayerTree, path: str, base_path: str | None) -> str:
    """The Python expression that reaches the layer at `path` from `model` (or from `base`).

    Example:
    >>> base_path = "transfer_model/feature_extractor"
    >>> address(tree, f"{base_path}/conv1", base_path)
    'base.get_layer("conv1")'
    """
    if path == tree.root_path:
        return "model"
    if path == base_path:
        return "base"
    chain = [*reversed(tree.ancestors(path)), path]  # the root first, `path` last
    start, expression = 0, "model"
    if base_path in chain:
        start, expression = chain.index(base_path), "base"
    for parent_path, child_path in zip(chain[start:], chain[start + 1 :], strict=False):
        # The script names the base's input layer explicitly, so its name is stable.
        base_input = parent_path == base_path
        expression += _child_access(
            tree.layer(parent_path), tree.layer(child_path), base_input=base_input
        )
    return expression


def _child_access(
    parent: keras.layers.Layer, child: keras.layers.Layer, *, base_input: bool = False
) -> str:
    """`.get_layer(...)` or `.attribute` reaching `child` from `parent` in the script."""
    if isinstance(parent, keras.Model):
        layers = list(parent.layers)
        position = next(i for i, layer in enumerate(layers) if layer is child)
        same_name = sum(1 for layer in layers if layer.name == child.name)
        automatic = isinstance(child, keras.layers.InputLayer) and re.fullmatch(
            r"input_layer(_\d+)?", child.name
        )
        if (automatic and not base_input) or same_name > 1:
            # Automatic input names ("input_layer_3") differ between Python processes, and
            # duplicate names are ambiguous: use the position instead.
            return f".get_layer(index={position})"
        # The script loads the uploaded file, so it names layers as that file does.
        return f".get_layer({literal(display_name(child.name))})"
    for attribute, value in vars(parent).items():
        if value is child and attribute.isidentifier():
            return f".{attribute}"
    raise ValueError(
        f"Cannot write code that reaches layer {child.name!r} inside {parent.name!r} "
        f"({type(parent).__name__}): it is neither in a model's layers nor an attribute. "
        "Freeze its parent instead."
    )
