"""Freezing: Keras `trainable` flags written with Keras's documented semantics on every backend.

Keras facts this module relies on (measured with Keras 3.15, see tests/test_tree.py):

- `layer.trainable = v` sets `v` on the layer, on each of its own trainable variables and,
  recursively, on every sublayer.
- On the TensorFlow backend, `layer.trainable = v` is skipped entirely when the flag already
  equals `v` (TensorFlow's AutoTrackable short-circuits `self.x = self.x`), so unfreezing a
  trainable parent does not unfreeze its frozen children there, while it does on JAX. FreezeLab
  applies Keras's documented semantics on every backend through `set_trainable`.
- A layer object used by two parents has ONE flag: freezing it under either parent freezes it.
- Keras's setter makes a LoRA layer's adapted kernel trainable again; every flag written here
  is followed by `models.lora.keep_adapted_variable_frozen`, so freezing and LoRA compose.

`FreezingOperations` holds `LayerTree`'s freezing methods (one node, everything, "up to",
"the top N", BatchNormalization, a whole freeze plan); `LayerTree` mixes it in, as Keras's
`Model` mixes in its `Trainer`.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from models.lora import keep_adapted_variable_frozen
from models.validation import check_whole_number


def _set_own_trainable(layer: keras.layers.Layer, trainable: bool) -> None:
    """Sets one layer's own flag and its own variables' flags, leaving its sublayers alone.

    This is Keras's `Layer.trainable` setter without its recursion into sublayers, so writing
    every node of a plan gives the same result in any order, even when a layer has two parents.
    """
    layer._trainable = trainable
    for variable in layer._trainable_variables:
        variable.trainable = trainable
    keep_adapted_variable_frozen(layer)


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
    keep_adapted_variable_frozen(layer)
    for sublayer in layer._flatten_layers(include_self=False, recursive=True):
        setter(sublayer, trainable)
        keep_adapted_variable_frozen(sublayer)


class FreezingOperations:
    """The freezing methods of `LayerTree`: they write the model's own `trainable` flags.

    A mixin: it keeps no state and reads the model only through `LayerTree`'s public reading
    methods (`model`, `paths`, `layer`, `canonical_path`, `ancestors`, `default_base_path`,
    `base_layer_paths`, `batch_norm_paths`), so every method accepts a layer's aliases too.

    Example:
    >>> tree = LayerTree(model)
    >>> tree.freeze_all()
    >>> tree.unfreeze_top(2)
    """

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
        set_trainable(self.layer(path), not frozen)

    def freeze_all(self) -> None:
        """Freezes the whole model (`model.trainable = False`)."""
        set_trainable(self.model, False)

    def unfreeze_all(self) -> None:
        """Unfreezes the whole model (`model.trainable = True`)."""
        set_trainable(self.model, True)

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
        set_trainable(self.model, True)
        # Pre-order walk: everything met before `path` precedes it in model order. Freezing a
        # node freezes its subtree, which lies wholly before `path` unless it is an ancestor.
        for current in self.paths():
            if current not in ancestors:
                set_trainable(self.layer(current), False)
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
        base_path = self.canonical_path(base_path)
        set_trainable(self.layer(base_path), True)
        layers = self.base_layer_paths(base_path, include_weightless=True)
        with_weights = set(self.base_layer_paths(base_path))
        weighted = [index for index, path in enumerate(layers) if path in with_weights]
        if num_layers == 0:
            cut = len(layers)
        elif num_layers >= len(weighted):
            cut = 0
        else:
            cut = weighted[-num_layers]
        for path in layers[:cut]:
            set_trainable(self.layer(path), False)

    def freeze_batch_norm(self) -> None:
        """Freezes every BatchNormalization layer (inference mode, moving statistics fixed)."""
        for path in self.batch_norm_paths():
            set_trainable(self.layer(path), False)

    def frozen_paths(self) -> frozenset[str]:
        """Returns the current freeze plan: the paths whose own flag is `trainable=False`.

        Returns:
            A frozenset of paths from `paths()` (a layer with several parents appears once,
            under its listed path). `apply_frozen_paths` of it restores exactly this state.
        """
        return frozenset(path for path in self.paths() if not self.layer(path).trainable)

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
            try:
                wanted.add(self.canonical_path(path))
            except (TypeError, ValueError):
                unknown.append(path)
        if unknown:
            raise ValueError(
                f"The freeze plan names {len(unknown)} path(s) that are not in model "
                f"'{self.model.name}': {sorted(map(str, unknown))[:5]}. Read valid paths from "
                "`paths()`."
            )
        for path in self.paths():
            _set_own_trainable(self.layer(path), path not in wanted)
