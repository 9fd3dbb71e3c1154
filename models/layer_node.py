"""The plain data a `LayerTree` reports: one node's flags and counts, and a model's totals.

Both are frozen dataclasses, safe to hand to the dashboard (see `LayerTree.nodes` and
`LayerTree.totals`); `models.tree` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
class VariableState:
    """One variable a layer owns, and whether `fit` updates it now.

    Attributes:
        name: The variable's name, e.g. "kernel", "bias", "lora_kernel_a", "moving_mean".
        params: Its number of scalars.
        trains: Whether it is in the model's `trainable_weights` now.
    """

    name: str
    params: int
    trains: bool


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
        supports_lora: Whether Keras can put a LoRA adapter on this layer (`enable_lora`).
        lora_rank: The rank of its LoRA adapter, None without one.
        lora_alpha: The adapter's scale numerator (it adds `(alpha / rank) * a @ b`).
        variables: Its own variables and whether each trains now (a LoRA layer: the kernel
            does not, the adapters and the bias do).
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
    supports_lora: bool = False
    lora_rank: int | None = None
    lora_alpha: float | None = None
    variables: tuple[VariableState, ...] = ()

    @property
    def state(self) -> str:
        """The layer's state in one word: "frozen", "lora" (adapters train, the kernel does
        not) or "trainable"."""
        if not self.effectively_trainable:
            return "frozen"
        return "lora" if self.lora_rank else "trainable"

    @property
    def total_params(self) -> int:
        """All parameters of the layer and everything under it."""
        return self.trainable_params + self.non_trainable_params

    @property
    def own_params(self) -> int:
        """Parameters held by the layer itself."""
        return self.own_trainable_params + self.own_non_trainable_params
