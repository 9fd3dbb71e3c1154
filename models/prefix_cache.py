"""Frozen-prefix caching: compute a frozen model front's outputs once and train only the rest.

When every layer before the first trainable one is effectively frozen, BatchNormalization there
runs in inference mode and nothing there is random (dropout, noise, random augmentation), that
front part (the "prefix") gives the same output for an input at every epoch. FreezeLab then
computes the prefix's outputs once for the training and validation inputs and trains a
head-only model built from the SAME layer objects that follow it, so the original model's
head variables are the ones updated and the model stays usable as-is afterwards.

`plan_prefix_cache` decides, with a human reason either way; `build_prefix_model` and
`build_head_model` build the two halves. Everything here uses only Keras's backend-neutral API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras

from models.names import display_name
from models.tree import LayerNode, LayerTree

PREFIX_CACHE_MAX_BYTES = 1 << 30
"""Largest cached feature array (training plus validation) the automatic path will hold."""


@dataclass(frozen=True)
class ExecutionPlan:
    """Which training path a `TrainingJob` takes, and why.

    Attributes:
        cached: True when the frozen prefix's outputs are computed once and only the layers
            after it train ("cached path"); False for plain `fit` on the whole model.
        reason: Why, in one or two sentences a user can act on.
        prefix_paths: Layer-tree paths of the top-level layers whose outputs are cached (empty
            on the plain path).
        head_paths: Paths of the top-level layers trained on the cached features.
        feature_shape: Shape of one cached feature (without the batch axis), when known.
        precompute_seconds: Time spent computing the cached features (None before it ran, or on
            the plain path).

    Example:
    >>> plan = job.execution_plan
    >>> plan.cached, plan.reason
    (True, 'Everything before transfer_model/head_dropout is frozen ...')
    """

    cached: bool
    reason: str
    prefix_paths: tuple[str, ...] = ()
    head_paths: tuple[str, ...] = ()
    feature_shape: tuple[int | None, ...] | None = None
    precompute_seconds: float | None = None

    @property
    def path_name(self) -> str:
        """A short name of the path: "cached frozen prefix" or "plain fit"."""
        return "cached frozen prefix" if self.cached else "plain fit"

    def message(self) -> str:
        """Returns one line for the UI: the path, its reason and, once known, the cost.

        Example:
        >>> job.execution_plan.message()
        'Cached frozen prefix: ... Features computed once in 0.41 s.'
        """
        text = f"{self.path_name.capitalize()}: {self.reason}"
        if self.precompute_seconds is not None:
            text += f" Features computed once in {self.precompute_seconds:.2f} s."
        return text


@dataclass(frozen=True)
class _ChainLink:
    """One top-level call of a chain model: the layer, its call's arguments and output."""

    layer: keras.layers.Layer
    node: Any  # keras Node: `arguments` (args, kwargs) and `outputs`
    output: Any  # KerasTensor


def call_chain(model: keras.Model) -> list[_ChainLink] | str:
    """Returns the model's top-level layer calls in order when they form a chain.

    A chain has one input and one output, and each layer is called exactly once on exactly one
    tensor: the previous layer's output. A nested model counts as one layer, whatever is
    inside it.

    Args:
        model: A Keras model.

    Returns:
        The calls in order, input layer excluded, or a string saying why the model is not a
        chain.

    Example:
    >>> [link.layer.name for link in call_chain(model)]
    ['feature_extractor', 'head_dropout', 'classifier']
    """
    graph = model if hasattr(model, "_nodes_by_depth") else getattr(model, "_functional", None)
    if graph is None or not hasattr(graph, "_nodes_by_depth"):
        return (
            f"Model '{model.name}' is a subclassed model ({type(model).__name__}), so FreezeLab "
            "cannot see which layers feed which."
        )
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return (
            f"Model '{model.name}' has {len(graph.inputs)} input(s) and {len(graph.outputs)} "
            "output(s); caching needs exactly one of each."
        )
    num_nodes = sum(
        1
        for nodes in graph._nodes_by_depth.values()
        for node in nodes
        if not isinstance(node.operation, keras.layers.InputLayer)
    )
    links: list[_ChainLink] = []
    seen: set[int] = set()
    tensor = graph.outputs[0]
    while True:
        operation, node_index, _ = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            break
        node = operation._inbound_nodes[node_index]
        inputs = node.arguments.keras_tensors
        # One inbound tensor, possibly passed several times (e.g. Concatenate()([x, x, x])).
        inputs = list({id(tensor): tensor for tensor in inputs}.values())
        if len(inputs) != 1 or len(node.outputs) != 1:
            return (
                f"Layer '{display_name(operation.name)}' takes {len(inputs)} input(s) and gives "
                f"{len(node.outputs)} output(s): the model branches, so it is not a simple "
                "chain of layers."
            )
        if id(operation) in seen:
            name = display_name(operation.name)
            return f"Layer '{name}' is called more than once (shared weights)."
        seen.add(id(operation))
        links.append(_ChainLink(operation, node, tensor))
        tensor = inputs[0]
    if tensor is not graph.inputs[0] or len(links) != num_nodes:
        return (
            f"Model '{model.name}' has layer calls off its main path (a branching graph), so it "
            "is not a simple chain of layers."
        )
    links.reverse()
    return links


def _random_in_training(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """Returns the first (sub)layer whose output is random in training, or None.

    Keras's dropout, noise and random augmentation layers (Dropout and its variants,
    GaussianNoise, GaussianDropout, AlphaDropout, RandomFlip, RandomRotation, ...) all draw
    from a `keras.random.SeedGenerator` they own, which Keras tracks per layer; that is the
    test, so it also catches custom random layers built the Keras way. (Checking for a
    `training` argument would not do: Keras 3's Dense and Resizing take one too.)
    """
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if getattr(sublayer, "_seed_generators", None) or isinstance(
            sublayer, keras.layers.Dropout
        ):
            return sublayer
    return None


def _trains(tree: LayerTree, nodes: dict[str, LayerNode], path: str) -> str | None:
    """Returns the path of the first node at or under `path` that `fit` would change.

    A node with variables changes when it is effectively trainable: its weights train, and a
    trainable BatchNormalization also moves its moving statistics.
    """
    for candidate in [path, *tree.descendants(path)]:
        node = nodes[candidate]
        if node.own_params > 0 and node.effectively_trainable:
            return candidate
    return None


def _frozen_prefix(
    tree: LayerTree, nodes: dict[str, LayerNode], links: list[_ChainLink]
) -> tuple[list[_ChainLink], str, bool]:
    """The links before the first that trains or is random: `(prefix, why, holds weights)`."""
    prefix: list[_ChainLink] = []
    blocker = ""
    holds_frozen_weights = False
    for link in links:
        path = tree.path_of(link.layer)
        training_path = _trains(tree, nodes, path)
        if training_path is not None:
            blocker = (
                f"'{training_path}' trains"
                if training_path == path
                else f"'{path}' is partly trainable ('{training_path}' trains)"
            )
            break
        random_layer = _random_in_training(link.layer)
        if random_layer is not None:
            blocker = (
                f"'{path}' behaves differently in training "
                f"({type(random_layer).__name__} '{random_layer.name}': dropout, noise or "
                "random augmentation), so its outputs change from epoch to epoch"
            )
            break
        holds_frozen_weights = holds_frozen_weights or nodes[path].total_params > 0
        prefix.append(link)
    return prefix, blocker, holds_frozen_weights


def plan_prefix_cache(
    model: keras.Model,
    tree: LayerTree | None = None,
    *,
    num_samples: int | None = None,
    in_memory: bool = True,
    enabled: bool | None = None,
    max_bytes: int = PREFIX_CACHE_MAX_BYTES,
) -> ExecutionPlan:
    """Decides whether training can cache the frozen prefix's outputs, and why (not).

    The prefix is the longest run of top-level layers from the input on such that every layer
    in it (and under it, for a nested model) that holds variables is effectively frozen (so a
    BatchNormalization there runs in inference mode and keeps its statistics), no layer in it
    is random in training (dropout, noise, random augmentation), and it holds at least one
    frozen variable. Caching needs a chain model (see `call_chain`), a
    trainable layer after the prefix, in-memory arrays, and features that fit in `max_bytes`.

    Args:
        model: The model to train, with its current freeze flags.
        tree: Its `LayerTree` (built from `model` when omitted).
        num_samples: Training plus validation samples, to bound the features' memory.
        in_memory: False for tf.data inputs, which always take the plain path.
        enabled: None decides automatically; False turns caching off; True behaves like None
            here (a `TrainingJob` then raises when caching is impossible).
        max_bytes: Largest feature array (float32) to hold in memory.

    Returns:
        An `ExecutionPlan` (`cached` True or False, always with a reason).

    Example:
    >>> tree.set_frozen("transfer_model/feature_extractor", True)
    >>> plan_prefix_cache(model, tree).cached
    True
    """
    tree = tree or LayerTree(model)
    if enabled is False:
        return ExecutionPlan(False, "Caching the frozen prefix was turned off for this run.")
    if not in_memory:
        return ExecutionPlan(
            False,
            "The data comes as a tf.data pipeline; the frozen-prefix cache works on in-memory "
            "arrays only.",
        )
    if tree.totals().trainable == 0:
        return ExecutionPlan(
            False, "No layer trains (every weight is frozen), so there is nothing to cache for."
        )
    links = call_chain(model)
    if isinstance(links, str):
        return ExecutionPlan(False, links + " The cached path needs a chain of layers.")
    nodes = {node.path: node for node in tree.nodes()}
    prefix, blocker, holds_frozen_weights = _frozen_prefix(tree, nodes, links)
    if not holds_frozen_weights:
        return ExecutionPlan(
            False,
            f"Nothing frozen comes before the first layer that cannot be cached: {blocker}.",
        )
    head = links[len(prefix) :]
    if not any(_trains(tree, nodes, tree.path_of(link.layer)) for link in head):
        return ExecutionPlan(False, "No layer after the frozen part trains.")
    feature_shape = tuple(prefix[-1].output.shape[1:])
    prefix_paths = tuple(tree.path_of(link.layer) for link in prefix)
    head_paths = tuple(tree.path_of(link.layer) for link in head)
    if num_samples is not None and all(size is not None for size in feature_shape):
        num_bytes = num_samples * math.prod(feature_shape) * 4
        if num_bytes > max_bytes:
            return ExecutionPlan(
                False,
                f"The frozen part's outputs would take {num_bytes / 2**20:.0f} MiB "
                f"(shape {feature_shape} for {num_samples} samples), more than the "
                f"{max_bytes / 2**20:.0f} MiB allowed for the cache.",
                prefix_paths=prefix_paths,
                head_paths=head_paths,
                feature_shape=feature_shape,
            )
    last = prefix_paths[-1]
    return ExecutionPlan(
        True,
        f"Everything up to '{last}' is frozen, BatchNormalization there runs in inference "
        f"mode and nothing there is random, so its outputs are computed once and only the "
        f"layers after it train ({', '.join(head_paths)}).",
        prefix_paths=prefix_paths,
        head_paths=head_paths,
        feature_shape=feature_shape,
    )


def _recall(links: list[_ChainLink], tensor: Any) -> Any:
    """Calls the chain's layers in order on `tensor`, with each call's own other arguments."""
    for link in links:
        args, kwargs = link.node.arguments.fill_in(
            {id(link.node.arguments.keras_tensors[0]): tensor}
        )
        tensor = link.layer(*args, **kwargs)
    return tensor


def _split(model: keras.Model, plan: ExecutionPlan) -> tuple[list[_ChainLink], list[_ChainLink]]:
    links = call_chain(model)
    if isinstance(links, str) or not plan.cached:
        raise ValueError(f"This plan does not cache a prefix: {plan.reason}")
    size = len(plan.prefix_paths)
    return links[:size], links[size:]


def build_prefix_model(model: keras.Model, plan: ExecutionPlan) -> keras.Model:
    """Builds a model of the prefix's layers (the same objects), input to cached features.

    Args:
        model: The model `plan` was made for.
        plan: A cached `ExecutionPlan` from `plan_prefix_cache`.

    Returns:
        A Functional model; `predict` on it gives the features to cache.

    Example:
    >>> features = build_prefix_model(model, plan).predict(x, verbose=0)
    """
    prefix, _ = _split(model, plan)
    first_input = prefix[0].node.arguments.keras_tensors[0]
    inputs = keras.Input(tuple(first_input.shape[1:]), dtype=first_input.dtype)
    return keras.Model(inputs, _recall(prefix, inputs), name=f"{model.name}_prefix")


def build_head_model(
    model: keras.Model, plan: ExecutionPlan, feature_shape: tuple[int, ...]
) -> keras.Model:
    """Builds a model of the layers after the prefix (the same objects), features to outputs.

    Training it updates the original model's head variables, since the layers are shared.

    Args:
        model: The model `plan` was made for.
        plan: A cached `ExecutionPlan` from `plan_prefix_cache`.
        feature_shape: Shape of one cached feature, without the batch axis.

    Returns:
        A Functional model taking the cached features.

    Example:
    >>> head = build_head_model(model, plan, features.shape[1:])
    """
    prefix, head = _split(model, plan)
    dtype = keras.backend.standardize_dtype(prefix[-1].output.dtype)
    inputs = keras.Input(tuple(feature_shape), dtype=dtype)
    return keras.Model(inputs, _recall(head, inputs), name=f"{model.name}_head")
