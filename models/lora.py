"""LoRA adapters: Keras's `enable_lora`, as a third state of a layer next to frozen and trainable.

Keras facts this module relies on (measured with Keras 3.15.1 on TensorFlow and JAX, see
tests/test_lora.py):

- `layer.enable_lora(rank, lora_alpha)` exists on Dense, EinsumDense, Embedding and the Conv
  layers (Conv1D/2D/3D; not DepthwiseConv2D or SeparableConv2D). It needs a built layer with no
  kernel constraint, and can be done once per layer: Keras has no way to remove adapters.
- It makes the layer's kernel (an Embedding's embeddings) non-trainable and adds two trainable
  float32 variables, `lora_kernel_a` (in x rank, random) and `lora_kernel_b` (rank x out,
  zeros, so the model is unchanged at step 0). The layer computes with the effective kernel
  `kernel + (alpha / rank) * a @ b` (`layer.kernel` returns it); the bias keeps training.
- Setting `trainable = True` on the layer or any parent afterwards makes the kernel trainable
  again (on TensorFlow only when the flag changes, since TensorFlow skips an assignment of the
  value a flag already has; on JAX on every assignment): "LoRA" silently becomes full
  fine-tuning. FreezeLab's freezing (`models.freezing`) puts the kernel back after every flag
  it writes, so freezing and LoRA compose: a LoRA layer is either frozen (adapters too) or
  trains its adapters and bias, never its kernel.
- Saving a LoRA model as `.keras` stores the merged kernel (`save_own_variables`); loading it
  zeroes both adapters, so their gradients are zero and further training moves only the bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from models.limits import LORA_ALPHA_RANGE, LORA_RANK_RANGE
from models.validation import check_choice, check_number, check_whole_number

LORA_VARIABLE_NAMES: tuple[str, str] = ("lora_kernel_a", "lora_kernel_b")
"""The names Keras gives the two adapter matrices."""

ADAPTED_VARIABLE_NAMES: tuple[str, str] = ("kernel", "embeddings")
"""The names of the variable LoRA adapts and keeps frozen (an Embedding's is "embeddings")."""

LORA_LAYER_TYPES: tuple[type[keras.layers.Layer], ...] = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Embedding,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
"""Layer classes on which Keras offers `enable_lora` (subclasses included)."""


@dataclass(frozen=True)
class LoraSetting:
    """The adapter of one layer: its rank and its scale numerator.

    Attributes:
        rank: Inner size of the two adapter matrices (`LORA_RANK_RANGE`).
        alpha: The adapter adds `(alpha / rank) * a @ b`; None means Keras's default, the rank.

    Example:
    >>> LoraSetting(4).scale
    1.0
    >>> LoraSetting(4, alpha=8).to_dict()
    {'rank': 4, 'alpha': 8.0}
    """

    rank: int
    alpha: float | None = None

    def __post_init__(self) -> None:
        hint = "Typical ranks: 4 to 16."
        object.__setattr__(
            self, "rank", check_whole_number("rank", self.rank, *LORA_RANK_RANGE, hint=hint)
        )
        if self.alpha is not None:
            alpha = check_number(
                "alpha", self.alpha, *LORA_ALPHA_RANGE, hint="Keras's default is the rank."
            )
            object.__setattr__(self, "alpha", alpha)

    @property
    def effective_alpha(self) -> float:
        """The scale numerator Keras uses: `alpha`, or the rank when it is None."""
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        """The factor on `a @ b`: alpha / rank."""
        return self.effective_alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        """Returns the setting as JSON-ready data (the alpha Keras uses, never None)."""
        return {"rank": self.rank, "alpha": self.effective_alpha}

    @classmethod
    def from_dict(cls, data: Any) -> LoraSetting:
        """Reads `to_dict`'s output; raises `ValueError` naming what is wrong."""
        if not isinstance(data, dict) or "rank" not in data:
            raise ValueError(
                f"A LoRA setting is a mapping with a 'rank' (and an 'alpha'); received {data!r}."
            )
        return cls(data["rank"], data.get("alpha"))

    def __str__(self) -> str:
        return f"LoRA r={self.rank}, alpha={self.effective_alpha:g}"


# ------------------------------------------------------------------------ reading layers
def why_not_lora(layer: keras.layers.Layer) -> str | None:
    """Says why Keras cannot put a LoRA adapter on `layer`, or None when it can.

    Args:
        layer: Any Keras layer.

    Returns:
        None when `enable_lora` works (or already did) on the layer; otherwise a sentence.

    Example:
    >>> why_not_lora(keras.layers.BatchNormalization())
    'Keras offers LoRA on Dense, EinsumDense, Embedding and Conv layers, not on BatchNormalization.'
    """
    if not isinstance(layer, LORA_LAYER_TYPES) or not hasattr(layer, "enable_lora"):
        names = "Dense, EinsumDense, Embedding and Conv layers"
        return f"Keras offers LoRA on {names}, not on {type(layer).__name__}."
    if is_lora(layer):
        return None
    if not layer.built:
        return f"Layer '{layer.name}' is not built yet; its kernel does not exist."
    constraint = getattr(layer, "kernel_constraint", None) or getattr(
        layer, "embeddings_constraint", None
    )
    if constraint is not None:
        return f"Layer '{layer.name}' has a kernel constraint, which Keras's LoRA refuses."
    if getattr(layer, "quantization_mode", None):
        return f"Layer '{layer.name}' is quantized ({layer.quantization_mode}); LoRA is off here."
    return None


def supports_lora(layer: keras.layers.Layer) -> bool:
    """Whether Keras can put (or has put) a LoRA adapter on `layer`."""
    return why_not_lora(layer) is None


def is_lora(layer: keras.layers.Layer) -> bool:
    """Whether `layer` has a LoRA adapter."""
    return bool(getattr(layer, "lora_enabled", False))


def lora_setting(layer: keras.layers.Layer) -> LoraSetting | None:
    """The adapter of `layer` as a `LoraSetting`, or None when it has none."""
    if not is_lora(layer):
        return None
    return LoraSetting(int(layer.lora_rank), float(layer.lora_alpha))


def adapted_variable(layer: keras.layers.Layer) -> keras.Variable:
    """The variable LoRA adapts (and keeps frozen): the kernel, or an Embedding's embeddings."""
    variable = getattr(layer, "_embeddings", None)
    if not isinstance(layer, keras.layers.Embedding) or variable is None:
        variable = layer._kernel
    return variable


def adapter_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The two adapter matrices of a LoRA layer (empty for a layer without LoRA)."""
    if not is_lora(layer):
        return []
    return [layer.lora_kernel_a, layer.lora_kernel_b]


def effective_kernel(layer: keras.layers.Layer) -> np.ndarray:
    """The kernel the layer computes with: `kernel + (alpha / rank) * a @ b` for a LoRA layer.

    Returns:
        A NumPy array of the kernel's shape (an Embedding's embeddings).
    """
    value = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
    return np.asarray(keras.ops.convert_to_numpy(value))


def adapter_parameters(layer: keras.layers.Layer, setting: LoraSetting) -> int:
    """How many parameters an adapter of `setting` adds to `layer` (`a` plus `b`).

    Example:
    >>> adapter_parameters(dense_64_to_10, LoraSetting(4))  # 64 x 4 + 4 x 10
    296
    """
    # Keras's adapters: a is kernel.shape[:-1] + (rank,), b is (rank, kernel.shape[-1]).
    shape = tuple(int(size) for size in adapted_variable(layer).shape)
    return int(np.prod(shape[:-1])) * setting.rank + setting.rank * shape[-1]


# ------------------------------------------------------------------------ writing layers
def enable_lora(layer: keras.layers.Layer, setting: LoraSetting) -> None:
    """Puts a LoRA adapter on `layer` with Keras's own `enable_lora`.

    A frozen layer stays frozen (its new adapters too); a trainable one then trains its
    adapters and bias, not its kernel.

    Args:
        layer: A built layer that `supports_lora`, without an adapter yet.
        setting: Rank and alpha.

    Raises:
        ValueError: When Keras cannot put an adapter on the layer (the reason is said), or it
            has one already (Keras adds adapters once per layer).
    """
    reason = why_not_lora(layer)
    if reason is not None:
        raise ValueError(reason)
    if is_lora(layer):
        raise ValueError(
            f"Layer '{layer.name}' already has a LoRA adapter ({lora_setting(layer)}); Keras "
            "adds adapters once per layer. Rebuild the model to change it."
        )
    frozen = not layer.trainable
    layer.enable_lora(setting.rank, lora_alpha=setting.effective_alpha)
    if frozen:
        for variable in layer._trainable_variables:
            variable.trainable = False
    keep_adapted_variable_frozen(layer)


def keep_adapted_variable_frozen(layer: keras.layers.Layer) -> None:
    """After a `trainable` flag was written: a LoRA layer's kernel never trains.

    Keras's `trainable` setter makes every own variable of a layer trainable again, the
    adapted kernel included. Called by `models.freezing` after each flag it writes.
    """
    if is_lora(layer):
        adapted_variable(layer).trainable = False


def lora_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer with a LoRA adapter in `model` (itself included), each once."""
    layers = [model, *model._flatten_layers(include_self=False, recursive=True)]
    seen: set[int] = set()
    found = []
    for layer in layers:
        if is_lora(layer) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


LORA_TARGETS: dict[str, str] = {
    "dense": "every Dense and EinsumDense layer of the base",
    "attention": "the query and value projections of every attention layer of the base",
}
"""The bulk LoRA recipes by name: "attention" is KerasHub's `backbone.enable_lora(rank)`."""


def lora_targets(base: keras.layers.Layer, recipe: str) -> list[keras.layers.Layer]:
    """The layers of `base` a bulk LoRA recipe puts adapters on, in model order.

    Args:
        base: The base model (or any layer holding the targets).
        recipe: A key of `LORA_TARGETS`: "dense" (every Dense and EinsumDense that supports
            LoRA, attention projections included) or "attention" (the query and value
            EinsumDense of every MultiHeadAttention, as KerasHub's `enable_lora` does).

    Returns:
        The target layers, each once; empty when the base has none.

    Raises:
        ValueError: For an unknown recipe.
    """
    check_choice("recipe", recipe, sorted(LORA_TARGETS))
    layers = base._flatten_layers(include_self=True, recursive=True)
    found: dict[int, keras.layers.Layer] = {}
    for layer in layers:
        if recipe == "dense" and isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            candidates = [layer]
        elif recipe == "attention" and isinstance(layer, keras.layers.MultiHeadAttention):
            candidates = [layer._query_dense, layer._value_dense]
        else:
            candidates = []
        for candidate in candidates:
            if supports_lora(candidate):
                found.setdefault(id(candidate), candidate)
    return list(found.values())


def copy_weights_merging_adapters(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copies one layer's own variables onto its twin in another model, adapters merged.

    Keras's `save_own_variables` stores a LoRA layer's effective kernel; the target loads it
    with `load_own_variables` (a target with an adapter gets it zeroed: same function, the
    trained adapter merged into the kernel). This is how a model is rebuilt with a different
    set of adapters without losing what its layers learned.

    Args:
        source: A layer of the old model.
        target: The same layer (same class and shapes) in the new model.
    """
    store: dict[str, Any] = {}
    source.save_own_variables(store)
    if store:
        target.load_own_variables(store)


__all__ = [
    "ADAPTED_VARIABLE_NAMES",
    "LORA_LAYER_TYPES",
    "LORA_TARGETS",
    "LORA_VARIABLE_NAMES",
    "LoraSetting",
    "adapted_variable",
    "adapter_parameters",
    "adapter_variables",
    "copy_weights_merging_adapters",
    "effective_kernel",
    "enable_lora",
    "is_lora",
    "keep_adapted_variable_frozen",
    "lora_layers",
    "lora_setting",
    "lora_targets",
    "supports_lora",
    "why_not_lora",
]
