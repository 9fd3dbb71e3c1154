"""The script's per-layer learning rates: a self-contained optimizer subclass and its multipliers.

The script cannot import FreezeLab, so it carries its own copy of what
`models.layer_rates.layer_rate_optimizer` does: a subclass of the chosen Keras optimizer whose
`update_step` runs with `learning_rate * multiplier` for each variable (exactly 1 runs the
plain code, 0 skips the variable), and, for AdamW, decoupled weight decay scaled the same way.
The multipliers are FreezeLab's own (`models.layer_rates.variable_multipliers`), written as a
literal dict of weight path -> multiplier (weights not listed keep 1) that the script resolves
on its model, so the two optimizers make bitwise the same updates from the same gradients
(tests/test_export_lora.py trains both on TensorFlow and on JAX and compares every weight).

A weight's path (`keras.Variable.path`, e.g. "conv1/kernel") is the same in the script's
model as in FreezeLab's, since the script builds the same layers with the same names; the
script checks that each path it lists is found.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from models.export.source import comment_text, dict_lines, literal, number
from models.layer_rates import variable_multipliers
from models.training import OPTIMIZERS, TrainingConfig
from models.tree import WEIGHTS_KIND, LayerTree

_UPDATE_STEP = """
    def __init__(self, variable_multipliers, **kwargs):
        super().__init__(**kwargs)
        # Keyed as the optimizer keys its variables (a Keras internal, as FreezeLab uses it):
        # on TensorFlow, update_step receives the tf.Variable inside each keras.Variable.
        self.multiplier_by_key = {
            self._var_key(variable): multiplier for variable, multiplier in variable_multipliers
        }

    def variable_multiplier(self, variable):
        return self.multiplier_by_key.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self.variable_multiplier(variable)
        if multiplier == 0.0:
            return  # the variable and its optimizer moments stay bitwise as they are
        if multiplier != 1.0:  # exactly 1 runs the plain code
            learning_rate = keras.ops.multiply(learning_rate, multiplier)
        super().update_step(gradient, variable, learning_rate)
"""

_WEIGHT_DECAY = """
    def _apply_weight_decay(self, variables):
        # Decoupled weight decay uses the global learning rate: scale it by the multiplier too.
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
                learning_rate = keras.ops.cast(
                    keras.ops.multiply(self.learning_rate, multiplier), variable.dtype
                )
                decay = keras.ops.cast(self.weight_decay, variable.dtype)
                self.assign_sub(variable, variable * decay * learning_rate)
"""

_RESOLVE = """found = {weight.path for weight in model.weights}
missing = sorted(set(RATE_MULTIPLIERS) - found)
if missing:
    raise ValueError(
        f"This model has no weight at {missing[:5]}: it is not the model FreezeLab exported."
    )
variable_multipliers = [
    (weight, RATE_MULTIPLIERS[weight.path])
    for weight in model.weights
    if weight.path in RATE_MULTIPLIERS
]"""


def rate_multipliers(config: TrainingConfig, tree: LayerTree) -> dict[str, float]:
    """Each weight's learning-rate multiplier under `config.layer_rates`, by weight path.

    Args:
        config: The training settings; without `layer_rates` there are no multipliers.
        tree: The `LayerTree` of the model (LoRA adapters included).

    Returns:
        Weight path (`keras.Variable.path`) -> multiplier, in model order, for the weights
        whose multiplier is not 1 (state such as moving statistics never reaches an
        optimizer and is left out); empty when every weight keeps the base rate.

    Raises:
        ValueError: When `layer_rates` names a path the model does not have, or two weights
            share a path but not a multiplier (the script could not tell them apart).

    Example:
    >>> rates = LayerRates({"transfer_model/classifier": 0.5})
    >>> rate_multipliers(TrainingConfig(layer_rates=rates), tree)
    {'classifier/kernel': 0.5, 'classifier/bias': 0.5}
    """
    if config.layer_rates is None:
        return {}
    weights = {
        id(variable)
        for path in tree.paths()
        for variable, kind in tree.own_variables(path)
        if kind == WEIGHTS_KIND
    }
    by_path: dict[str, set[float]] = {}
    for variable, multiplier in variable_multipliers(config.layer_rates, tree):
        if id(variable) in weights:
            by_path.setdefault(variable.path, set()).add(float(multiplier))
    conflicts = sorted(path for path, values in by_path.items() if len(values) > 1)
    if conflicts:
        raise ValueError(
            f"Weights of different layers share the path(s) {conflicts[:5]} but not their "
            "learning-rate multipliers, so the script cannot tell them apart. Give those "
            "layers one multiplier, or rename the layers of the uploaded model."
        )
    multipliers = {path: values.pop() for path, values in by_path.items()}
    return {path: value for path, value in multipliers.items() if value != 1.0}


def optimizer_class_name(optimizer: str) -> str:
    """The name of the script's optimizer subclass, e.g. "LayerRateAdam" for "adam"."""
    return f"LayerRate{OPTIMIZERS[optimizer].__name__}"


def optimizer_class_lines(optimizer: str) -> list[str]:
    """The script's subclass of the Keras optimizer named `optimizer` (a key of OPTIMIZERS).

    Example:
    >>> optimizer_class_lines("sgd")[0]
    'class LayerRateSGD(keras.optimizers.SGD):'
    """
    keras_class = OPTIMIZERS[optimizer]
    name = keras_class.__name__
    lines = [
        f"class {optimizer_class_name(optimizer)}(keras.optimizers.{name}):",
        f'    """{name} that scales each variable\'s learning rate by its multiplier '
        "(FreezeLab's).",
        "",
        "    Its update is proportional to the learning rate it is given, so scaling one",
        "    variable's learning rate scales its update (Keras optimizers have no parameter",
        "    groups, and Adam ignores a gradient's scale). 0 stops the variable; 1 is the plain",
        f"    {name}.",
        '    """',
        *_UPDATE_STEP.splitlines(),
    ]
    decay = inspect.signature(keras_class).parameters.get("weight_decay")
    if decay is not None and decay.default is not None:  # AdamW decays by default
        lines += _WEIGHT_DECAY.splitlines()
    return lines


def rates_lines(multipliers: Mapping[str, float], summary: str) -> list[str]:
    """The script's `RATE_MULTIPLIERS` literal and the `variable_multipliers` it resolves to.

    Args:
        multipliers: `rate_multipliers(config, tree)`.
        summary: What the setting is in words (`str(config.layer_rates)`), for a comment.

    Returns:
        Source lines; they need `model` built (LoRA adapters included).
    """
    items = [f"{literal(path)}: {number(value)}" for path, value in multipliers.items()]
    return [
        f"# {comment_text(summary)}.",
        "# FreezeLab resolved them to each weight's multiplier of the learning rate, by Keras's",
        "# weight path (variable.path); the weights not listed keep 1.",
        *dict_lines("RATE_MULTIPLIERS = ", items),
        *_RESOLVE.splitlines(),
    ]


__all__ = [
    "optimizer_class_lines",
    "optimizer_class_name",
    "rate_multipliers",
    "rates_lines",
]
