"""Pitfall 6: which `trainable` flags survive saving and loading, and re-applying the plan.

A freeze plan lives in the layers' `trainable` flags. This experiment gives the lab model a
plan with a twist (the nested base frozen, its child "conv3" set back to trainable under it),
then measures four ways of getting the model back: a `.keras` file with
`keras.models.load_model`, `save_weights` + `load_weights` into a model rebuilt from code,
`keras.models.clone_model` and `Model.from_config(model.get_config())`. Each route's flags are
compared with the plan's, layer by layer, and so are the parameters Keras trains.

Then the model is rebuilt from code and its weights loaded, twice: the wrong run trains it as
loaded, the right run re-applies the saved plan first (as FreezeLab's run config does).

Example:
>>> wrong, right = run(seed=0)
>>> right.verification.all_unchanged
True
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import keras
import numpy as np

from models.pitfalls.results import FINE, PROBLEM, Measurement, Pitfall, VariantResult
from models.pitfalls.runner import (
    BASE_PATH,
    LabRun,
    accuracy_measurement,
    build_lab_model,
    largest_change,
    short_path,
    snapshot_layers,
    verify_layers,
)
from models.tree import LayerTree

PLAN_CHILD_NAME = "conv3"
EPOCHS = 2
ROUTE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "keras_file": "`.keras` + load_model",
        "load_weights": "load_weights into a model rebuilt from code",
        "clone_model": "clone_model",
        "from_config": "from_config(get_config())",
    }
)
"""The routes `measure_routes` measures, in order, with their labels in the route table."""

PITFALL = Pitfall(
    key="save_and_load",
    number=6,
    title="Which `trainable` flags survive saving and loading",
    explanation=(
        "A freeze plan is stored in the layers' `trainable` flags, so whether it survives "
        "depends on how the model comes back. A weights file (`save_weights`) holds "
        "values only: a model rebuilt from code and given `load_weights` has the flags "
        "its code sets, usually all trainable. A `.keras` file, `clone_model` and "
        "`from_config` rebuild the layers from their configs, which carry a `trainable` "
        "entry. This experiment measures each route on a nested plan (frozen base, one "
        "child set back to trainable under it) with the installed Keras, flag by flag."
    ),
    what_to_look_at=(
        "Left: the model rebuilt from code with `load_weights`, trained as loaded. Its "
        "route table shows which flags each route kept. The layers the plan froze train "
        "(their lines leave zero). Right: the same, with the saved plan re-applied after "
        "loading: those layers stay bitwise unchanged."
    ),
    fix=(
        "Keep the freeze plan next to the weights and re-apply it after every load, then "
        "check `model.trainable_weights` (FreezeLab's run config stores the plan's paths; "
        "`LayerTree.apply_frozen_paths` re-applies them)."
    ),
)


@dataclasses.dataclass(frozen=True)
class RouteOutcome:
    """What one way of getting a model back did to its freeze plan.

    Attributes:
        key: "keras_file", "load_weights", "clone_model" or "from_config".
        label: The route in words, e.g. "`.keras` + load_model".
        num_layers: Layer paths compared (the whole model, its top included).
        flags_changed: Paths whose own `trainable` flag differs from the plan's.
        training_changed: Paths whose weights Keras trains now but not under the plan, or
            the other way round (from `model.trainable_weights`).
        trainable_before: Parameters in `model.trainable_weights` under the plan.
        trainable_after: The same after the route.
    """

    key: str
    label: str
    num_layers: int
    flags_changed: tuple[str, ...]
    training_changed: tuple[str, ...]
    trainable_before: int
    trainable_after: int

    @property
    def kept_flags(self) -> bool:
        """Whether every layer's flag came back as planned."""
        return not self.flags_changed

    @property
    def kept_training(self) -> bool:
        """Whether Keras trains exactly the planned layers after the route."""
        return not self.training_changed and self.trainable_before == self.trainable_after


def apply_plan(tree: LayerTree) -> None:
    """Applies the experiment's plan: the base frozen, then its "conv3" set back to trainable.

    Example:
    >>> apply_plan(LayerTree(build_lab_model(0)))
    """
    tree.set_frozen(BASE_PATH, True)
    tree.set_frozen(f"{BASE_PATH}/{PLAN_CHILD_NAME}", False)


def _flags(tree: LayerTree) -> dict[str, bool]:
    return {path: bool(tree.layer(path).trainable) for path in tree.paths()}


def _trains(tree: LayerTree) -> dict[str, bool]:
    """Per layer holding variables of its own: whether Keras trains it (`trainable_weights`)."""
    return {
        node.path: node.effectively_trainable
        for node in tree.nodes()
        if node.own_trainable_params + node.own_non_trainable_params
    }


def _trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))


def _differences(before: dict[str, bool], after: dict[str, bool]) -> tuple[str, ...]:
    return tuple(path for path in before if after.get(path) != before[path])


def _routes(seed: int, directory: str) -> dict[str, Callable[[keras.Model], keras.Model]]:
    keras_path = os.path.join(directory, "planned.keras")
    weights_path = os.path.join(directory, "planned.weights.h5")

    def keras_file(model: keras.Model) -> keras.Model:
        model.save(keras_path)
        return keras.models.load_model(keras_path)

    def load_weights(model: keras.Model) -> keras.Model:
        model.save_weights(weights_path)
        rebuilt = build_lab_model(seed)
        rebuilt.load_weights(weights_path)
        return rebuilt

    def from_config(model: keras.Model) -> keras.Model:
        return keras.Model.from_config(model.get_config())

    return {
        "keras_file": keras_file,
        "load_weights": load_weights,
        "clone_model": keras.models.clone_model,
        "from_config": from_config,
    }


def measure_routes(seed: int, directory: str) -> tuple[RouteOutcome, ...]:
    """Measures which flags of the experiment's plan survive each route, on the lab model.

    Args:
        seed: Seed of the lab model's head (the model rebuilt from code uses it too).
        directory: A folder for the `.keras` and `.weights.h5` files.

    Returns:
        One `RouteOutcome` per route, in the order `.keras`, `load_weights`, `clone_model`,
        `from_config`.

    Example:
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     outcomes = measure_routes(0, directory)
    >>> [outcome.key for outcome in outcomes if outcome.kept_flags]
    """
    model = build_lab_model(seed)
    tree = LayerTree(model)
    apply_plan(tree)
    flags, trains = _flags(tree), _trains(tree)
    trainable_before = _trainable_params(model)
    outcomes = []
    for key, route in _routes(seed, directory).items():
        loaded = route(model)
        loaded_tree = LayerTree(loaded)
        outcomes.append(
            RouteOutcome(
                key=key,
                label=ROUTE_LABELS[key],
                num_layers=len(flags),
                flags_changed=_differences(flags, _flags(loaded_tree)),
                training_changed=_differences(trains, _trains(loaded_tree)),
                trainable_before=trainable_before,
                trainable_after=_trainable_params(loaded),
            )
        )
    return tuple(outcomes)


def _names(paths: Sequence[str], limit: int = 3) -> str:
    names = [f"'{short_path(path)}'" for path in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _join(labels: Sequence[str]) -> str:
    return ", ".join(labels) if labels else "none"


def _route_measurement(outcome: RouteOutcome) -> Measurement:
    if outcome.kept_flags:
        text = f"kept all {outcome.num_layers}"
    else:
        text = f"{len(outcome.flags_changed)} of {outcome.num_layers} changed"
    training = (
        "Keras trains the planned layers"
        if outcome.kept_training
        else f"Keras trains differently: {_names(outcome.training_changed)}"
    )
    changed = f"Changed: {_names(outcome.flags_changed)}. " if outcome.flags_changed else ""
    return Measurement(
        f"Flags after {outcome.label}",
        float(len(outcome.flags_changed)),
        text,
        f"{changed}{training}; trainable params {outcome.trainable_before:,} -> "
        f"{outcome.trainable_after:,}.",
    )


def _routes_verdict(outcomes: Sequence[RouteOutcome]) -> str:
    kept = [outcome.label for outcome in outcomes if outcome.kept_flags]
    training_only = [
        f"{outcome.label} ({_names(outcome.flags_changed)} changed)"
        for outcome in outcomes
        if not outcome.kept_flags and outcome.kept_training
    ]
    text = f"Routes that kept every flag: {_join(kept)}."
    if training_only:
        text += f" Kept what trains, not every flag: {_join(training_only)}."
    return text


def _variant(
    seed: int,
    weights_path: str,
    plan: frozenset[str],
    reapply: bool,
    outcomes: Sequence[RouteOutcome],
) -> VariantResult:
    planned_tree = LayerTree(build_lab_model(seed))
    planned_tree.apply_frozen_paths(plan)
    should_not_train = [path for path, trains in _trains(planned_tree).items() if not trains]
    planned_params = _trainable_params(planned_tree.model)
    run = LabRun(seed)  # the model rebuilt from code
    run.model.load_weights(weights_path)
    if reapply:
        run.tree.apply_frozen_paths(plan)
    flags_changed = _differences(_flags(planned_tree), _flags(run.tree))
    params = _trainable_params(run.model)
    snapshot = snapshot_layers(run.tree, should_not_train)
    history = run.train(epochs=EPOCHS)
    verification = verify_layers(snapshot)
    max_change = largest_change(snapshot)
    num_moved, num_checked = len(verification.changed_paths), verification.num_checked
    num_layers = len(planned_tree.paths())
    if num_moved:
        verdict = (
            f"{len(flags_changed)} of {num_layers} flags differ from the plan after "
            f"load_weights, and {num_moved} of {num_checked} layers the plan froze trained "
            f"(max |dW| = {max_change:.4g})."
        )
    else:
        verdict = (
            f"{len(flags_changed)} of {num_layers} flags differ from the plan; all "
            f"{num_checked} layers it froze are bitwise unchanged, and Keras trains "
            f"{params:,} params (plan: {planned_params:,})."
        )
    measurements = [
        Measurement(
            "Flags that differ from the plan",
            float(len(flags_changed)),
            f"{len(flags_changed)} of {num_layers}",
            "Layers whose own `trainable` flag differs from the saved plan's when training "
            "starts." + (f" Changed: {_names(flags_changed)}." if flags_changed else ""),
        ),
        Measurement(
            "Layers the plan froze that trained",
            float(num_moved),
            f"{num_moved} of {num_checked}",
            "Layers Keras would not train under the plan whose weights or state changed.",
        ),
        Measurement(
            "Largest change in a layer the plan froze",
            max_change,
            f"{max_change:.3g}",
            "max |W_end - W_start| over those layers; 0 means untouched.",
        ),
        Measurement(
            "Trainable params (Keras)",
            float(params),
            f"{params:,} (plan: {planned_params:,})",
            "Sum over `model.trainable_weights` when training starts.",
        ),
        accuracy_measurement(history),
    ]
    if not reapply:
        kept = sum(outcome.kept_flags for outcome in outcomes)
        measurements.append(
            Measurement(
                "Routes that kept every flag",
                float(kept),
                f"{kept} of {len(outcomes)}",
                "Of the four routes measured on the planned model (no training).",
            )
        )
        measurements.extend(_route_measurement(outcome) for outcome in outcomes)
        verdict += " " + _routes_verdict(outcomes)
    result = run.result(
        label="Right: plan re-applied after loading" if reapply else "Wrong: trusted the load",
        description=(
            "Saved the weights of the model with the plan (base frozen, "
            f"'{PLAN_CHILD_NAME}' trainable under it), rebuilt the model from code, "
            "called load_weights, "
            + (
                "re-applied the saved plan (`apply_frozen_paths`), "
                if reapply
                else "did NOT re-apply the plan, "
            )
            + f"trained {EPOCHS} epochs."
        ),
        status=FINE if not num_moved else PROBLEM,
        verdict=verdict,
        measurements=tuple(measurements),
        chart_kind="weights",
    )
    # The proof covers the layers the plan froze, whatever the loaded flags say.
    return dataclasses.replace(result, verification=verification)


def run(seed: int) -> tuple[VariantResult, ...]:
    """Runs pitfall 6: measures the four routes, then trains the reloaded model both ways.

    Args:
        seed: Seed of the head's weights, the data split and the batch order.

    Returns:
        `(wrong, right)`: "Wrong: trusted the load" (with the route table in its
        measurements) and "Right: plan re-applied after loading"; each one's
        `verification` is the bitwise check of the layers the plan froze.

    Example:
    >>> wrong, right = run(seed=0)
    >>> right.numbers["Flags that differ from the plan"]
    0.0
    """
    with tempfile.TemporaryDirectory(prefix="freezelab_pitfall_") as directory:
        outcomes = measure_routes(seed, directory)
        source = build_lab_model(seed)
        tree = LayerTree(source)
        apply_plan(tree)
        weights_path = os.path.join(directory, "planned.weights.h5")
        source.save_weights(weights_path)
        plan = tree.frozen_paths()
        wrong = _variant(seed, weights_path, plan, reapply=False, outcomes=outcomes)
        right = _variant(seed, weights_path, plan, reapply=True, outcomes=outcomes)
    return wrong, right
