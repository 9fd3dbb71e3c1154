"""Describe any Keras 3 model as a tree of layers and freeze or unfreeze it with Keras's semantics.

Keras facts this module relies on (measured with Keras 3.15, see tests/test_tree.py):

- `layer.trainable = v` sets `v` on the layer, on each of its own trainable variables and,
  recursively, on every sublayer.
- `model.trainable_weights` is `[]` when the *top* model's flag is False; otherwise it is every
  weight whose own `variable.trainable` is True. A nested model's flag therefore does not gate
  its children: a child set back to `trainable=True` under a frozen nested model IS trained by
  `fit` on the outer model (its parent's own `trainable_weights` is `[]`, the outer model's is
  not). `LayerNode.effectively_trainable` reports what Keras really trains, and
  `LayerNode.ancestor_frozen` flags the surprising case.
- On the TensorFlow backend, `layer.trainable = v` is skipped entirely when the flag already
  equals `v` (TensorFlow's AutoTrackable short-circuits `self.x = self.x`), so unfreezing a
  trainable parent does not unfreeze its frozen children there, while it does on JAX. FreezeLab
  applies Keras's documented semantics on every backend through `set_trainable`.
- A layer object used by two parents (e.g. one Dense inside two nested Sequential models) has ONE
  flag. The tree lists it once, under the path where the pre-order walk meets it first; its other
  paths are aliases (`aliases`, `canonical_path`) that every method accepts. Each parent's
  subtree counts its weights (`LayerNode.shared_params` says how many are shared); the top
  model's totals count each variable once, as `model.trainable_weights` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import keras
import pandas as pd

from models.names import display_name
from models.validation import check_whole_number

PATH_SEPARATOR = "/"
WEIGHTS_KIND = "weights"
STATE_KIND = "state"


@dataclass(frozen=True)
class ParameterCounts:
    """Trainable and non-trainable parameter totals, as Keras's `model.summary()` reports them.

    Attributes:
        trainable: Number of scalars in weights the optimizer updates.
        non_trainable: Number of scalars in every other weight (frozen weights, BN statistics).
    """

    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.trainable + self.non_trainable

    @property
    def trainable_fraction(self) -> float:
        """Share of parameters that train, in [0, 1]; 0 for a model without weights."""
        return self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class LayerNode:
    """One node of the layer tree: a model, a nested model, a layer or a sublayer.

    Attributes:
        path: Stable id, the layer names from the top model down joined by "/".
        name: The layer's name.
        class_name: The layer's class, e.g. "Dense" or "Functional".
        depth: 0 for the top model, 1 for its layers, and so on.
        parent_path: Path of the parent node, None for the top model.
        children: Paths of the child nodes, in the model's order.
        trainable: The layer's own `trainable` flag.
        effectively_trainable: Whether `fit` on the top model updates this layer's weights: its
            flag and the top model's flag are both True (for a layer without weights, whether it
            would be).
        ancestor_frozen: True when some ancestor's flag is False while this flag is True.
        own_trainable_params: Trainable parameters held by the layer itself (not sublayers).
        own_non_trainable_params: Non-trainable parameters held by the layer itself.
        trainable_params: Trainable parameters of the layer and everything under it.
        non_trainable_params: Non-trainable parameters of the layer and everything under it.
        own_state_params: Parameters of variables that never train (e.g. BN moving statistics).
        is_batch_norm: Whether the layer is a BatchNormalization layer.
        is_model: Whether the layer is a Keras model (Sequential, Functional, subclassed).
        is_shared: Whether the layer is reachable from more than one place in the model, or is
            called at more than one place of a functional graph (its weights serve both).
        shared_params: Parameters counted in this node's subtree that layers outside it use
            too (a layer or variable with several parents). Every parent's subtree counts them,
            so subtree counts of siblings may overlap by this much; the top model's totals count
            each variable once, as Keras does.
    """

    path: str
    name: str
    class_name: str
    depth: int
    parent_path: str | None
    children: tuple[str, ...]
    trainable: bool
    effectively_trainable: bool
    ancestor_frozen: bool
    own_trainable_params: int
    own_non_trainable_params: int
    trainable_params: int
    non_trainable_params: int
    own_state_params: int
    is_batch_norm: bool
    is_model: bool
    is_shared: bool
    shared_params: int = 0

    @property
    def total_params(self) -> int:
        """All parameters of the layer and everything under it."""
        return self.trainable_params + self.non_trainable_params

    @property
    def own_params(self) -> int:
        """Parameters held by the layer itself."""
        return self.own_trainable_params + self.own_non_trainable_params


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


def _set_own_trainable(layer: keras.layers.Layer, trainable: bool) -> None:
    """Sets one layer's own flag and its own variables' flags, leaving its sublayers alone.

    This is Keras's `Layer.trainable` setter without its recursion into sublayers, so writing
    every node of a plan gives the same result in any order, even when a layer has two parents.
    """
    layer._trainable = trainable
    for variable in layer._trainable_variables:
        variable.trainable = trainable


def set_trainable(layer: keras.layers.Layer, trainable: bool) -> None:
    """Sets `trainable` on a layer and every layer under it, as Keras documents it.

    Calls Keras's own `Layer.trainable` setter on the layer and each descendant, so the result
    does not depend on the backend (TensorFlow skips the setter when the flag is unchanged).

    Args:
        layer: Any Keras layer or model.
        trainable: The flag to set.

    Example:
    >>> set_trainable(model, True)  # unfreezes everything, even children frozen one by one
    """
    setter = keras.layers.Layer.trainable.fset
    setter(layer, trainable)
    for sublayer in layer._flatten_layers(include_self=False, recursive=True):
        setter(sublayer, trainable)


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


class LayerTree:
    """A Keras model seen as a tree of layers, with Keras-exact freezing and parameter counts.

    The tree reads and writes the model's own `trainable` flags; the model stays the source of
    truth, so counts always match `model.trainable_weights` and `model.non_trainable_weights`.

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

    def weighted_paths(self) -> list[str]:
        """Returns the paths of nodes that hold weights themselves, in model order."""
        return [path for path, entry in self._entries.items() if entry.own_variables]

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

    # ----------------------------------------------------------------------------- freezing
    def set_frozen(self, path: str, frozen: bool) -> None:
        """Freezes or unfreezes the node at `path` and, as Keras does, everything under it.

        Args:
            path: A node path.
            frozen: True sets `layer.trainable = False`, False sets it to True.

        Example:
        >>> tree.set_frozen("base", True)   # freezes base and every layer in it
        """
        if not isinstance(frozen, bool):
            raise TypeError(f"`frozen` must be True or False, received {frozen!r}.")
        set_trainable(self._entry(path).layer, not frozen)

    def freeze_all(self) -> None:
        """Freezes the whole model (`model.trainable = False`)."""
        set_trainable(self._model, False)

    def unfreeze_all(self) -> None:
        """Unfreezes the whole model (`model.trainable = True`)."""
        set_trainable(self._model, True)

    def freeze_up_to(self, path: str) -> None:
        """Freezes every layer up to and including `path` in model order; unfreezes the rest.

        Like fastai's `freeze_to`: layers before the chosen one (in the flattened model order,
        nested layers included) and the chosen one with its sublayers are frozen; the layers
        after it are trainable. Models that contain the chosen layer keep their flag True so that
        the layers after it can train.

        Args:
            path: The last layer to freeze.

        Example:
        >>> tree.freeze_up_to("transfer_model/feature_extractor")
        """
        path = self.canonical_path(path)
        ancestors = set(self.ancestors(path))
        set_trainable(self._model, True)
        # Pre-order walk: everything met before `path` precedes it in model order. Freezing a
        # node freezes its subtree, which lies wholly before `path` unless it is an ancestor.
        for current in self._entries:
            if current not in ancestors:
                set_trainable(self._entries[current].layer, False)
            if current == path:
                break

    def unfreeze_top(self, num_layers: int, base_path: str | None = None) -> None:
        """Keeps a base model trainable but freezes all but its top `num_layers` weighted layers.

        The Keras fine-tuning recipe, `base.trainable = True` then
        `for layer in base.layers[:-k]: layer.trainable = False`, with `k` chosen so that the
        trainable top holds `num_layers` layers with weights (`base_layer_paths`). Layers without
        weights (activations, pooling, dropout) are not counted: they have nothing to train. The
        cut falls just before the lowest of the counted layers, so weightless layers below it
        are frozen with their neighbours and those above it stay trainable.

        Args:
            num_layers: How many of the base's last layers with weights train (0 freezes all of
                the base's layers; as many as there are, or more, leaves the whole base trainable).
            base_path: Path of the base model; defaults to the largest nested model, or the top
                model when there is none.

        Example:
        >>> tree.unfreeze_top(2, "transfer_model/feature_extractor")  # conv3 and batch_norm3
        """
        num_layers = int(check_whole_number("num_layers", num_layers, 0))
        base_path = base_path if base_path is not None else self.default_base_path()
        base = self._entry(base_path)
        set_trainable(base.layer, True)
        layers = self.base_layer_paths(base.path, include_weightless=True)
        weighted = [index for index, path in enumerate(layers) if self._has_weights(path)]
        if num_layers == 0:
            cut = len(layers)
        elif num_layers >= len(weighted):
            cut = 0
        else:
            cut = weighted[-num_layers]
        for path in layers[:cut]:
            set_trainable(self._entries[path].layer, False)

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

    def freeze_batch_norm(self) -> None:
        """Freezes every BatchNormalization layer (inference mode, moving statistics fixed)."""
        for path in self.batch_norm_paths():
            set_trainable(self._entries[path].layer, False)

    def frozen_paths(self) -> frozenset[str]:
        """Returns the current freeze plan: the paths whose own flag is `trainable=False`.

        Returns:
            A frozenset of paths from `paths()` (a layer with several parents appears once,
            under its listed path). `apply_frozen_paths` of it restores exactly this state.
        """
        return frozenset(p for p, e in self._entries.items() if not e.layer.trainable)

    def apply_frozen_paths(self, frozen_paths: Iterable[str]) -> None:
        """Sets every node's flag from a freeze plan: False for listed paths, True otherwise.

        Each layer's own flag (and its own variables') is set without touching its sublayers,
        so a child listed as trainable under a frozen parent keeps its True flag, and the result
        does not depend on the order of the writes. A layer with several parents is one object
        with one flag: naming it under any of its paths (see `aliases`) freezes it.

        Args:
            frozen_paths: Paths to freeze (from `paths()` or aliases); every other node is
                unfrozen.

        Example:
        >>> tree.apply_frozen_paths({"base/dense"})
        >>> sorted(tree.frozen_paths())
        ['base/dense']
        """
        if isinstance(frozen_paths, str):
            raise TypeError(
                "`frozen_paths` must be a collection of paths, received a single string "
                f"'{frozen_paths}'. Wrap it in a list: ['{frozen_paths}']."
            )
        wanted: set[str] = set()
        unknown: list[str] = []
        for path in frozen_paths:
            resolved = self._resolve(path)
            if resolved is None:
                unknown.append(path)
            else:
                wanted.add(resolved)
        if unknown:
            raise ValueError(
                f"The freeze plan names {len(unknown)} path(s) that are not in model "
                f"'{self._model.name}': {sorted(map(str, unknown))[:5]}. Read valid paths from "
                "`paths()`."
            )
        for path, entry in self._entries.items():
            _set_own_trainable(entry.layer, path not in wanted)

    def __iter__(self) -> Iterator[LayerNode]:
        return iter(self.nodes())
