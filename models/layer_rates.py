"""Per-layer learning rates: multipliers by layer path and layer-wise decay, as a Keras optimizer.

Keras optimizers have no parameter groups (keras-team/keras#21741), and scaling a variable's
gradient does not scale Adam's step (Adam is invariant to the gradient's scale). FreezeLab
therefore scales each variable's *update*: `layer_rate_optimizer` subclasses a Keras optimizer
and calls its own `update_step` with `learning_rate * multiplier` for each variable.

Keras facts this module relies on (read in keras/src/optimizers and measured with Keras 3.15
on TensorFlow and JAX, see tests/test_layer_rates.py):

- Every optimizer FreezeLab offers (Adam, AdamW, SGD, RMSprop) computes an update that is
  proportional to the learning rate it is given, for the same gradients, so scaling the
  learning rate of one variable by a constant scales that variable's update by it, step after
  step: Adam and AdamW `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`;
  SGD `-lr * g` and, with momentum, a velocity `momentum * velocity - lr * g` that starts at
  zero and so stays proportional to the (constant) multiplier, Nesterov too; RMSprop
  `lr * g / sqrt(v + epsilon)`, its momentum accumulating that. The optimizer's moments
  (m, v, the RMS average) do not depend on the learning rate, so they are the same as the
  plain optimizer's for the same gradients. (Changing a multiplier in the middle of a run would
  break the equality for momentum, which keeps the old rate in its velocity; multipliers are
  fixed for an optimizer's life.)
- Decoupled weight decay (AdamW, or `weight_decay=` on any optimizer) is applied outside
  `update_step` by `_apply_weight_decay`, with the global learning rate: it is scaled here too,
  so a multiplier of 0 also stops the decay.
- On TensorFlow, `update_step` receives the raw `tf.Variable`, not the `keras.Variable`; the
  optimizer's own variable key (`_var_key`, the key of its variable index) is the same for
  both, so multipliers are stored by that key. On JAX the optimizer runs `apply` inside a
  stateless scope over the `keras.Variable`s it was built with, so the same lookup holds. (On
  torch, Keras swaps its built-in classes for fused versions that never call `update_step`;
  a subclass is not swapped, so it runs the generic code. Not measured: torch is not
  installed here.)
- A multiplier of exactly 1 runs the plain code (the result is bitwise the plain optimizer's);
  a multiplier of 0 skips the variable, so it stays bitwise unchanged (and so do its moments).

`LayerRates` is the plain, JSON-ready setting (it lives in `TrainingConfig.layer_rates`);
`layer_multipliers`, `variable_multipliers` and `layer_rates_frame` resolve it on a model's
`LayerTree`, and `layer_rate_optimizer` builds the optimizer.

The bounds (`MULTIPLIER_RANGE`, `DECAY_FACTOR_RANGE`, `LAYERS_PER_BLOCK_RANGE` and the path
limits) are owned by `models.limits` and re-exported here for the notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import pandas as pd
from keras import ops

from models.limits import (
    DECAY_FACTOR_RANGE,
    LAYERS_PER_BLOCK_RANGE,
    MAX_LAYER_PATH_LENGTH,
    MAX_MULTIPLIER_PATHS,
    MULTIPLIER_RANGE,
)
from models.optimizer_mixins import mixed_optimizer_class
from models.tree import WEIGHTS_KIND, LayerTree
from models.validation import ArgumentTypeError, check_number, check_whole_number

__all__ = [
    "DECAY_FACTOR_RANGE",
    "LAYERS_PER_BLOCK_RANGE",
    "MAX_LAYER_PATH_LENGTH",
    "MAX_MULTIPLIER_PATHS",
    "MULTIPLIER_RANGE",
    "LayerRateOptimizer",
    "LayerRates",
    "decay_blocks",
    "layer_multipliers",
    "layer_rate_optimizer",
    "layer_rate_optimizer_class",
    "layer_rates_frame",
    "variable_multipliers",
]

_FIELDS = ("multipliers", "decay_factor", "layers_per_block", "base_path")


# ------------------------------------------------------------------------------ the setting
def _check_path(what: str, path: Any) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_LAYER_PATH_LENGTH:
        raise ArgumentTypeError(
            f"{what} must be a non-empty layer path of at most {MAX_LAYER_PATH_LENGTH} "
            "characters such as 'transfer_model/feature_extractor/conv1'. Received: "
            f"{type(path).__name__} {path!r:.80}"
        )
    return path


def _multiplier_pairs(multipliers: Any) -> tuple[tuple[str, float], ...]:
    """Checks explicit multipliers (a mapping or (path, multiplier) pairs), sorted by path."""
    if isinstance(multipliers, Mapping):
        items = list(multipliers.items())
    elif isinstance(multipliers, list | tuple):
        items = list(multipliers)
        if not all(isinstance(item, list | tuple) and len(item) == 2 for item in items):
            raise ArgumentTypeError(
                "`multipliers` must map layer paths to numbers, e.g. "
                "{'transfer_model/feature_extractor': 0.1}; a sequence must hold "
                f"(path, multiplier) pairs. Received: {multipliers!r:.120}"
            )
    else:
        raise ArgumentTypeError(
            "`multipliers` must map layer paths to numbers, e.g. "
            f"{{'transfer_model/feature_extractor': 0.1}}. Received: {type(multipliers).__name__} "
            f"{multipliers!r:.80}"
        )
    if len(items) > MAX_MULTIPLIER_PATHS:
        raise ValueError(
            f"`multipliers` names {len(items):,} layer paths; at most {MAX_MULTIPLIER_PATHS:,} "
            "are accepted. Set a multiplier on a parent (a nested model) instead: the layers "
            "under it inherit it."
        )
    checked: dict[str, float] = {}
    for path, multiplier in items:
        _check_path("Each key of `multipliers`", path)
        if path in checked:
            raise ValueError(f"`multipliers` names the layer path {path!r} twice.")
        checked[path] = check_number(
            f"multipliers[{path!r}]",
            multiplier,
            *MULTIPLIER_RANGE,
            hint="0 stops the layer's updates, 1 keeps the base learning rate.",
        )
    return tuple(sorted(checked.items()))


@dataclass(frozen=True)
class LayerRates:
    """Per-layer learning rates: explicit multipliers by layer path and/or layer-wise decay.

    A variable's learning rate is the run's learning rate times its layer's multiplier, which is
    the product of two parts:

    - the explicit multiplier of the nearest of the layer itself and its ancestors that has
      one in `multipliers` (1 when none has);
    - with `decay_factor`, the decay of the base block the layer lies in: the base model's
      layers with weights, in model order, are cut into blocks of `layers_per_block` from the
      top; the top block keeps 1, the block below it `decay_factor`, the next
      `decay_factor ** 2`, and so on (ULMFiT's discriminative fine-tuning, fastai's
      `slice(lr)`). Layers outside the base (the new head) keep 1.

    So `LayerRates({"transfer_model/feature_extractor": 0.1}, decay_factor=0.5)` gives the
    base's top block 0.1, the next 0.05, ..., and the head 1.

    Attributes:
        multipliers: Layer path (as `models.tree.LayerTree` names it, e.g.
            "transfer_model/feature_extractor/conv1") -> multiplier in `MULTIPLIER_RANGE` (0 stops
            the layer's updates, 1 is the base rate). A mapping or (path, multiplier) pairs;
            stored as pairs sorted by path. Paths are checked against the model when resolved.
        decay_factor: None for no decay, else a factor in `DECAY_FACTOR_RANGE`.
        layers_per_block: Base layers with weights per decay block (`LAYERS_PER_BLOCK_RANGE`),
            e.g. 2 so a Conv2D and its BatchNormalization share a rate.
        base_path: The nested model the decay runs over; None for the model's default base
            (`LayerTree.default_base_path`, the largest nested model, or the whole model when
            it has none).

    Bad values raise `ValueError` (`TypeError` too for a value of the wrong kind, see
    `models.validation`).

    Example:
    >>> rates = LayerRates(decay_factor=0.5, layers_per_block=2)
    >>> rates.to_dict()
    {'multipliers': {}, 'decay_factor': 0.5, 'layers_per_block': 2, 'base_path': None}
    >>> LayerRates.from_dict(rates.to_dict()) == rates
    True
    """

    multipliers: Mapping[str, float] | tuple[tuple[str, float], ...] = ()
    decay_factor: float | None = None
    layers_per_block: int = 1
    base_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "multipliers", _multiplier_pairs(self.multipliers))
        if self.decay_factor is not None:
            factor = check_number(
                "decay_factor",
                self.decay_factor,
                *DECAY_FACTOR_RANGE,
                hint="ULMFiT divides the rate by 2.6 per layer group: decay_factor=0.385.",
            )
            object.__setattr__(self, "decay_factor", factor)
        check_whole_number("layers_per_block", self.layers_per_block, *LAYERS_PER_BLOCK_RANGE)
        if self.base_path is not None:
            _check_path("`base_path`", self.base_path)

    @property
    def multiplier_map(self) -> dict[str, float]:
        """The explicit multipliers as a dict, path -> multiplier."""
        return dict(self.multipliers)

    @property
    def is_identity(self) -> bool:
        """Whether every layer keeps the base rate on any model (all multipliers 1, no decay)."""
        no_decay = self.decay_factor is None or self.decay_factor == 1.0
        return no_decay and all(multiplier == 1.0 for _, multiplier in self.multipliers)

    @property
    def max_multiplier(self) -> float:
        """The largest multiplier any layer can get (decay never raises one above 1)."""
        return max([1.0, *(multiplier for _, multiplier in self.multipliers)])

    def to_dict(self) -> dict[str, Any]:
        """Returns the setting as JSON-ready data (`from_dict` reads it back)."""
        return {
            "multipliers": self.multiplier_map,
            "decay_factor": self.decay_factor,
            "layers_per_block": self.layers_per_block,
            "base_path": self.base_path,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LayerRates:
        """Reads `to_dict`'s output (missing keys take their defaults).

        Args:
            data: A mapping with some of the keys "multipliers", "decay_factor",
                "layers_per_block" and "base_path".

        Returns:
            A checked `LayerRates`.

        Raises:
            ValueError: For data that is not such a mapping, an unknown key or a bad value
                (the message names it).

        Example:
        >>> data = {"multipliers": {"transfer_model/feature_extractor": 0.1}}
        >>> LayerRates.from_dict(data).multiplier_map
        {'transfer_model/feature_extractor': 0.1}
        """
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(
                "Per-layer learning rates must be a mapping with the keys "
                f"{list(_FIELDS)}. Received: {type(data).__name__} {data!r:.80}"
            )
        unknown = sorted(str(key) for key in data if key not in _FIELDS)
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} in the per-layer learning rates. Expected some of "
                f"{list(_FIELDS)}."
            )
        arguments = dict(data)
        if arguments.get("multipliers") is None:
            arguments.pop("multipliers", None)
        if arguments.get("layers_per_block") is None:
            arguments.pop("layers_per_block", None)
        return cls(**arguments)

    def __str__(self) -> str:
        parts = []
        if self.decay_factor is not None:
            block = "layer" if self.layers_per_block == 1 else f"{self.layers_per_block} layers"
            parts.append(f"decay x{self.decay_factor:g} per block of {block}")
        if self.multipliers:
            parts.append(f"{len(self.multipliers)} layer multiplier(s)")
        return "Per-layer rates: " + (", ".join(parts) if parts else "none")


# ------------------------------------------------------------------------ resolving on a model
def decay_blocks(
    tree: LayerTree, base_path: str | None = None, layers_per_block: int = 1
) -> list[tuple[str, ...]]:
    """Cuts the base model's layers with weights into decay blocks, the top block first.

    Args:
        tree: The model's `LayerTree`.
        base_path: Path of the base model; None for `tree.default_base_path()`.
        layers_per_block: Layers per block, counted from the top (the lowest block may hold
            fewer).

    Returns:
        Tuples of layer paths, each in model order; the first tuple is the top block (rate
        multiplier 1), the second gets `decay_factor`, and so on.

    Example:
    >>> decay_blocks(tree, "transfer_model/feature_extractor", layers_per_block=2)[0]
    ('transfer_model/feature_extractor/conv3', 'transfer_model/feature_extractor/batch_norm3')
    """
    check_whole_number("layers_per_block", layers_per_block, *LAYERS_PER_BLOCK_RANGE)
    base = tree.default_base_path() if base_path is None else tree.canonical_path(base_path)
    layers = tree.base_layer_paths(base)
    blocks = []
    for end in range(len(layers), 0, -layers_per_block):
        blocks.append(tuple(layers[max(0, end - layers_per_block) : end]))
    return blocks


def _canonical_multipliers(rates: LayerRates, tree: LayerTree) -> dict[str, float]:
    """The explicit multipliers keyed by the paths the tree lists (aliases resolved)."""
    explicit: dict[str, float] = {}
    for path, multiplier in rates.multipliers:
        canonical = tree.canonical_path(path)  # ValueError naming the path when unknown
        if canonical in explicit and explicit[canonical] != multiplier:
            raise ValueError(
                f"`multipliers` gives the layer at {canonical!r} two different multipliers "
                f"({explicit[canonical]:g} and {multiplier:g}) through its paths "
                f"{[canonical, *tree.aliases(canonical)]}. Give it one."
            )
        explicit[canonical] = multiplier
    return explicit


def _nearest(values: Mapping[str, float], tree: LayerTree, path: str) -> float:
    """The value at `path` or at its nearest ancestor that has one; 1 when none has."""
    for candidate in (path, *tree.ancestors(path)):
        if candidate in values:
            return values[candidate]
    return 1.0


def layer_multipliers(rates: LayerRates, tree: LayerTree) -> dict[str, float]:
    """Resolves the setting to a learning-rate multiplier for every layer of a model.

    Args:
        rates: The `LayerRates`.
        tree: The model's `LayerTree`.

    Returns:
        Every path of `tree.paths()` (model order) -> its multiplier: the explicit multiplier
        of the nearest of the layer and its ancestors that has one (else 1), times the decay
        of the base block it lies in (else 1).

    Raises:
        ValueError: When a path in `rates` (or its `base_path`) is not in the model.

    Example:
    >>> layer_multipliers(LayerRates(decay_factor=0.5), tree)["transfer_model/classifier"]
    1.0
    """
    if not isinstance(rates, LayerRates):
        raise TypeError(
            f"Expected a LayerRates, received {type(rates).__name__}. Build one with "
            "LayerRates(multipliers={...}, decay_factor=...)."
        )
    explicit = _canonical_multipliers(rates, tree)
    decay: dict[str, float] = {}
    if rates.decay_factor is not None:
        blocks = decay_blocks(tree, rates.base_path, rates.layers_per_block)
        for depth, block in enumerate(blocks):
            for path in block:
                decay[path] = rates.decay_factor**depth
    elif rates.base_path is not None:
        tree.canonical_path(rates.base_path)  # an unknown base is an error with or without decay
    return {
        path: _nearest(explicit, tree, path) * _nearest(decay, tree, path) for path in tree.paths()
    }


def variable_multipliers(rates: LayerRates, tree: LayerTree) -> list[tuple[keras.Variable, float]]:
    """Resolves the setting to a multiplier for every variable of a model.

    Args:
        rates: The `LayerRates`.
        tree: The model's `LayerTree`.

    Returns:
        `(variable, multiplier)` for every variable of the model, once each, in model order: a
        variable takes the multiplier of the layer that holds it (a variable shared by two
        layers, that of the layer the tree lists it under). Variables that never train (e.g.
        BatchNormalization's moving statistics) are listed too; the optimizer never sees them.
        Pass the list to `layer_rate_optimizer`.

    Example:
    >>> pairs = variable_multipliers(LayerRates({"transfer_model/classifier": 0.0}), tree)
    >>> [(variable.path, multiplier) for variable, multiplier in pairs][-2:]
    [('classifier/kernel', 0.0), ('classifier/bias', 0.0)]
    """
    multipliers = layer_multipliers(rates, tree)
    return [
        (variable, multipliers[path])
        for path in tree.paths()
        for variable, _ in tree.own_variables(path)
    ]


def layer_rates_frame(rates: LayerRates, tree: LayerTree, learning_rate: float) -> pd.DataFrame:
    """The resolved rates as a table for the dashboard: one row per layer with weights.

    Args:
        rates: The `LayerRates`.
        tree: The model's `LayerTree`.
        learning_rate: The run's (base) learning rate.

    Returns:
        A DataFrame in model order with columns `path`, `multiplier`, `learning_rate` (the
        effective rate: `learning_rate * multiplier`) and `trainable` (whether Keras trains the
        layer's weights now: a frozen layer does not move whatever its rate).

    Example:
    >>> layer_rates_frame(LayerRates(decay_factor=0.5), tree, 1e-3).tail(2)
    """
    learning_rate = check_number("learning_rate", learning_rate, 0.0)
    multipliers = layer_multipliers(rates, tree)
    rows = []
    for node in tree.nodes():
        if not any(kind == WEIGHTS_KIND for _, kind in tree.own_variables(node.path)):
            continue
        multiplier = multipliers[node.path]
        rows.append(
            {
                "path": node.path,
                "multiplier": multiplier,
                "learning_rate": learning_rate * multiplier,
                "trainable": node.effectively_trainable,
            }
        )
    columns = ["path", "multiplier", "learning_rate", "trainable"]
    return pd.DataFrame(rows, columns=columns)


# -------------------------------------------------------------------------------- optimizer
class LayerRateOptimizer:
    """The base of every layer-rate optimizer: scales each variable's update by its multiplier.

    Mixed in before a Keras optimizer class by `layer_rate_optimizer_class` (build one with
    `layer_rate_optimizer`); test `isinstance(optimizer, LayerRateOptimizer)` to recognise one.
    It adds no optimizer variables, so its state is the plain optimizer's. See the module
    docstring for why scaling the learning rate scales the update.
    """

    def __init__(
        self, *args: Any, variable_multipliers: Iterable[tuple[Any, float]] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        by_key: dict[Any, float] = {}
        for variable, multiplier in variable_multipliers:
            if not isinstance(variable, keras.Variable):
                raise TypeError(
                    "`variable_multipliers` must hold (keras.Variable, multiplier) pairs, as "
                    f"`variable_multipliers(rates, tree)` returns; received a "
                    f"{type(variable).__name__}."
                )
            value = check_number(f"the multiplier of {variable.path}", multiplier, 0.0)
            key = self._var_key(variable)
            if by_key.get(key, value) != value:
                raise ValueError(
                    f"Variable {variable.path} is given two multipliers ({by_key[key]:g} and "
                    f"{value:g}); give it one."
                )
            by_key[key] = value
        self._multiplier_by_key = by_key

    def variable_multiplier(self, variable: Any) -> float:
        """The multiplier of one variable (1 for a variable given none).

        Args:
            variable: A `keras.Variable` or, on TensorFlow, the `tf.Variable` inside one (what
                `update_step` receives there): both have the same optimizer key.
        """
        return self._multiplier_by_key.get(self._var_key(variable), 1.0)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        multiplier = self.variable_multiplier(variable)
        if multiplier == 0.0:
            return  # neither the variable nor its moments change: bitwise unchanged
        if multiplier != 1.0:  # exactly 1 runs the plain code: bitwise the plain optimizer
            learning_rate = ops.multiply(learning_rate, multiplier)
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        if self.weight_decay is None:
            return
        plain, scaled = [], []
        for variable in variables:
            multiplier = self.variable_multiplier(variable)
            if multiplier == 1.0:
                plain.append(variable)
            elif multiplier != 0.0:
                scaled.append((variable, multiplier))
        if plain:
            super()._apply_weight_decay(plain)
        for variable, multiplier in scaled:
            if self._use_weight_decay(variable):
                learning_rate = ops.cast(
                    ops.multiply(self.learning_rate, multiplier), variable.dtype
                )
                decay = ops.cast(self.weight_decay, variable.dtype)
                self.assign_sub(variable, variable * decay * learning_rate)


def layer_rate_optimizer_class(
    optimizer_class: type[keras.optimizers.Optimizer],
) -> type[keras.optimizers.Optimizer]:
    """The subclass of a Keras optimizer class that scales each variable's update.

    The subclass is made once per optimizer class and registered for Keras serialization as
    "FreezeLab>LayerRate<Name>" (its config is the plain optimizer's: a loaded copy has no
    multipliers, i.e. behaves as the plain optimizer).

    Args:
        optimizer_class: A `keras.optimizers.Optimizer` subclass whose update is proportional
            to the learning rate `update_step` receives (measured for Adam, AdamW, SGD and
            RMSprop).

    Returns:
        The subclass; its constructor takes the optimizer's arguments plus
        `variable_multipliers`.

    Example:
    >>> layer_rate_optimizer_class(keras.optimizers.Adam).__name__
    'LayerRateAdam'
    """
    if isinstance(optimizer_class, type) and issubclass(
        optimizer_class, keras.optimizers.LossScaleOptimizer
    ):
        raise TypeError(
            "LossScaleOptimizer wraps another optimizer and never calls its own update step; "
            "give the inner optimizer's class instead."
        )
    return mixed_optimizer_class(
        LayerRateOptimizer,
        optimizer_class,
        prefix="LayerRate",
        doc=f"{getattr(optimizer_class, '__name__', optimizer_class)} with per-variable "
        "learning-rate multipliers (see `models.layer_rates`).",
    )


def layer_rate_optimizer(
    optimizer_class: type[keras.optimizers.Optimizer],
    variable_multipliers: Iterable[tuple[keras.Variable, float]] = (),
    **optimizer_arguments: Any,
) -> keras.optimizers.Optimizer:
    """Builds a Keras optimizer that scales each variable's update by its multiplier.

    For a variable with multiplier `c` the optimizer runs its own update step with learning
    rate `learning_rate * c` (and scales decoupled weight decay by `c`), which scales the
    variable's update by `c` (see the module docstring for why, per optimizer). A multiplier of
    exactly 1 runs the plain code (bitwise the plain optimizer); 0 leaves the variable and its
    moments bitwise unchanged. Variables not listed keep multiplier 1.

    Args:
        optimizer_class: A Keras optimizer class, e.g. `keras.optimizers.Adam` (or
            `models.training_config.OPTIMIZERS["adam"]`).
        variable_multipliers: `(keras.Variable, multiplier)` pairs, e.g. from
            `variable_multipliers(rates, tree)`; multipliers are finite and >= 0.
        **optimizer_arguments: The optimizer's own arguments (`learning_rate`, `momentum`, ...).

    Returns:
        An instance of `layer_rate_optimizer_class(optimizer_class)`, ready for
        `model.compile(optimizer=...)`.

    Example:
    >>> rates = LayerRates(decay_factor=0.5, layers_per_block=2)
    >>> optimizer = layer_rate_optimizer(keras.optimizers.Adam,
    ...                                  variable_multipliers(rates, tree), learning_rate=1e-3)
    >>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    """
    subclass = layer_rate_optimizer_class(optimizer_class)
    return subclass(variable_multipliers=variable_multipliers, **optimizer_arguments)


# Registered at import, so a model compiled with one of FreezeLab's optimizers loads back here.
for _optimizer_class in (
    keras.optimizers.Adam,
    keras.optimizers.AdamW,
    keras.optimizers.SGD,
    keras.optimizers.RMSprop,
):
    layer_rate_optimizer_class(_optimizer_class)
del _optimizer_class
