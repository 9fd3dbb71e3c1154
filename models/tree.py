"""The layer tree: any Keras 3 model seen as a tree of layers, with Keras-exact parameter counts.

Keras facts this module relies on (measured with Keras 3.15, see tests/test_tree.py):

- `model.trainable_weights` is `[]` when the *top* model's flag is False; otherwise it is every
  weight whose own `variable.trainable` is True. A nested model's flag therefore does not gate
  its children: a child set back to `trainable=True` under a frozen nested model IS trained by
  `fit` on the outer model (its parent's own `trainable_weights` is `[]`, the outer model's is
  not). `LayerNode.effectively_trainable` reports what Keras really trains, and
  `LayerNode.ancestor_frozen` flags the surprising case.
- A layer object used by two parents (e.g. one Dense inside two nested Sequential models) has ONE
  flag. The tree lists it once, under the path where the pre-order walk meets it first; its other
  paths are aliases (`aliases`, `canonical_path`) that every method accepts. Each parent's
  subtree counts its weights (`LayerNode.shared_params` says how many are shared); the top
  model's totals count each variable once, as `model.trainable_weights` does.

`LayerTree` builds and reads the tree here; its freezing methods, and `set_trainable` with the
facts about Keras's `trainable` setter, live in `models.freezing`, and the plain data it reports
(`LayerNode`, `ParameterCounts`) in `models.layer_node`; all are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import keras
import pandas as pd

from models.freezing import FreezingOperations, set_trainable
from models.layer_node import LayerNode, ParameterCounts, VariableState
from models.lora import is_lora, supports_lora
from models.names import display_name

__all__ = [
    "PATH_SEPARATOR",
    "STATE_KIND",
    "WEIGHTS_KIND",
    "LayerNode",
    "LayerTree",
    "ParameterCounts",
    "child_layers",
    "format_paths",
    "set_trainable",
]

PATH_SEPARATOR = "/"
WEIGHTS_KIND = "weights"
STATE_KIND = "state"


@dataclass
class _Entry:
    """Static facts about one node, computed once when the tree is built."""

    path: str
    layer: keras.layers.Layer
    depth: int
    parent_path: str | None
    children: list[str] = field(default_factory=list)
    # (variable, kind, size) for variables owned by this layer and counted here first.
    own_variables: list[tuple[keras.Variable, str, int]] = field(default_factory=list)
    is_shared: bool = False
    # Canonical paths of every direct Keras child in order, shared ones met earlier included.
    members: list[str] = field(default_factory=list)
    # Ids of the distinct variables in the subtree (shared layers and variables included).
    subtree_variable_ids: tuple[int, ...] = ()


def _variable_size(variable: keras.Variable) -> int:
    return int(math.prod(variable.shape))


def format_paths(paths: Sequence[str], limit: int = 5) -> str:
    """Names the first `limit` paths for a message, then says how many more there are.

    Example:
    >>> format_paths(["m/a", "m/b"], limit=1)
    "'m/a' and 1 more"
    """
    shown = ", ".join(repr(path) for path in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _graph_call_sites(layer: keras.layers.Layer) -> dict[int, int]:
    """Counts how often each operation is called in a functional graph (empty otherwise)."""
    graph = layer if hasattr(layer, "_nodes_by_depth") else getattr(layer, "_functional", None)
    counts: dict[int, int] = {}
    for nodes in getattr(graph, "_nodes_by_depth", {}).values():
        for node in nodes:
            operation = getattr(node, "operation", None)
            if operation is not None:
                counts[id(operation)] = counts.get(id(operation), 0) + 1
    return counts


def child_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Returns the direct sublayers of a layer or model, in Keras's tracking order.

    Args:
        layer: Any Keras layer or model.

    Returns:
        The layers Keras tracks directly under `layer` (for a model, its `layers`, input layers
        included; for a layer such as MultiHeadAttention, its sublayers).

    Example:
    >>> inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    >>> [l.name for l in child_layers(inner)]
    ['d']
    """
    if isinstance(layer, keras.Model):
        return list(layer.layers)  # What users see: Sequential hides its InputLayer.
    return list(layer._flatten_layers(include_self=False, recursive=False))


class LayerTree(FreezingOperations):
    """A Keras model seen as a tree of layers, with Keras-exact freezing and parameter counts.

    The tree reads and writes the model's own `trainable` flags; the model stays the source of
    truth, so counts always match `model.trainable_weights` and `model.non_trainable_weights`.
    The freezing methods (`set_frozen`, `freeze_up_to`, `unfreeze_top`, `apply_frozen_paths`,
    ...) come from `models.freezing.FreezingOperations`.

    Args:
        model: A built Keras model (Sequential, Functional or subclassed).

    Example:
    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")],
    ...                         name="base")
    >>> tree = LayerTree(base)
    >>> tree.set_frozen("base/dense", True)
    >>> tree.totals()
    ParameterCounts(trainable=0, non_trainable=15)
    """

    def __init__(self, model: keras.Model) -> None:
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"LayerTree expects a Keras model or layer, received {type(model).__name__}. "
                "Load or build a keras.Model first."
            )
        if not model.built:
            raise ValueError(
                f"Model '{model.name}' is not built, so its weights do not exist yet. "
                "Build it (call it on data or give it a keras.Input) before describing it."
            )
        self._model = model
        self._entries: dict[str, _Entry] = {}
        self._entry_of_layer: dict[int, str] = {}
        # Other paths of a layer with several parents -> the path the tree lists it under.
        self._aliases: dict[str, str] = {}
        # id(variable) -> (variable, kind, size), every variable of the model once.
        self._variables: dict[int, tuple[keras.Variable, str, int]] = {}
        self._shared_params: dict[str, int] = {}
        self._build()
        self._index_subtree_variables()

    @property
    def model(self) -> keras.Model:
        """The Keras model this tree describes (and freezes)."""
        return self._model

    @property
    def root_path(self) -> str:
        """Path of the top model's node."""
        return next(iter(self._entries))

    def _build(self) -> None:
        seen_variables: set[int] = set()
        # Iterative pre-order walk: stack of (layer, parent_path, depth).
        stack: list[tuple[keras.layers.Layer, str | None, int]] = [(self._model, None, 0)]
        call_sites: dict[int, int] = {}
        while stack:
            layer, parent_path, depth = stack.pop()
            if id(layer) in self._entry_of_layer:
                # A second parent: the same object, listed once; this path becomes an alias.
                canonical = self._entry_of_layer[id(layer)]
                self._entries[canonical].is_shared = True
                if parent_path is not None:
                    self._entries[parent_path].members.append(canonical)
                    alias = self._unique_path(parent_path, display_name(layer.name))
                    self._aliases[alias] = canonical
                continue
            path = self._unique_path(parent_path, display_name(layer.name))
            entry = _Entry(
                path=path,
                layer=layer,
                depth=depth,
                parent_path=parent_path,
                # Called at two places of its parent's graph (a "shared layer" in Keras terms).
                is_shared=call_sites.get(id(layer), 0) > 1,
            )
            trainable_ids = {id(v) for v in layer._trainable_variables}
            for variable in layer._trainable_variables + layer._non_trainable_variables:
                if id(variable) in seen_variables:
                    continue
                seen_variables.add(id(variable))
                kind = WEIGHTS_KIND if id(variable) in trainable_ids else STATE_KIND
                entry.own_variables.append((variable, kind, _variable_size(variable)))
                self._variables[id(variable)] = entry.own_variables[-1]
            self._entries[path] = entry
            self._entry_of_layer[id(layer)] = path
            if parent_path is not None:
                self._entries[parent_path].children.append(path)
                self._entries[parent_path].members.append(path)
            for child in reversed(child_layers(layer)):
                stack.append((child, path, depth + 1))
            for operation_id, count in _graph_call_sites(layer).items():
                call_sites[operation_id] = call_sites.get(operation_id, 0) + count

    def _unique_path(self, parent_path: str | None, name: str) -> str:
        base = name if parent_path is None else f"{parent_path}{PATH_SEPARATOR}{name}"
        path, suffix = base, 2
        while path in self._entries or path in self._aliases:
            path, suffix = f"{base}~{suffix}", suffix + 1
        return path

    def _index_subtree_variables(self) -> None:
        """Finds the distinct variables under every node, and which of them are shared.

        A layer with several parents counts under each of them. `placements[path]` maps each
        variable id in the subtree to how many layer placements in it hold the variable (a
        shared layer is placed once per parent); a variable is shared at a node when the whole
        model places it more often than the node's subtree does.
        """
        placements: dict[str, dict[int, int]] = {}
        stack: list[tuple[str, bool]] = [(self.root_path, False)]
        while stack:  # Post-order over the parent -> member graph (a DAG), each node once.
            path, members_done = stack.pop()
            if path in placements:
                continue
            entry = self._entries[path]
            if not members_done:
                stack.append((path, True))
                stack.extend((m, False) for m in entry.members if m not in placements)
                continue
            layer = entry.layer
            counts = dict.fromkeys(
                {id(v) for v in layer._trainable_variables + layer._non_trainable_variables}, 1
            )
            for member in entry.members:
                for variable_id, count in placements[member].items():
                    counts[variable_id] = counts.get(variable_id, 0) + count
            placements[path] = counts
        in_model = placements[self.root_path]
        for path, entry in self._entries.items():
            counts = placements[path]
            entry.subtree_variable_ids = tuple(counts)
            self._shared_params[path] = sum(
                self._variables[variable_id][2]
                for variable_id, count in counts.items()
                if count < in_model[variable_id]
            )

    # ----------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def paths(self) -> list[str]:
        """Returns every node path in pre-order (the model's order, parents before children)."""
        return list(self._entries)

    def layer(self, path: str) -> keras.layers.Layer:
        """Returns the Keras layer at `path`.

        Args:
            path: A node path from `paths()`.

        Returns:
            The layer object (the same object the model holds).

        Example:
        >>> tree.layer("base/dense").units
        3
        """
        return self._entry(path).layer

    def path_of(self, layer: keras.layers.Layer) -> str:
        """Returns the path of a layer object that belongs to this model."""
        try:
            return self._entry_of_layer[id(layer)]
        except KeyError:
            raise ValueError(
                f"Layer '{layer.name}' is not part of model '{self._model.name}'."
            ) from None

    def own_variables(self, path: str) -> list[tuple[keras.Variable, str]]:
        """Returns the variables held by the layer itself, each with its kind.

        Args:
            path: A node path.

        Returns:
            `(variable, kind)` pairs; kind is "weights" for variables created trainable (kernel,
            bias, gamma, beta) and "state" for variables that never train (BN moving mean and
            variance). A variable shared by two layers is listed under the first one only.
        """
        return [(variable, kind) for variable, kind, _ in self._entry(path).own_variables]

    def _resolve(self, path: str) -> str | None:
        """Returns the listed path for `path` (itself or through aliases), None if unknown."""
        if not isinstance(path, str):
            return None
        for _ in range(len(self._aliases) + 1):
            if path in self._entries:
                return path
            prefixes = [
                alias
                for alias in self._aliases
                if path == alias or path.startswith(alias + PATH_SEPARATOR)
            ]
            if not prefixes:
                return None
            alias = max(prefixes, key=len)
            path = self._aliases[alias] + path[len(alias) :]
        return None

    def canonical_path(self, path: str) -> str:
        """Returns the path the tree lists a layer under, given any of its paths.

        A layer with several parents is listed once, under the path met first in model order;
        its other paths (and the paths of layers inside it through them) are aliases.

        Args:
            path: A node path from `paths()` or one of its `aliases`.

        Returns:
            The path in `paths()` that names the same layer object.

        Example:
        >>> tree.canonical_path("outer/two/shared")
        'outer/one/shared'
        """
        return self._entry(path).path

    def aliases(self, path: str) -> list[str]:
        """Returns the other paths of the layer at `path` (empty unless it has several parents).

        Args:
            path: A node path or an alias.

        Returns:
            Every path that names the same layer object except `path` itself, sorted.

        Example:
        >>> tree.aliases("outer/one/shared")
        ['outer/two/shared']
        """
        canonical = self.canonical_path(path)
        return sorted(self._all_paths(canonical) - {path})

    def _all_paths(self, canonical: str) -> set[str]:
        entry = self._entries[canonical]
        if entry.parent_path is None:
            return {canonical}
        places = [(entry.parent_path, canonical[len(entry.parent_path) + 1 :])]
        places += [
            tuple(alias.rsplit(PATH_SEPARATOR, 1))
            for alias, target in self._aliases.items()
            if target == canonical
        ]
        return {
            f"{parent}{PATH_SEPARATOR}{segment}"
            for parent_path, segment in places
            for parent in self._all_paths(parent_path)
        }

    def _entry(self, path: str) -> _Entry:
        resolved = self._resolve(path)
        if resolved is not None:
            return self._entries[resolved]
        if not isinstance(path, str):
            raise TypeError(
                f"A layer path must be a string such as '{self.root_path}{PATH_SEPARATOR}<layer "
                f"name>', received {type(path).__name__} {path!r}."
            )
        close = [p for p in self._entries if path.split(PATH_SEPARATOR)[-1] in p][:5]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"No layer at path '{path}' in model '{self._model.name}'. "
            f"Paths look like '{self.root_path}{PATH_SEPARATOR}<layer name>'.{hint}"
        )

    def nodes(self) -> list[LayerNode]:
        """Returns every node with its current flags and counts, in pre-order.

        Returns:
            A list of `LayerNode`, the top model first.

        Example:
        >>> [n.path for n in tree.nodes()]
        ['base', 'base/dense']
        """
        root_trainable = bool(self._model.trainable)
        trains = {
            variable_id: root_trainable and bool(variable.trainable)
            for variable_id, (variable, _, _) in self._variables.items()
        }
        own: dict[str, tuple[int, int, int]] = {}
        states: dict[str, tuple[VariableState, ...]] = {}
        subtree: dict[str, tuple[int, int]] = {}
        for path, entry in self._entries.items():
            trainable = non_trainable = state = 0
            for variable, kind, size in entry.own_variables:
                if kind == STATE_KIND:
                    state += size
                if trains[id(variable)]:
                    trainable += size
                else:
                    non_trainable += size
            own[path] = (trainable, non_trainable, state)
            states[path] = tuple(
                VariableState(variable.name, size, trains[id(variable)])
                for variable, _, size in entry.own_variables
            )
            # Distinct variables of the subtree: a layer with two parents counts under both,
            # and a variable used twice inside one subtree counts once, as in `layer.weights`.
            trainable = non_trainable = 0
            for variable_id in entry.subtree_variable_ids:
                if trains[variable_id]:
                    trainable += self._variables[variable_id][2]
                else:
                    non_trainable += self._variables[variable_id][2]
            subtree[path] = (trainable, non_trainable)
        nodes: list[LayerNode] = []
        frozen_above: dict[str, bool] = {}
        for path, entry in self._entries.items():
            layer = entry.layer
            flag = bool(layer.trainable)
            parent_frozen = False
            if entry.parent_path is not None:
                parent = self._entries[entry.parent_path].layer
                parent_frozen = frozen_above[entry.parent_path] or not bool(parent.trainable)
            frozen_above[path] = parent_frozen
            nodes.append(
                LayerNode(
                    path=path,
                    name=display_name(layer.name),
                    class_name=type(layer).__name__,
                    depth=entry.depth,
                    parent_path=entry.parent_path,
                    children=tuple(entry.children),
                    trainable=flag,
                    effectively_trainable=flag and root_trainable,
                    ancestor_frozen=flag and parent_frozen,
                    own_trainable_params=own[path][0],
                    own_non_trainable_params=own[path][1],
                    trainable_params=subtree[path][0],
                    non_trainable_params=subtree[path][1],
                    own_state_params=own[path][2],
                    is_batch_norm=isinstance(layer, keras.layers.BatchNormalization),
                    is_model=isinstance(layer, keras.Model),
                    is_shared=entry.is_shared,
                    shared_params=self._shared_params[path],
                    supports_lora=supports_lora(layer),
                    lora_rank=getattr(layer, "lora_rank", None) if is_lora(layer) else None,
                    lora_alpha=float(layer.lora_alpha) if is_lora(layer) else None,
                    variables=states[path],
                )
            )
        return nodes

    def node(self, path: str) -> LayerNode:
        """Returns the current `LayerNode` at `path`."""
        path = self.canonical_path(path)
        return next(node for node in self.nodes() if node.path == path)

    def totals(self) -> ParameterCounts:
        """Returns the model's trainable and non-trainable parameter totals.

        They equal the sums over `model.trainable_weights` and `model.non_trainable_weights`.

        Returns:
            A `ParameterCounts`.
        """
        root = self.nodes()[0]
        return ParameterCounts(
            trainable=root.trainable_params, non_trainable=root.non_trainable_params
        )

    def frame(self) -> pd.DataFrame:
        """Returns the nodes as a pandas DataFrame, one row per node in model order."""
        rows = [
            {
                "path": n.path,
                "name": n.name,
                "class_name": n.class_name,
                "depth": n.depth,
                "trainable": n.trainable,
                "effectively_trainable": n.effectively_trainable,
                "ancestor_frozen": n.ancestor_frozen,
                "trainable_params": n.trainable_params,
                "non_trainable_params": n.non_trainable_params,
                "total_params": n.total_params,
                "is_batch_norm": n.is_batch_norm,
                "is_model": n.is_model,
                "is_shared": n.is_shared,
                "shared_params": n.shared_params,
            }
            for n in self.nodes()
        ]
        return pd.DataFrame(rows)

    def descendants(self, path: str) -> list[str]:
        """Returns every path under `path` (not `path` itself), in pre-order."""
        result: list[str] = []
        stack = list(reversed(self._entry(path).children))
        while stack:
            current = stack.pop()
            result.append(current)
            stack.extend(reversed(self._entries[current].children))
        return result

    def ancestors(self, path: str) -> list[str]:
        """Returns the paths above `path`, nearest first."""
        result: list[str] = []
        parent = self._entry(path).parent_path
        while parent is not None:
            result.append(parent)
            parent = self._entries[parent].parent_path
        return result

    def batch_norm_paths(self) -> list[str]:
        """Returns the paths of every BatchNormalization layer."""
        return [
            path
            for path, entry in self._entries.items()
            if isinstance(entry.layer, keras.layers.BatchNormalization)
        ]

    # ------------------------------------------------------------------------ the base model
    def _has_weights(self, path: str) -> bool:
        """Whether the subtree at `path` holds a variable the optimizer can train."""
        return any(
            self._variables[variable_id][1] == WEIGHTS_KIND
            for variable_id in self._entries[path].subtree_variable_ids
        )

    def default_base_path(self) -> str:
        """Returns the path of the base model: the nested model with the most parameters.

        Falls back to the top model when it has no nested model.
        """
        best, best_size = self.root_path, -1
        for node in self.nodes()[1:]:
            if node.is_model and node.total_params > best_size:
                best, best_size = node.path, node.total_params
        return best

    def base_layer_paths(
        self, base_path: str | None = None, *, include_weightless: bool = False
    ) -> list[str]:
        """Returns the base model's direct layers that `unfreeze_top` counts, in model order.

        Args:
            base_path: Path of the base model; defaults to `default_base_path()`.
            include_weightless: False (the default) lists only layers with weights, i.e. with a
                variable the optimizer can train somewhere inside them (kernel, bias, gamma,
                beta); True lists every direct layer. Input layers are never listed.

        Returns:
            Paths of the base's direct children. A child shared with another parent is given by
            the path the tree lists it under.

        Example:
        >>> [p.rsplit("/", 1)[-1] for p in tree.base_layer_paths("digits_cnn/feature_extractor")]
        ['conv1', 'batch_norm1', 'conv2', 'batch_norm2', 'conv3', 'batch_norm3']
        """
        base_path = base_path if base_path is not None else self.default_base_path()
        return [
            path
            for path in self._entry(base_path).members
            if not isinstance(self._entries[path].layer, keras.layers.InputLayer)
            and (include_weightless or self._has_weights(path))
        ]

    def __iter__(self) -> Iterator[LayerNode]:
        return iter(self.nodes())
