"""The unfreeze advisor: rank the base's layers by relative gradient, then plan what to train.

Before any training, a few batches of the chosen data go through the model in inference mode
(BatchNormalization uses its moving statistics, dropout is off) and the gradient of the loss is
taken with respect to every trainable-kind weight of the base (kernel, bias, gamma, beta; never
the BatchNormalization moving statistics), *as if everything were trainable*, whatever the
current freeze flags. Each of the base's direct layers is then scored by its relative gradient,

    relative_gradient = ||g|| / ||W||,

the score surgical fine-tuning's Auto-RGN ranks layers by (Lee et al. 2022, "Surgical
Fine-Tuning Improves Adaptation to Distribution Shifts"): the layers whose weights the new task
pulls hardest, for their size, come first. `propose_plan` then unfreezes the top-ranked units
greedily within a budget of base parameters; `apply_plan` writes the plan into the tree.

Nothing is changed by the probe: the gradients are taken with respect to the variables' VALUES
inside a `keras.StatelessScope` (the model reads the values given to it and any assignment is
kept in the scope and dropped), so weights, BatchNormalization moving statistics, the optimizer,
the trainable flags and the compile state stay exactly as they were (tests/test_advisor.py checks
it bitwise). The one backend-specific piece is the gradient itself: `tf.GradientTape` on
TensorFlow, `jax.grad` on JAX; other backends raise NotImplementedError.

Ranking units are the base's direct layers with weights (`LayerTree.base_layer_paths`), or, with
`group_blocks`, the blocks that Keras's layer names reveal (MobileNetV2's "block_3_expand" and
"block_3_depthwise" form "block_3"; ResNet's "conv2_block1_..." form "conv2_block1").

Example:
>>> ranking = group_blocks(probe_gradients(tree, data.x, data.y))
>>> plan = propose_plan(ranking, budget=10_000)
>>> plan.message()
'The advisor unfreezes 2 units (conv1, conv2): 4,752 of 10,000 base parameters allowed (48%)...'
>>> apply_plan(tree, plan)   # then compile (TrainingJob does) and fit

`advise(tree, x, y, budget)` does the probe, the grouping, the plan and the top-N baseline in one
call (an `UnfreezeAdvice`); `base_weight_parameters` and `default_budget` size the budget.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from models.limits import BATCH_SIZE_RANGE, PROBE_BATCHES_RANGE
from models.names import display_name
from models.tree import WEIGHTS_KIND, LayerTree
from models.validation import check_number, check_whole_number

__all__ = [
    "BLOCK_NAME_PATTERNS",
    "DEFAULT_BUDGET_FRACTION",
    "DEFAULT_LOSS",
    "LAYER_COLUMNS",
    "PROBE_BATCHES_RANGE",
    "RANKING_COLUMNS",
    "AdvisorPlan",
    "UnfreezeAdvice",
    "advise",
    "apply_plan",
    "base_weight_parameters",
    "block_names",
    "default_budget",
    "group_blocks",
    "probe_gradients",
    "propose_plan",
    "top_n_plan",
]

DEFAULT_LOSS = "sparse_categorical_crossentropy"
"""The probe's loss unless told otherwise: `TrainingJob`'s (integer labels, probabilities)."""

DEFAULT_BUDGET_FRACTION = 0.25
"""The budget offered before the user chooses one: a quarter of the base's parameters."""

RANKING_COLUMNS = (
    "rank",
    "unit",
    "position",
    "member_paths",
    "num_layers",
    "parameters",
    "batch_norm_parameters",
    "batch_norm_paths",
    "gradient_norm",
    "weight_norm",
    "relative_gradient",
    "is_batch_norm",
    "currently_frozen",
)
"""The columns every ranking frame has (`group_blocks`'s frame has exactly these, in order):

- rank: 1 for the highest relative gradient; ties go to the unit nearer the head.
- unit: the unit's name (a layer's name, or a block's name from `group_blocks`).
- position: the model order of the unit's first layer among the base's layers with weights.
- member_paths: the unit's layer paths (direct layers of the base), in model order.
- num_layers: how many layers the unit holds.
- parameters: the unit's trainable-kind weights (kernel, bias, gamma, beta), all members.
- batch_norm_parameters / batch_norm_paths: the part of them held by BatchNormalization members.
- gradient_norm, weight_norm: L2 norms over all the unit's trainable-kind weights.
- relative_gradient: gradient_norm / weight_norm (gradient_norm when weight_norm is 0, as in
  `models.diagnostics`).
- is_batch_norm: whether every member is a BatchNormalization layer.
- currently_frozen: whether Keras trains none of the unit's weights now.
"""

LAYER_COLUMNS = (
    *RANKING_COLUMNS[:2],
    "layer_path",
    "layer_name",
    "class_name",
    *RANKING_COLUMNS[2:],
)
"""The columns of `probe_gradients`'s frame: the ranking columns plus the layer's path, name
and class."""

BLOCK_NAME_PATTERNS: tuple[str, ...] = (
    r"stage_\d+_block_\d+",  # ConvNeXt: convnext_tiny_stage_0_block_0_depthwise_conv
    r"conv\d+_block\d+",  # ResNet, DenseNet: conv2_block1_1_conv
    r"block_\d+",  # MobileNetV2: block_3_expand
    r"block\d+[a-z]?",  # EfficientNet: block2a_expand_conv; Xception, VGG: block1_conv1
    r"expanded_conv(?:_\d+)?",  # MobileNetV2's block 0, MobileNetV3: expanded_conv_1_expand
    r"stem|top|conv\d+|pool\d+",  # stems and tops: stem_conv, top_bn, conv1_conv, pool2_conv
)
"""Keras-application name patterns that name a block; a layer's block is its name up to the
first pattern that matches a whole "_"-separated part of it (checked in this order)."""

_BLOCK_PATTERNS = tuple(
    re.compile(rf"(?:^|_)(?:{pattern})(?=_|$)") for pattern in BLOCK_NAME_PATTERNS
)
_BATCH_NORM_AFFIXES = (re.compile(r"^bn_(.+)$"), re.compile(r"^(.+)_(?:bn|BN)$"))
_BACKENDS_WITH_GRADIENTS = ("tensorflow", "jax")


# ------------------------------------------------------------------------------ the probe
def _weight_variables(tree: LayerTree, path: str) -> list[keras.Variable]:
    """The trainable-kind variables of a layer and everything under it (each variable once)."""
    return [
        variable
        for current in (path, *tree.descendants(path))
        for variable, kind in tree.own_variables(current)
        if kind == WEIGHTS_KIND
    ]


def _size(variable: keras.Variable) -> int:
    return int(math.prod(variable.shape))


def _probe_sample(
    x: Any, y: Any, num_batches: int, batch_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most `num_batches * batch_size` examples: all of them, or a seeded random subset."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            "The probe needs inputs `x` and labels `y` with one row per example, as many labels "
            f"as inputs and at least one example; received x of shape {x.shape} and y of shape "
            f"{y.shape}."
        )
    wanted = num_batches * batch_size
    if len(x) <= wanted:
        return x, y
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=wanted, replace=False))
    return x[chosen], y[chosen]


def _loss_function(loss: Any) -> Callable[[Any, Any], Any]:
    try:
        return keras.losses.get(DEFAULT_LOSS if loss is None else loss)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`loss` must be None (sparse categorical cross-entropy, as TrainingJob uses), a "
            f"Keras loss name such as 'sparse_categorical_crossentropy', or a Keras loss or "
            f"callable(y_true, y_pred). Received: loss={loss!r}"
        ) from error


def _batch_loss(model: keras.Model, loss_function: Callable, x: Any, y: Any) -> Any:
    """The mean loss of one batch, the model in inference mode."""
    return keras.ops.mean(loss_function(y, model(x, training=False)))


def _tensorflow_gradients(
    model: keras.Model, variables: list[keras.Variable], loss_function: Callable, x: Any, y: Any
) -> list[Any]:
    import tensorflow as tf

    values = [tf.convert_to_tensor(variable.value) for variable in variables]
    with tf.GradientTape() as tape:
        tape.watch(values)
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            loss = _batch_loss(model, loss_function, x, y)
    return tape.gradient(loss, values)


def _jax_gradients(
    model: keras.Model, variables: list[keras.Variable], loss_function: Callable, x: Any, y: Any
) -> list[Any]:
    import jax

    def compute(values: list[Any]) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return _batch_loss(model, loss_function, x, y)

    return jax.grad(compute)([variable.value for variable in variables])


def _gradients_function() -> Callable[..., list[Any]]:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_gradients
    if backend == "jax":
        return _jax_gradients
    raise NotImplementedError(
        f"The unfreeze advisor computes gradients on the {' and '.join(_BACKENDS_WITH_GRADIENTS)} "
        f"backends; this process runs Keras on '{backend}'. Start it with "
        "KERAS_BACKEND=tensorflow (or jax) to probe the model."
    )


def _mean_gradients(
    tree: LayerTree,
    variables: list[keras.Variable],
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
) -> tuple[list[np.ndarray], int]:
    """The average over the batches (weighted by size) of each variable's gradient, float64."""
    gradients_of = _gradients_function()
    loss_function = _loss_function(loss)
    totals = [np.zeros(tuple(variable.shape), np.float64) for variable in variables]
    num_batches = 0
    for start in range(0, len(x), batch_size):
        batch_x, batch_y = x[start : start + batch_size], y[start : start + batch_size]
        weight = len(batch_x) / len(x)
        gradients = gradients_of(tree.model, variables, loss_function, batch_x, batch_y)
        for total, gradient in zip(totals, gradients, strict=True):
            if gradient is not None:  # None: the variable does not reach the loss (no gradient)
                total += weight * np.asarray(keras.ops.convert_to_numpy(gradient), np.float64)
        num_batches += 1
    return totals, num_batches


def _relative(gradient_norm: np.ndarray, weight_norm: np.ndarray) -> np.ndarray:
    """gradient / weight, or the gradient itself where the weight norm is 0 (as diagnostics)."""
    safe = np.where(weight_norm > 0, weight_norm, 1.0)
    return np.where(weight_norm > 0, gradient_norm / safe, gradient_norm)


def _ranked(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Ranks by relative gradient (highest first; ties: nearer the head first), rank order."""
    frame = frame.sort_values(
        ["relative_gradient", "position"], ascending=[False, False], kind="stable"
    ).reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame[list(columns)]


def probe_gradients(
    tree: LayerTree,
    x: Any,
    y: Any,
    *,
    base_path: str | None = None,
    num_batches: int = 4,
    batch_size: int = 32,
    loss: Any = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Ranks the base's layers by relative gradient on a few batches, changing nothing.

    For each of the base's direct layers with weights, the gradient of the loss with respect to
    its trainable-kind weights (kernel, bias, gamma, beta; not BatchNormalization's moving
    statistics) is computed as if everything were trainable, whatever the freeze flags, with
    the model in inference mode (BatchNormalization uses its moving statistics, dropout is off:
    the probe is deterministic). The gradients of the batches are averaged (weighted by batch
    size), which equals the gradient of the mean loss over all the probe's examples. Its norm
    is used rather than the mean of per-batch norms: the averaged gradient is the direction
    that training on these examples would follow, it does not depend on how the examples are
    cut into batches, and it is not inflated by per-batch noise (noise adds to every batch's
    norm, most for small batches and noisy layers, and would favour them).

    Weights, BatchNormalization statistics, the optimizer, the trainable flags and the compile
    state are left exactly as they were (see the module docstring). Probe before training, not
    while a job trains the same model: the probe reads the variables as they are.

    Args:
        tree: The model's `LayerTree`.
        x: Inputs, one row per example (a NumPy array or anything `np.asarray` reads).
        y: Labels for `loss`, one per example.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        num_batches: How many batches to probe (`PROBE_BATCHES_RANGE`). When `x` holds more than
            `num_batches * batch_size` examples, that many are drawn at random (seeded, without
            replacement); otherwise every example is used.
        batch_size: Examples per batch (`BATCH_SIZE_RANGE`); it only bounds memory.
        loss: A Keras loss (name, object or callable(y_true, y_pred)); None means sparse
            categorical cross-entropy on the model's probability outputs, as `TrainingJob` uses.
        seed: Seed of the random choice of examples.

    Returns:
        A DataFrame with the columns `LAYER_COLUMNS` (see `RANKING_COLUMNS` for their meaning),
        one row per layer, in rank order (rank 1, the highest relative gradient, first). Its
        `attrs` hold "base_path", "num_examples" and "num_batches".

    Raises:
        ValueError: For a bad argument, an unknown base, or a base without weights.
        NotImplementedError: On a backend other than TensorFlow and JAX.

    Example:
    >>> ranking = probe_gradients(tree, data.x, data.y, num_batches=4, batch_size=32)
    >>> ranking[["rank", "layer_name", "relative_gradient"]].head(3)
    """
    if not isinstance(tree, LayerTree):
        raise TypeError(f"`tree` must be a LayerTree, received {type(tree).__name__}.")
    num_batches = check_whole_number("num_batches", num_batches, *PROBE_BATCHES_RANGE)
    batch_size = check_whole_number("batch_size", batch_size, *BATCH_SIZE_RANGE)
    seed = check_whole_number("seed", seed, 0)
    base_path = tree.canonical_path(
        base_path if base_path is not None else tree.default_base_path()
    )
    layer_paths = tree.base_layer_paths(base_path)
    if not layer_paths:
        raise ValueError(
            f"The base '{base_path}' has no layer with weights, so there is nothing to rank. "
            "Pass the path of a base model that holds weights."
        )
    x, y = _probe_sample(x, y, num_batches, batch_size, seed)
    owned = {path: _weight_variables(tree, path) for path in layer_paths}
    variables = [variable for path in layer_paths for variable in owned[path]]
    gradients, batches_run = _mean_gradients(tree, variables, loss, x, y, batch_size)
    squares = {id(v): float(np.sum(g * g)) for v, g in zip(variables, gradients, strict=True)}
    nodes = {node.path: node for node in tree.nodes()}
    rows = []
    for position, path in enumerate(layer_paths):
        node = nodes[path]
        weights = owned[path]
        parameters = sum(_size(variable) for variable in weights)
        weight_squares = sum(
            float(np.sum(np.square(np.asarray(keras.ops.convert_to_numpy(v), np.float64))))
            for v in weights
        )
        rows.append(
            {
                "unit": node.name,
                "layer_path": path,
                "layer_name": node.name,
                "class_name": node.class_name,
                "position": position,
                "member_paths": (path,),
                "num_layers": 1,
                "parameters": parameters,
                "batch_norm_parameters": parameters if node.is_batch_norm else 0,
                "batch_norm_paths": (path,) if node.is_batch_norm else (),
                "gradient_norm": math.sqrt(sum(squares[id(v)] for v in weights)),
                "weight_norm": math.sqrt(weight_squares),
                "is_batch_norm": node.is_batch_norm,
                "currently_frozen": node.trainable_params == 0,
            }
        )
    frame = pd.DataFrame(rows)
    frame["relative_gradient"] = _relative(frame.gradient_norm.values, frame.weight_norm.values)
    frame = _ranked(frame, LAYER_COLUMNS)
    frame.attrs.update(base_path=base_path, num_examples=len(x), num_batches=batches_run)
    return frame


# ----------------------------------------------------------------------------- the blocks
def block_names(layer_names: Sequence[str]) -> list[str]:
    """Names the block each layer belongs to, from Keras's layer names.

    A layer's block is its name up to the first of `BLOCK_NAME_PATTERNS` that matches a whole
    "_"-separated part of it ("block_3_expand" -> "block_3", "conv2_block1_1_bn" ->
    "conv2_block1", "block2a_se_reduce" -> "block2a"). A BatchNormalization named after the
    layer it normalizes ("bn_Conv1", "Conv_1_bn") joins that layer's block. Any other layer is
    a block of its own, named after itself.

    Args:
        layer_names: The layers' names, e.g. a ranking's `layer_name` column.

    Returns:
        One block name per layer, in the same order.

    Example:
    >>> block_names(["Conv1", "bn_Conv1", "block_1_expand", "block_1_expand_BN", "conv3"])
    ['Conv1', 'Conv1', 'block_1', 'block_1', 'conv3']
    """
    names = [str(name) for name in layer_names]
    blocks: dict[str, str] = {}
    for name in names:
        for pattern in _BLOCK_PATTERNS:
            match = pattern.search(name)
            if match is not None:
                blocks[name] = name[: match.end()]
                break
    for name in names:
        if name in blocks:
            continue
        blocks[name] = name
        for affix in _BATCH_NORM_AFFIXES:
            match = affix.match(name)
            if match is not None and match.group(1) in names:
                blocks[name] = blocks.get(match.group(1), match.group(1))
                break
    return [blocks[name] for name in names]


def _check_frame(frame: Any, columns: Sequence[str], expected: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"Expected {expected} (a pandas DataFrame); received {type(frame).__name__}."
        )
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"The ranking frame lacks the columns {missing}; expected {expected}. "
            f"Columns received: {list(frame.columns)}."
        )


def group_blocks(frame: pd.DataFrame) -> pd.DataFrame:
    """Groups a layer ranking into the blocks Keras's layer names reveal, and ranks the blocks.

    A block's gradient norm is the square root of the sum of its layers' squared gradient
    norms (the norm over all the block's weights), its weight norm likewise, its parameters
    the sum; its relative gradient is the ratio of the two norms. BatchNormalization members
    count in the block's norms; `propose_plan` leaves them out of the budget and frozen unless
    asked. Where no layer shares a block (the bundled CNN), the units stay the layers.

    Args:
        frame: `probe_gradients`'s frame (it needs `layer_name` and the ranking columns).

    Returns:
        A frame with the columns `RANKING_COLUMNS`, one row per block, in rank order; its
        `attrs` are the input's.

    Example:
    >>> blocks = group_blocks(probe_gradients(tree, data.x, data.y))
    >>> blocks[["rank", "unit", "num_layers", "relative_gradient"]].head(3)
    """
    _check_frame(frame, ("layer_name", *RANKING_COLUMNS), "probe_gradients(...)'s frame")
    layers = frame.sort_values("position", kind="stable").reset_index(drop=True)
    layers["block"] = block_names(layers.layer_name.tolist())
    rows = []
    for block, members in layers.groupby("block", sort=False):
        batch_norm = members[members.is_batch_norm.astype(bool)]
        rows.append(
            {
                "unit": block,
                "position": int(members.position.min()),
                "member_paths": tuple(path for paths in members.member_paths for path in paths),
                "num_layers": int(members.num_layers.sum()),
                "parameters": int(members.parameters.sum()),
                "batch_norm_parameters": int(members.batch_norm_parameters.sum()),
                "batch_norm_paths": tuple(p for paths in batch_norm.member_paths for p in paths),
                "gradient_norm": math.sqrt(float(np.sum(np.square(members.gradient_norm)))),
                "weight_norm": math.sqrt(float(np.sum(np.square(members.weight_norm)))),
                "is_batch_norm": bool(members.is_batch_norm.all()),
                "currently_frozen": bool(members.currently_frozen.all()),
            }
        )
    blocks = pd.DataFrame(rows)
    blocks["relative_gradient"] = _relative(blocks.gradient_norm.values, blocks.weight_norm.values)
    blocks = _ranked(blocks, RANKING_COLUMNS)
    blocks.attrs.update(frame.attrs)
    return blocks


# ------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class AdvisorPlan:
    """Which of the base's layers to unfreeze, and how many base parameters that trains.

    Attributes:
        unfreeze_paths: The base's direct layers to unfreeze, in model order; every other
            layer of the base is frozen by `apply_plan`.
        units: The chosen units (layer or block names), best-ranked first (for "top_n", the
            top layer first).
        base_parameters: How many of the base's parameters the plan trains (the head's are not
            counted).
        budget: The base parameters the user allowed.
        method: "advisor" (`propose_plan`) or "top_n" (`top_n_plan`).
        include_batch_norm: Whether BatchNormalization layers may be unfrozen.
        base_path: The base the plan is for, when known.
    """

    unfreeze_paths: tuple[str, ...]
    units: tuple[str, ...]
    base_parameters: int
    budget: int
    method: str = "advisor"
    include_batch_norm: bool = False
    base_path: str | None = None

    def message(self) -> str:
        """The plan in words, e.g. for the Freeze step.

        Example:
        >>> plan.message()
        'The advisor unfreezes 2 units (conv1, conv2): 4,752 of 10,000 base parameters allowed...'
        """
        batch_norm = (
            "BatchNormalization layers may train too."
            if self.include_batch_norm
            else "BatchNormalization layers stay frozen (Keras's fine-tuning advice)."
        )
        head = "The head always trains and is not counted."
        who = "The advisor" if self.method == "advisor" else "Unfreezing the top layers"
        if not self.units:
            return (
                f"{who}: no unit of the base fits in the budget of {self.budget:,} base "
                f"parameters, so the base stays frozen and only the head trains. {batch_norm}"
            )
        shown = ", ".join(self.units[:6]) + (
            f" and {len(self.units) - 6} more" if len(self.units) > 6 else ""
        )
        share = f" ({self.base_parameters / self.budget:.0%})" if self.budget else ""
        noun = "unit" if len(self.units) == 1 else "units"
        if self.method != "advisor":
            noun = "layer" if len(self.units) == 1 else "layers"
        verb = "unfreezes" if self.method == "advisor" else "trains"
        return (
            f"{who} {verb} {len(self.units)} {noun} ({shown}): {self.base_parameters:,} of "
            f"{self.budget:,} base parameters allowed{share}. {head} {batch_norm}"
        )


_PLAN_COLUMNS = (
    "rank",
    "unit",
    "position",
    "member_paths",
    "parameters",
    "batch_norm_parameters",
    "batch_norm_paths",
)


def _check_budget(budget: Any) -> int:
    return check_whole_number(
        "budget",
        budget,
        0,
        hint="It is how many of the base's parameters may train (the head is not counted), "
        "e.g. 50000.",
    )


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def propose_plan(
    ranking: pd.DataFrame, budget: int, *, include_batch_norm: bool = False
) -> AdvisorPlan:
    """Unfreezes the best-ranked units that fit in a budget of base parameters, greedily.

    The units are taken in rank order; each one whose parameters still fit in what is left of
    the budget is chosen, the others are passed over (a smaller unit further down may still
    fit). BatchNormalization layers are left frozen, and out of the count, unless
    `include_batch_norm` (Keras's fine-tuning guidance keeps them frozen, in inference mode); a
    unit made only of them is passed over.

    Args:
        ranking: `probe_gradients`'s or `group_blocks`'s frame (any frame with the columns
            rank, unit, position, member_paths, parameters, batch_norm_parameters and
            batch_norm_paths).
        budget: How many of the BASE's parameters may train, a whole number >= 0. The head
            (everything outside the base) always trains and is not counted.
        include_batch_norm: Whether BatchNormalization layers may be unfrozen too.

    Returns:
        An `AdvisorPlan` (method "advisor").

    Raises:
        TypeError: When `ranking` is not a DataFrame or an argument has the wrong type.
        ValueError: When `ranking` lacks columns or `budget` is negative.

    Example:
    >>> plan = propose_plan(group_blocks(probe_gradients(tree, x, y)), budget=50_000)
    >>> plan.unfreeze_paths[:2]
    """
    _check_frame(ranking, _PLAN_COLUMNS, "probe_gradients(...) or group_blocks(...)")
    budget = _check_budget(budget)
    include_batch_norm = _check_flag("include_batch_norm", include_batch_norm)
    left = budget
    chosen: list[tuple[int, int, str]] = []  # (position, order in unit, path)
    units: list[str] = []
    for row in ranking.sort_values("rank", kind="stable").itertuples(index=False):
        skipped = () if include_batch_norm else tuple(row.batch_norm_paths)
        cost = int(row.parameters) - (0 if include_batch_norm else int(row.batch_norm_parameters))
        paths = [path for path in row.member_paths if path not in skipped]
        if not paths or cost > left:
            continue
        left -= cost
        units.append(str(row.unit))
        chosen += [(int(row.position), order, path) for order, path in enumerate(paths)]
    return AdvisorPlan(
        unfreeze_paths=tuple(path for _, _, path in sorted(chosen)),
        units=tuple(units),
        base_parameters=budget - left,
        budget=budget,
        method="advisor",
        include_batch_norm=include_batch_norm,
        base_path=ranking.attrs.get("base_path"),
    )


def top_n_plan(
    tree: LayerTree,
    budget: int,
    base_path: str | None = None,
    *,
    include_batch_norm: bool = False,
) -> AdvisorPlan:
    """The baseline: unfreeze the base's top N layers with weights, the largest N in the budget.

    The classic recipe (`LayerTree.unfreeze_top`), sized by parameters: walking down from the
    base's last layer with weights, layers are added while their parameters fit in the budget;
    the first one that does not fit ends the walk. BatchNormalization layers are left frozen,
    out of the count and out of N, unless `include_batch_norm`.

    Args:
        tree: The model's `LayerTree`.
        budget: How many of the BASE's parameters may train, a whole number >= 0 (the head
            always trains and is not counted).
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        include_batch_norm: Whether BatchNormalization layers count and may be unfrozen.

    Returns:
        An `AdvisorPlan` (method "top_n"); its units are the layers' names, top layer first.

    Example:
    >>> top_n_plan(tree, 10_000, "transfer_model/feature_extractor").units
    ('conv3',)
    """
    if not isinstance(tree, LayerTree):
        raise TypeError(f"`tree` must be a LayerTree, received {type(tree).__name__}.")
    budget = _check_budget(budget)
    include_batch_norm = _check_flag("include_batch_norm", include_batch_norm)
    base_path = tree.canonical_path(
        base_path if base_path is not None else tree.default_base_path()
    )
    left = budget
    chosen: list[str] = []
    for path in reversed(tree.base_layer_paths(base_path)):
        if not include_batch_norm and isinstance(tree.layer(path), keras.layers.BatchNormalization):
            continue
        cost = sum(_size(variable) for variable in _weight_variables(tree, path))
        if cost > left:
            break
        left -= cost
        chosen.append(path)
    return AdvisorPlan(
        unfreeze_paths=tuple(reversed(chosen)),
        units=tuple(display_name(tree.layer(path).name) for path in chosen),
        base_parameters=budget - left,
        budget=budget,
        method="top_n",
        include_batch_norm=include_batch_norm,
        base_path=base_path,
    )


def apply_plan(tree: LayerTree, plan: AdvisorPlan, base_path: str | None = None) -> None:
    """Freezes the base but for the plan's layers; the head keeps its flags.

    Every direct layer of the base is frozen (with everything inside it) except the plan's
    layers, which are unfrozen (with everything inside them); the base model and the models
    above it keep `trainable=True` for themselves so that Keras trains what the plan names.
    Layers outside the base (the head) keep their flags. As with every freeze change, compile
    the model again before training (`TrainingJob` does).

    Args:
        tree: The model's `LayerTree`.
        plan: From `propose_plan` or `top_n_plan`.
        base_path: Path of the base model; defaults to the plan's, else
            `tree.default_base_path()`.

    Raises:
        TypeError: When `plan` is not an `AdvisorPlan`.
        ValueError: When a path of the plan is not a direct layer of the base.

    Example:
    >>> apply_plan(tree, plan)
    >>> tree.node(tree.default_base_path()).trainable_params == plan.base_parameters
    True
    """
    if not isinstance(plan, AdvisorPlan):
        raise TypeError(
            f"`plan` must be an AdvisorPlan from propose_plan or top_n_plan; received "
            f"{type(plan).__name__}."
        )
    base_path = base_path if base_path is not None else plan.base_path
    base_path = tree.canonical_path(
        base_path if base_path is not None else tree.default_base_path()
    )
    layers = tree.base_layer_paths(base_path, include_weightless=True)
    unknown = [path for path in plan.unfreeze_paths if path not in layers]
    if unknown:
        raise ValueError(
            f"The plan names {len(unknown)} path(s) that are not direct layers of the base "
            f"'{base_path}': {unknown[:5]}. Make the plan from this model's ranking, or pass "
            "the base it was made for as `base_path`."
        )
    frozen = set(tree.frozen_paths())
    frozen -= {base_path, *tree.descendants(base_path), *tree.ancestors(base_path)}
    for path in layers:
        if path not in plan.unfreeze_paths:
            frozen |= {path, *tree.descendants(path)}
    tree.apply_frozen_paths(frozen)


# ------------------------------------------------------------------------ one-call advice
def base_weight_parameters(tree: LayerTree, base_path: str | None = None) -> int:
    """Counts the base's trainable-kind parameters: the most a budget can usefully allow.

    Args:
        tree: The model's `LayerTree`.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.

    Returns:
        The number of scalars in the kernels, biases, gammas and betas of the base's direct
        layers with weights (BatchNormalization's gamma and beta included, its moving
        statistics not), whatever the freeze flags: the sum of a ranking's `parameters`.

    Example:
    >>> base_weight_parameters(tree, "transfer_model/feature_extractor")
    14128
    """
    if not isinstance(tree, LayerTree):
        raise TypeError(f"`tree` must be a LayerTree, received {type(tree).__name__}.")
    base_path = base_path if base_path is not None else tree.default_base_path()
    return sum(
        _size(variable)
        for path in tree.base_layer_paths(base_path)
        for variable in _weight_variables(tree, path)
    )


def default_budget(base_parameters: int, fraction: float = DEFAULT_BUDGET_FRACTION) -> int:
    """The budget to offer before the user chooses one: a fraction of the base's parameters.

    Args:
        base_parameters: The base's trainable-kind parameters (`base_weight_parameters`).
        fraction: The share of them, in [0, 1]; `DEFAULT_BUDGET_FRACTION` (a quarter) unless
            told otherwise.

    Returns:
        `floor(fraction * base_parameters)`.

    Example:
    >>> default_budget(14_128)
    3532
    """
    base_parameters = check_whole_number("base_parameters", base_parameters, 0)
    fraction = check_number("fraction", fraction, 0.0, 1.0)
    return math.floor(fraction * base_parameters)


@dataclass(frozen=True, eq=False)
class UnfreezeAdvice:
    """What `advise` found: the ranking, the advisor's plan and the top-N plan with its budget.

    Attributes:
        ranking: `group_blocks`'s frame (blocks where the names reveal them, else layers).
        layers: `probe_gradients`'s frame, one row per layer.
        plan: The advisor's plan (`propose_plan`).
        baseline: "Unfreeze the top N" with the same budget (`top_n_plan`).
        num_examples: How many examples the probe used.
        seconds: How long the probe took (wall clock).
    """

    ranking: pd.DataFrame
    layers: pd.DataFrame
    plan: AdvisorPlan
    baseline: AdvisorPlan
    num_examples: int
    seconds: float


def advise(
    tree: LayerTree,
    x: Any,
    y: Any,
    budget: int,
    *,
    base_path: str | None = None,
    include_batch_norm: bool = False,
    num_batches: int = 4,
    batch_size: int = 32,
    loss: Any = None,
    seed: int = 0,
) -> UnfreezeAdvice:
    """Probes, groups, plans and sizes the top-N baseline in one call, changing nothing.

    `probe_gradients` then `group_blocks`, `propose_plan` and `top_n_plan` with the same budget;
    the arguments are theirs. The budget is checked before the probe runs.

    Args:
        tree: The model's `LayerTree`.
        x: Inputs, one row per example.
        y: Labels, one per example.
        budget: How many of the BASE's parameters may train (the head always trains and is not
            counted), a whole number >= 0.
        base_path: Path of the base model; defaults to `tree.default_base_path()`.
        include_batch_norm: Whether the plans may unfreeze BatchNormalization layers.
        num_batches: Batches the probe runs (see `probe_gradients`).
        batch_size: Examples per batch.
        loss: The probe's loss; None for sparse categorical cross-entropy.
        seed: Seed of the probe's choice of examples.

    Returns:
        An `UnfreezeAdvice`. Nothing is applied: `apply_plan(tree, advice.plan)` does that.

    Example:
    >>> advice = advise(tree, data.x, data.y, budget=10_000)
    >>> advice.plan.message(), advice.baseline.message()
    """
    budget = _check_budget(budget)
    include_batch_norm = _check_flag("include_batch_norm", include_batch_norm)
    started = time.perf_counter()
    layers = probe_gradients(
        tree,
        x,
        y,
        base_path=base_path,
        num_batches=num_batches,
        batch_size=batch_size,
        loss=loss,
        seed=seed,
    )
    seconds = time.perf_counter() - started
    ranking = group_blocks(layers)
    return UnfreezeAdvice(
        ranking=ranking,
        layers=layers,
        plan=propose_plan(ranking, budget, include_batch_norm=include_batch_norm),
        baseline=top_n_plan(
            tree, budget, layers.attrs["base_path"], include_batch_norm=include_batch_norm
        ),
        num_examples=int(layers.attrs["num_examples"]),
        seconds=seconds,
    )
