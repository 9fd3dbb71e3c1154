"""Reads an instructor link into a `Preset`, with a notice for each parameter it ignores.

`parse_query` reads the query parameters (an invalid one is ignored with a notice naming it,
its value and what is accepted) and `resolve_frozen_paths` turns a link's explicit plan into
the frozen paths of the model in use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.applications import APPLICATION_ENTRIES, MAX_INPUT_SIZE, ApplicationEntry
from models.datasets import BUNDLED_DATASETS
from models.limits import (
    BATCH_SIZE_RANGE,
    EPOCHS_RANGE,
    LEARNING_RATE_RANGE,
    TOP_LAYERS_RANGE,
    VALIDATION_FRACTION_RANGE,
)
from models.plans import NAMED_PLANS, FreezePlan, PlanKind
from models.presets.preset import (
    HIDEABLE_CONTROLS,
    MAX_MESSAGE_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PATHS,
    MAX_TITLE_LENGTH,
    PARAMETERS,
    RESERVED_PARAMETERS,
    Preset,
)
from models.template import BUNDLED_MODEL_KEYS, IMAGENET_WEIGHTS, WEIGHT_CHOICES
from models.training import OPTIMIZERS
from models.tree import LayerTree, format_paths
from models.validation import number_phrase, whole_number_phrase

_SHOWN_VALUE_LENGTH = 60
# (parameter, Preset field, accepted range, what it is), in the order they are read.
_WHOLE_SETTINGS = (
    ("epochs", "epochs", EPOCHS_RANGE, "the number of epochs"),
    ("batch", "batch_size", BATCH_SIZE_RANGE, "the batch size"),
)
_FRACTION_SETTINGS = (
    ("lr", "learning_rate", LEARNING_RATE_RANGE, "the learning rate"),
    ("val", "validation_fraction", VALIDATION_FRACTION_RANGE, "the validation fraction"),
)
_TEXTS = (("title", "title", MAX_TITLE_LENGTH), ("msg", "message", MAX_MESSAGE_LENGTH))


def _shown(value: str) -> str:
    text = value if len(value) <= _SHOWN_VALUE_LENGTH else value[: _SHOWN_VALUE_LENGTH - 3] + "..."
    return repr(text)


def _plain_text(value: str, limit: int) -> str:
    cleaned = "".join(char if char.isprintable() else " " for char in value)
    return " ".join(cleaned.split())[:limit]


def _single(name: str, value: str | list[str], notices: list[str]) -> str:
    if isinstance(value, str):
        return value
    values = [str(item) for item in value]
    if not values:
        return ""
    if len(values) > 1:
        notices.append(
            f"URL parameter '{name}' was given {len(values)} times; the last value "
            f"{_shown(values[-1])} was used."
        )
    return values[-1]


def _items(value: str | list[str]) -> list[str]:
    values = [value] if isinstance(value, str) else [str(item) for item in value]
    return [item.strip() for text in values for item in text.split(",") if item.strip()]


def _whole(name: str, text: str, low: int, high: int, what: str, notices: list[str]) -> int | None:
    try:
        number = int(text.strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        notices.append(
            f"URL parameter {name}={_shown(text)} was ignored: {what} must be "
            f"{whole_number_phrase(low, high)}."
        )
        return None
    return number


def _fraction(
    name: str, text: str, low: float, high: float, what: str, notices: list[str], *, open_low: bool
) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        number = math.nan
    inside = (low < number if open_low else low <= number) and number <= high
    if not math.isfinite(number) or not inside:
        notices.append(
            f"URL parameter {name}={_shown(text)} was ignored: {what} must be "
            f"{number_phrase(low, high)}, e.g. {'0.001' if name == 'lr' else '0.2'}."
        )
        return None
    return number


def _link_plan(text: str) -> FreezePlan | None:
    """The plan of a link's `freeze` text, or None: not "keep", a path a link can carry."""
    try:
        plan = FreezePlan.parse(text)
    except ValueError:
        return None
    if plan.kind is PlanKind.KEEP:
        return None
    if plan.kind is PlanKind.UP_TO:
        path = str(plan.argument)
        if len(path) > MAX_PATH_LENGTH or not path.isprintable():
            return None
    return plan


def _parse_freeze(text: str, notices: list[str]) -> str | None:
    plan = _link_plan(text)
    if plan is not None:
        return plan.text
    notices.append(
        f"URL parameter freeze={_shown(text)} was ignored: expected one of {list(NAMED_PLANS)}, "
        f"'up_to:<layer path>' (e.g. up_to:transfer_model/feature_extractor/conv2) or "
        f"'top:<n>' with n from {TOP_LAYERS_RANGE[0]} to {TOP_LAYERS_RANGE[1]}."
    )
    return None


def _parse_frozen(value: str | list[str], notices: list[str]) -> tuple[str, ...] | None:
    steps = _items(value)
    bad = [
        step
        for step in steps
        if not step.removeprefix("!") or len(step) > MAX_PATH_LENGTH or not step.isprintable()
    ]
    if bad or len(steps) > MAX_PATHS:
        notices.append(
            f"URL parameter 'frozen' was ignored: expected at most {MAX_PATHS} comma-separated "
            f"layer paths (each optionally prefixed with '!' to make it trainable again) of at "
            f"most {MAX_PATH_LENGTH} printable characters; received {len(steps)} item(s)"
            f"{f', e.g. {_shown(bad[0])}' if bad else ''}."
        )
        return None
    return tuple(steps)


@dataclass(frozen=True)
class _Query:
    """A link's parameters being read, and the notices the reading gives, in order."""

    params: Mapping[str, str | list[str]]
    notices: list[str]

    def get(self, name: str) -> str | None:
        """The parameter's last value, stripped; None when the link does not give it."""
        if name not in self.params:
            return None
        return _single(name, self.params[name], self.notices).strip()


def _unknown_parameter_notices(
    params: Mapping[str, str | list[str]], ignored: set[str]
) -> list[str]:
    """One notice for each parameter that is neither known nor ignored, sorted by name."""
    unknown = sorted(str(name) for name in params if name not in PARAMETERS and name not in ignored)
    notices = []
    for name in unknown:
        value = _single(name, params[name], [])
        notices.append(
            f"URL parameter {_plain_text(name, 40)}={_shown(value)} is not known and was "
            f"ignored. Known parameters: {', '.join(PARAMETERS)}."
        )
    return notices


def _parse_model(query: _Query) -> str | None:
    """The `model` parameter: the bundled model's key or a keras.applications key."""
    model = query.get("model")
    if model is None:
        return None
    known_models = [*BUNDLED_MODEL_KEYS, *APPLICATION_ENTRIES]
    if model in known_models:
        return model
    query.notices.append(
        f"URL parameter model={_shown(model)} was ignored: expected one of {known_models}."
    )
    return None


def _parse_size(query: _Query, entry: ApplicationEntry | None) -> int | None:
    """The `size` parameter: an input size within the keras.applications model's range."""
    size = query.get("size")
    if size is None:
        return None
    if entry is None:
        query.notices.append(
            f"URL parameter size={_shown(size)} was ignored: only keras.applications "
            "models take an input size (give a model such as model=mobilenet_v2_035)."
        )
        return None
    what = f"the input size of {entry.title}"
    return _whole("size", size, entry.min_input_size, MAX_INPUT_SIZE, what, query.notices)


def _parse_weights(query: _Query, entry: ApplicationEntry | None) -> bool | None:
    """The `weights` parameter of a keras.applications model: True for ImageNet weights."""
    weights = query.get("weights")
    if weights is None:
        return None
    if entry is None:
        query.notices.append(
            f"URL parameter weights={_shown(weights)} was ignored: only keras.applications "
            "models have a choice of weights."
        )
        return None
    if weights in WEIGHT_CHOICES:
        return weights == IMAGENET_WEIGHTS
    query.notices.append(
        f"URL parameter weights={_shown(weights)} was ignored: expected 'imagenet' "
        "(pretrained, needs the weights file) or 'random' (random initialisation)."
    )
    return None


def _parse_data(query: _Query) -> str | None:
    """The `data` parameter: a bundled dataset key."""
    data = query.get("data")
    if data is None:
        return None
    if data in BUNDLED_DATASETS:
        return data
    query.notices.append(
        f"URL parameter data={_shown(data)} was ignored: expected one of the bundled "
        f"datasets {list(BUNDLED_DATASETS)}."
    )
    return None


def _parse_plan(query: _Query) -> tuple[str | None, tuple[str, ...] | None]:
    """The `freeze` and `frozen` parameters: `(named plan, steps)`; valid steps replace the name."""
    text = query.get("freeze")
    freeze = None if text is None else _parse_freeze(text, query.notices)
    if "frozen" not in query.params:
        return freeze, None
    steps = _parse_frozen(query.params["frozen"], query.notices)
    if steps is not None and freeze is not None:
        query.notices.append(
            f"URL parameters 'freeze' and 'frozen' were both given; the explicit 'frozen' "
            f"plan was used and 'freeze={_shown(freeze)}' was ignored."
        )
        freeze = None
    return freeze, steps


def _parse_optimizer(query: _Query) -> str | None:
    """The `opt` parameter: an optimizer key of `OPTIMIZERS`, in any case."""
    optimizer = query.get("opt")
    if optimizer is None:
        return None
    if optimizer.lower() in OPTIMIZERS:
        return optimizer.lower()
    query.notices.append(
        f"URL parameter opt={_shown(optimizer)} was ignored: expected one of {sorted(OPTIMIZERS)}."
    )
    return None


def _parse_settings(query: _Query) -> dict[str, Any]:
    """The training settings: epochs, batch size, learning rate, validation fraction, optimizer."""
    fields: dict[str, Any] = {}
    for name, field_name, (low, high), what in _WHOLE_SETTINGS:
        text = query.get(name)
        if text is not None:
            fields[field_name] = _whole(name, text, low, high, what, query.notices)
    for name, field_name, (low, high), what in _FRACTION_SETTINGS:
        text = query.get(name)
        if text is not None:
            fields[field_name] = _fraction(
                name, text, low, high, what, query.notices, open_low=False
            )
    fields["optimizer"] = _parse_optimizer(query)
    return fields


def _parse_hidden(query: _Query) -> frozenset[str] | None:
    """The `hide` parameter: the known controls of its comma-separated list."""
    if "hide" not in query.params:
        return None
    items = _items(query.params["hide"])
    invalid = [item for item in items if item not in HIDEABLE_CONTROLS]
    if invalid:
        query.notices.append(
            f"URL parameter 'hide' has unknown item(s) "
            f"{', '.join(_shown(item) for item in invalid[:5])}, which were ignored; "
            f"expected a comma-separated list of "
            f"{list(HIDEABLE_CONTROLS)}."
        )
    return frozenset(item for item in items if item in HIDEABLE_CONTROLS)


def _parse_texts(query: _Query) -> dict[str, str]:
    """The `title` and `msg` parameters as plain one-line text, cut at their limits."""
    fields: dict[str, str] = {}
    for name, field_name, limit in _TEXTS:
        text = query.get(name)
        if text is None:
            continue
        if len(" ".join(text.split())) > limit:
            query.notices.append(
                f"URL parameter '{name}' is longer than {limit} characters and was cut."
            )
        fields[field_name] = _plain_text(text, limit)
    return fields


def parse_query(
    params: Mapping[str, str | list[str]], *, ignore: Iterable[str] = RESERVED_PARAMETERS
) -> tuple[Preset, list[str]]:
    """Reads an instructor link's query parameters into a `Preset`.

    Each invalid parameter is ignored (its field keeps the default) with a notice that names
    it, its value and what is accepted; unknown parameters are reported the same way.

    Args:
        params: Query parameters, e.g. `{k: st.query_params.get_all(k) for k in
            st.query_params}` or a plain `{name: value}` dict.
        ignore: Parameter names that belong to something else (the session id).

    Returns:
        `(preset, notices)`.

    Example:
    >>> preset, notices = parse_query({"model": "mobilenet_v2_035", "size": "96",
    ...                                "freeze": "base", "epochs": "x"})
    >>> preset.input_size, preset.epochs, len(notices)
    (96, None, 1)
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"parse_query expects a mapping of parameter names to values (st.query_params); "
            f"received {type(params).__name__}."
        )
    query = _Query(params, _unknown_parameter_notices(params, set(ignore)))
    fields: dict[str, Any] = {"model": _parse_model(query)}
    entry = APPLICATION_ENTRIES.get(fields["model"] or "")
    fields["input_size"] = _parse_size(query, entry)
    fields["pretrained"] = _parse_weights(query, entry)
    fields["dataset"] = _parse_data(query)
    fields["freeze"], fields["freeze_steps"] = _parse_plan(query)
    fields.update(_parse_settings(query))
    fields["hidden"] = _parse_hidden(query)
    fields.update(_parse_texts(query))
    preset = Preset(**{key: value for key, value in fields.items() if value is not None})
    return preset, query.notices


def resolve_frozen_paths(
    preset: Preset, tree: LayerTree
) -> tuple[frozenset[str] | None, list[str]]:
    """The explicit plan of a preset, as the frozen paths of the model in use.

    Applies the steps in order, from an all-trainable model, each to a layer and everything
    inside it; steps naming layers the model does not have are skipped with a notice.

    Args:
        preset: The preset.
        tree: The `LayerTree` of the user's model (after the preset's model and data).

    Returns:
        `(plan, notices)`: None when the preset has no explicit plan.

    Example:
    >>> plan, notices = resolve_frozen_paths(preset, workspace.tree)
    >>> if plan is not None: workspace.apply_plan(plan)
    """
    if preset.freeze_steps is None:
        return None, []
    existing = set(tree.paths())
    frozen: set[str] = set()
    missing: list[str] = []
    for step in preset.freeze_steps:
        trainable = step.startswith("!")
        path = step.removeprefix("!")
        if path not in existing:
            missing.append(path)
            continue
        subtree = {path, *tree.descendants(path)}
        frozen = frozen - subtree if trainable else frozen | subtree
    notices = []
    if missing:
        notices.append(
            f"The link's freeze plan names {len(missing)} layer(s) the current model does not "
            f"have, which were skipped: {format_paths(missing)}."
        )
    return frozenset(frozen), notices


__all__ = ["parse_query", "resolve_frozen_paths"]
