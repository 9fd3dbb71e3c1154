"""Build the lab model with LoRA adapters on the base's convolutions, and measure what LoRA trains.

Shared by the three LoRA pitfalls (`lora_parent_unfreeze`, `lora_save_reload`,
`lora_small_cnn`). The bundled base's three Conv2D layers have no bias (a BatchNormalization
follows each), so under LoRA a conv layer trains its two adapter matrices only; the head
(`classifier`, a Dense) trains as usual. Every count here is read from Keras's own
`trainable_weights` or computed from the variables' shapes, never written in advance.

Example:
>>> model = build_lora_lab_model(seed=0)
>>> [layer.name for layer in lab_lora_layers(model)]
['conv1', 'conv2', 'conv3']
>>> trainable_params(model), lora_budget(model)  # its BatchNormalization layers train too
(2409, 2249)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

from models.drift import LayerCheck
from models.lora import (
    LoraSetting,
    adapted_variable,
    adapter_parameters,
    adapter_variables,
    enable_lora,
    is_lora,
    lora_setting,
)
from models.pitfalls.runner import BASE_NAME, BASE_PATH, build_lab_model
from models.tree import LayerTree

LORA_RANK = 4
LORA_LAYER_NAMES: tuple[str, ...] = ("conv1", "conv2", "conv3")
"""The base's layers that get an adapter: its three Conv2D layers."""
LORA_PATHS: tuple[str, ...] = tuple(f"{BASE_PATH}/{name}" for name in LORA_LAYER_NAMES)
HEAD_NAME = "classifier"


def build_lora_lab_model(seed: int, rank: int = LORA_RANK) -> keras.Model:
    """Builds the lab model (`build_lab_model`) with a LoRA adapter on each conv of the base.

    Uses `models.lora.enable_lora` (Keras's `enable_lora`), so each conv's kernel is frozen
    and its adapters `lora_kernel_a` (random) and `lora_kernel_b` (zeros) train: at step 0
    the model computes exactly what the model without adapters computes.

    Args:
        seed: Seed of the new head's weights (the adapters' random `a` is drawn after it).
        rank: The adapters' rank.

    Returns:
        An uncompiled "transfer_model" whose base convs have adapters of `rank`.

    Example:
    >>> build_lora_lab_model(0).get_layer("feature_extractor").get_layer("conv2").lora_rank
    4
    """
    model = build_lab_model(seed)
    tree = LayerTree(model)
    for path in LORA_PATHS:
        enable_lora(tree.layer(path), LoraSetting(rank))
    return model


def lab_lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The base's LoRA layers in model order: conv1, conv2, conv3 (those with an adapter).

    (`models.lora.lora_layers` finds them in any model, but not in model order.)
    """
    base = model.get_layer(BASE_NAME)
    layers = [base.get_layer(name) for name in LORA_LAYER_NAMES]
    return [layer for layer in layers if is_lora(layer)]


def num_params(variables: Sequence[keras.Variable]) -> int:
    """The number of scalars in `variables`."""
    return int(sum(np.prod(variable.shape) for variable in variables))


def trainable_params(model: keras.Model) -> int:
    """Keras's own count: the sum over `model.trainable_weights`."""
    return num_params(model.trainable_weights)


def lora_budget(model: keras.Model) -> int:
    """What LoRA should train, from the shapes alone: every adapter plus the head.

    Args:
        model: A lab model with LoRA layers and a "classifier" head.

    Returns:
        The sum of `adapter_parameters` over the LoRA layers, plus the head's weights.

    Example:
    >>> lora_budget(build_lora_lab_model(0))  # 100 + 704 + 1,280 adapters + 165 head
    2249
    """
    adapters = sum(
        adapter_parameters(layer, lora_setting(layer)) for layer in lab_lora_layers(model)
    )
    return int(adapters + num_params(model.get_layer(HEAD_NAME).weights))


def lora_kernels(model: keras.Model) -> list[keras.Variable]:
    """The adapted (frozen under LoRA) kernel variable of each LoRA layer, in model order."""
    return [adapted_variable(layer) for layer in lab_lora_layers(model)]


def all_adapters(model: keras.Model) -> list[keras.Variable]:
    """Both adapter matrices of each LoRA layer, in model order."""
    return [variable for layer in lab_lora_layers(model) for variable in adapter_variables(layer)]


def kernel_checks(
    paths: Sequence[str], kernels: Sequence[keras.Variable], before: Sequence[np.ndarray]
) -> tuple[LayerCheck, ...]:
    """The bitwise check of each LoRA kernel, as the drift recorder reports one.

    Args:
        paths: The LoRA layers' paths.
        kernels: Their kernel variables, in the same order.
        before: NumPy copies of the kernels before training.

    Returns:
        One `LayerCheck(lora_kernel=True)` per layer: `weights_unchanged` is the kernel's
        bitwise comparison (its bytes) with its copy.
    """
    return tuple(
        LayerCheck(
            path=path,
            weights_unchanged=_same_bits(np.asarray(kernel.numpy()), start),
            state_unchanged=True,
            lora_kernel=True,
        )
        for path, kernel, start in zip(paths, kernels, before, strict=True)
    )


def _same_bits(now: np.ndarray, start: np.ndarray) -> bool:
    return np.array_equal(
        np.ascontiguousarray(now).view(np.uint8), np.ascontiguousarray(start).view(np.uint8)
    )


# ------------------------------------------------------------ adapters kept next to a file
def _key(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    return f"{layer.name}.{variable.name}"


def save_lora_variables(model: keras.Model, path: str) -> int:
    """Saves each LoRA layer's unmerged kernel and both adapters to a NumPy `.npz` file.

    Keras's `.keras` file and `save_weights` store a LoRA layer's merged kernel
    (`kernel + scale * a @ b`) and no adapters; this keeps what they drop.

    Args:
        model: A model with LoRA layers.
        path: The `.npz` file to write.

    Returns:
        How many variables were saved (three per LoRA layer).

    Example:
    >>> save_lora_variables(model, "adapters.npz")
    9
    """
    arrays = {
        _key(layer, variable): np.asarray(variable.numpy())
        for layer in lab_lora_layers(model)
        for variable in (adapted_variable(layer), *adapter_variables(layer))
    }
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return len(arrays)


def restore_lora_variables(model: keras.Model, path: str) -> int:
    """Puts back what `save_lora_variables` saved into a model loaded with the same adapters.

    Args:
        model: The loaded model (its LoRA layers named as when saved).
        path: The `.npz` file of `save_lora_variables`.

    Returns:
        How many variables were restored.

    Raises:
        ValueError: When the file lacks a variable of the model's LoRA layers, or its shape
            differs (the file belongs to another model).
    """
    if not os.path.exists(path):
        raise ValueError(f"No adapter file at '{path}'; save one with `save_lora_variables`.")
    restored = 0
    with np.load(path) as arrays:
        for layer in lab_lora_layers(model):
            for variable in (adapted_variable(layer), *adapter_variables(layer)):
                key = _key(layer, variable)
                if key not in arrays or arrays[key].shape != tuple(variable.shape):
                    raise ValueError(
                        f"The adapter file '{path}' has no {key} of shape "
                        f"{tuple(variable.shape)}; it holds {sorted(arrays.files)[:6]}. Save "
                        "it from the same model with `save_lora_variables`."
                    )
                variable.assign(arrays[key])
                restored += 1
    return restored
