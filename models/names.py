"""Layer names TensorFlow can train under, and the names users see: the ones in their own file.

Keras accepts any string without "/" as a layer name, but TensorFlow refuses many of them once
`fit` traces the model (measured with TensorFlow 2.21 and Keras 3.15): a space, "<", "\\" or a
non-ASCII letter in a layer name stops training with "'odd names' is not a valid scope name"
(or "Node name contains invalid characters"), and a model's own name must also be a valid
*root* scope, which cannot start with "_" or "-" ("'odd model' is not a valid root scope
name"). Calling the model eagerly works, so such a model loads and shows fine and only fails
when it trains. FreezeLab holds every name to the root rule, so a name is safe wherever the
layer ends up; the empty name is renamed too.

FreezeLab therefore gives such layers an internal name TensorFlow accepts and from which the
original name can be read back exactly: the readable part of the name, ">x", then the original
name's UTF-8 bytes in hexadecimal (`"odd names"` becomes `"odd_names>x6f6464206e616d6573"`;
TensorFlow's graph wants a letter, digit or "." right after a ">"). Names TensorFlow already
accepts stay as they are. What the user sees or exports as text (the layer tree and its paths,
the freeze plan, the drift records, the charts, the exported script) shows `display_name`: the
name in the user's own file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras

# TensorFlow's root scope pattern is ^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$; ">" marks an internal
# name, "\\" is left out to keep names readable, and Keras refuses "/" in layer names.
_SAFE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*")
_INTERNAL_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*>x(?P<hex>(?:[0-9a-f]{2})*)")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
_READABLE_LENGTH = 40


def is_safe_name(name: str) -> bool:
    """Whether TensorFlow accepts `name` as a layer name while training, as it is.

    Args:
        name: A layer or model name.

    Returns:
        True for names of ASCII letters, digits, "_", "." and "-" that start with a letter, a
        digit or "." (so they are valid TensorFlow scope names, root scopes included).

    Example:
    >>> is_safe_name("conv2d_1"), is_safe_name("odd names"), is_safe_name("_hidden")
    (True, False, False)
    """
    return _SAFE_NAME.fullmatch(name) is not None


def internal_name(name: str) -> str:
    """The name FreezeLab gives a layer inside its models so TensorFlow can train it.

    A safe name (see `is_safe_name`) is returned unchanged. Any other name becomes its
    readable part (unsafe runs replaced by "_", at most 40 characters), ">x" and the name's
    UTF-8 bytes in hexadecimal. Different names always get different internal names, and
    `display_name(internal_name(name)) == name` for every string.

    Args:
        name: The layer's name as the user gave it (any string Keras accepts).

    Returns:
        A valid TensorFlow scope name.

    Raises:
        TypeError: When `name` is not a string.

    Example:
    >>> internal_name("odd names")
    'odd_names>x6f6464206e616d6573'
    >>> internal_name("conv2d_1")
    'conv2d_1'
    """
    if not isinstance(name, str):
        raise TypeError(f"A layer name must be a string; received {type(name).__name__}.")
    if is_safe_name(name):
        return name
    readable = _UNSAFE_RUN.sub("_", name).strip("_-")[:_READABLE_LENGTH] or "layer"
    if not _SAFE_NAME.fullmatch(readable):
        readable = f"layer_{readable}"
    return f"{readable}>x{name.encode('utf-8').hex()}"


def display_name(name: str) -> str:
    """The name to show for a layer: the user's own name when `name` is an internal one.

    Args:
        name: A layer's `name` as Keras holds it.

    Returns:
        The original name for a name made by `internal_name`, otherwise `name` itself.

    Example:
    >>> display_name("odd_names>x6f6464206e616d6573")
    'odd names'
    >>> display_name("conv2d_1")
    'conv2d_1'
    """
    match = _INTERNAL_NAME.fullmatch(name) if ">" in name else None
    if match is None:
        return name
    try:
        original = bytes.fromhex(match.group("hex")).decode("utf-8")
    except ValueError:
        return name
    # Only the exact form internal_name writes is read back; any other name is shown as is.
    return original if internal_name(original) == name else name


def _is_dtype_policy(item: dict) -> bool:
    return str(item.get("class_name", "")).endswith("DTypePolicy") or "dtype_polic" in str(
        item.get("module", "")
    )


def _rename_references(value: Any, rename: Callable[[str], str]) -> Any:
    """Renames the `[layer_name, node_index, tensor_index]` entries of input/output_layers."""
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(index, int) for index in value[1:])
    ):
        return [rename(value[0]), *value[1:]]
    if isinstance(value, list | tuple):
        return [_rename_references(item, rename) for item in value]
    if isinstance(value, dict):
        return {key: _rename_references(item, rename) for key, item in value.items()}
    return value


def _rename_config(item: Any, rename: Callable[[str], str]) -> Any:
    """A copy of a serialised config with every layer (and operation) name passed through
    `rename`: layer configs, Functional layer entries, the layer a Keras tensor comes from,
    and the layers a Functional model's inputs and outputs come from. Each name is renamed
    once, where its object is serialised (a nested model's name by its parent's entry)."""
    if isinstance(item, list | tuple):  # get_config() holds tuples where JSON has lists
        return [_rename_config(value, rename) for value in item]
    if not isinstance(item, dict):
        return item
    result = {key: _rename_config(value, rename) for key, value in item.items()}
    config = result.get("config")
    if "class_name" in result and isinstance(config, dict):
        _rename_object(result, config, rename)
    if isinstance(result.get("layers"), list):
        for key in ("input_layers", "output_layers"):
            if key in result:
                result[key] = _rename_references(result[key], rename)
    return result


def _rename_object(item: dict, config: dict, rename: Callable[[str], str]) -> None:
    """Renames in place the layer a Keras tensor comes from, or an object's own name."""
    if item["class_name"] == "__keras_tensor__":
        history = config.get("keras_history")
        if isinstance(history, list | tuple) and history and isinstance(history[0], str):
            config["keras_history"] = [rename(history[0]), *history[1:]]
    elif isinstance(config.get("name"), str) and not _is_dtype_policy(item):
        config["name"] = rename(config["name"])
        if isinstance(item.get("name"), str):
            item["name"] = rename(item["name"])


def with_internal_names(model: keras.Model) -> tuple[keras.Model, dict[str, str]]:
    """Rebuilds a model so that every layer has a name TensorFlow can train under.

    The names are changed in the model's config before its layers are built again (renaming
    built layers is not enough: their variables and the optimizer's slot variables keep the
    old names), then the weights are copied over, so the result computes exactly what `model`
    does and keeps its `trainable` flags. A model whose names are all safe is returned as is.

    Args:
        model: A built Functional or Sequential model of built-in or registered layers.

    Returns:
        `(model, renamed)`: the model to use (a new one when a name changed) and the changed
        names, `{original name: internal name}`.

    Raises:
        TypeError: When `model` is not a Keras model.

    Example:
    >>> safe, renamed = with_internal_names(uploaded_base)
    >>> renamed
    {'odd names': 'odd_names>x6f6464206e616d6573'}
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"with_internal_names expects a Functional or Sequential keras.Model; received "
            f"{type(model).__name__}."
        )
    renamed: dict[str, str] = {}

    def rename(name: str) -> str:
        new_name = internal_name(name)
        if new_name != name:
            renamed[name] = new_name
        return new_name

    config = _rename_config(model.get_config(), rename)
    config["name"] = rename(model.name)
    if not renamed:
        return model, {}
    rebuilt = type(model).from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt, renamed
