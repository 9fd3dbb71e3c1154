"""Make a Keras optimizer class with a FreezeLab mixin in front of it, once, registered.

`models.layer_rates` (per-variable learning rates) and `models.diagnostics` (each step's
gradient and update norms) each add behaviour to any Keras optimizer class by a mixin placed
before it in the method resolution order. This module owns how such a class is made: checked,
named "<Prefix><Optimizer>", made once per (mixin, class) and registered for Keras
serialization as "FreezeLab><Prefix><Optimizer>", so a model compiled with it loads back.

Example:
>>> mixed_optimizer_class(LayerRateOptimizer, keras.optimizers.Adam, prefix="LayerRate",
...                       doc="Adam with multipliers.").__name__
'LayerRateAdam'
"""

from __future__ import annotations

import keras

_CLASSES: dict[tuple[type, type], type] = {}


def mixed_optimizer_class(
    mixin: type, optimizer_class: type[keras.optimizers.Optimizer], *, prefix: str, doc: str
) -> type[keras.optimizers.Optimizer]:
    """The subclass `(mixin, optimizer_class)`, made once and registered for serialization.

    Args:
        mixin: The behaviour to put in front (its methods call `super()`).
        optimizer_class: A `keras.optimizers.Optimizer` subclass; one that already has the
            mixin is returned as it is.
        prefix: The new class's name is `prefix + optimizer_class.__name__`.
        doc: The new class's docstring.

    Returns:
        The subclass.

    Raises:
        TypeError: When `optimizer_class` is not a Keras optimizer class.
    """
    if not (
        isinstance(optimizer_class, type)
        and issubclass(optimizer_class, keras.optimizers.Optimizer)
    ):
        raise TypeError(
            "`optimizer_class` must be a Keras optimizer class such as keras.optimizers.Adam; "
            f"received {optimizer_class!r:.80}."
        )
    if issubclass(optimizer_class, mixin):
        return optimizer_class
    key = (mixin, optimizer_class)
    if key not in _CLASSES:
        name = f"{prefix}{optimizer_class.__name__}"
        namespace = {"__module__": mixin.__module__, "__qualname__": name, "__doc__": doc}
        subclass = type(name, (mixin, optimizer_class), namespace)
        _CLASSES[key] = keras.saving.register_keras_serializable(package="FreezeLab", name=name)(
            subclass
        )
    return _CLASSES[key]
