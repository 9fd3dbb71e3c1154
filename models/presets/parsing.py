"""Reads an instructor link into a `Preset`, with a notice for each parameter it ignores.

`parse_query` reads the query parameters (an invalid one is ignored with a notice naming it,
its value and what is accepted); `resolve_frozen_paths`, `resolve_lora` and
`resolve_layer_rates` turn a link's explicit plan, LoRA adapters and per-layer learning rates
into those of the model in use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.applications import APPLICATION_ENTRIES, MAX_INPUT_SIZE, ApplicationEntry
from models.datasets import BUNDLED_DATASETS
from models.layer_rates import LayerRates, layer_multipliers
from models.limits import (
    BATCH_SIZE_RANGE,
    DECAY_FACTOR_RANGE,
    EPOCHS_RANGE,
    LAYERS_PER_BLOCK_RANGE,
    LEARNING_RATE_RANGE,
    LORA_ALPHA_RANGE,
    LORA_RANK_RANGE,
    MULTIPLIER_RANGE,
    TOP_LAYERS_RANGE,
    VALIDATION_FRACTION_RANGE,
)
from models.lora import LORA_TARGETS, LoraSetting, lora_targets, why_not_lora
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
from models.training import OPTIMIZERS, TrainingConfig
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
_EXAMPLES = {"lr": "0.001", "decay": "0.5"}  # a typical value, said in a notice ("0.2" else)
_RATE_PARAMETERS = ("rates", "decay", "decay_block", "decay_base")


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
            f"{number_phrase(low, high)}, e.g. {_EXAMPLES.get(name, '0.2')}."
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


def _link_path(text: str) -> bool:
    """Whether a link can carry `text` as a layer path: non-empty, printable, bounded."""
    return bool(text) and len(text) <= MAX_PATH_LENGTH and text.isprintable()


def _number(text: str, low: float, high: float) -> float | None:
    """`text` as a finite number in `[low, high]`, else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and low <= number <= high else None


def _lora_item(item: str) -> tuple[str, LoraSetting] | None:
    """One `lora` item, "<target>:<rank>" or "<target>:<rank>:<alpha>", or None.

    A target may itself hold colons: "<target>:<rank>:<alpha>" is tried first, then
    "<target>:<rank>" (a link written by `preset_query` is read back exactly).
    """
    candidates = []
    parts = item.rsplit(":", 2)
    if len(parts) == 3:
        candidates.append((parts[0], parts[1], parts[2]))
    parts = item.rsplit(":", 1)
    if len(parts) == 2:
        candidates.append((parts[0], parts[1], None))
    for target, rank_text, alpha_text in candidates:
        rank = _number(rank_text, *LORA_RANK_RANGE)
        alpha = None if alpha_text is None else _number(alpha_text, *LORA_ALPHA_RANGE)
        whole = rank is not None and rank_text.strip().isdigit()
        if _link_path(target) and whole and (alpha_text is None or alpha is not None):
            return target, LoraSetting(int(rank), alpha)
    return None


def _rate_item(item: str) -> tuple[str, float] | None:
    """One `rates` item, "<layer path>:<multiplier>", or None."""
    path, _, text = item.rpartition(":")
    multiplier = _number(text, *MULTIPLIER_RANGE)
    return (path, multiplier) if _link_path(path) and multiplier is not None else None


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


def _parse_list(
    query: _Query,
    name: str,
    parse_item: Callable[[str], Any],
    too_many: str,
    expected: str,
) -> list[Any] | None:
    """A comma-separated parameter's valid items in order; None when it is absent or too long.

    Args:
        query: The link being read (its notices collect what is ignored).
        name: The parameter, e.g. "lora".
        parse_item: Reads one item; None for an invalid one (ignored with a notice).
        too_many: What the notice says after "it names N" when the list is too long.
        expected: What the notice says is accepted for one item.
    """
    if name not in query.params:
        return None
    items = _items(query.params[name])
    if len(items) > MAX_PATHS:
        query.notices.append(
            f"URL parameter '{name}' was ignored: it names {len(items)} {too_many}"
        )
        return None
    parsed = []
    for item in items:
        value = parse_item(item)
        if value is None:
            query.notices.append(
                f"URL parameter {name}={_shown(item)} was ignored: expected {expected}"
            )
        else:
            parsed.append(value)
    return parsed


def _parse_lora(query: _Query) -> tuple[tuple[str, LoraSetting], ...] | None:
    """The `lora` parameter: its valid items in order; None when it gives none."""
    adapters = _parse_list(
        query,
        "lora",
        _lora_item,
        f"adapters, more than the {MAX_PATHS} a link carries. Use a recipe such as lora=dense:4.",
        f"'<layer path>:<rank>' or '<layer path>:<rank>:<alpha>', or a recipe of "
        f"{list(LORA_TARGETS)} in place of the path (e.g. 'dense:4'), with the rank "
        f"{whole_number_phrase(*LORA_RANK_RANGE)} and alpha {number_phrase(*LORA_ALPHA_RANGE)}.",
    )
    return tuple(adapters or ()) or None


def _parse_multipliers(query: _Query) -> tuple[tuple[str, float], ...] | None:
    """The `rates` parameter: its valid "<layer path>:<multiplier>" items in order."""
    pairs = _parse_list(
        query,
        "rates",
        _rate_item,
        f"layers, more than the {MAX_PATHS} a link carries. Give the multiplier to a parent "
        "layer instead.",
        f"'<layer path>:<multiplier>' with the multiplier {number_phrase(*MULTIPLIER_RANGE)} "
        "(0 stops the layer, 1 is the base rate), e.g. 'transfer_model/feature_extractor:0.1'.",
    )
    return None if pairs is None else tuple(pairs)


def _parse_layer_rates(query: _Query, learning_rate: float | None) -> LayerRates | None:
    """The `rates`, `decay`, `decay_block` and `decay_base` parameters as one `LayerRates`."""
    if not any(name in query.params for name in _RATE_PARAMETERS):
        return None
    arguments: dict[str, Any] = {"multipliers": _parse_multipliers(query) or ()}
    text = query.get("decay")
    if text is not None:
        what = "the layer-wise decay factor"
        factor = _fraction("decay", text, *DECAY_FACTOR_RANGE, what, query.notices, open_low=False)
        arguments["decay_factor"] = factor
    text = query.get("decay_block")
    if text is not None:
        what = "the layers per decay block"
        size = _whole("decay_block", text, *LAYERS_PER_BLOCK_RANGE, what, query.notices)
        if size is not None:
            arguments["layers_per_block"] = size
    text = query.get("decay_base")
    if text is not None and _link_path(text):
        arguments["base_path"] = text
    elif text is not None:
        query.notices.append(
            f"URL parameter decay_base={_shown(text)} was ignored: expected the path of the "
            f"nested model the decay runs over, of at most {MAX_PATH_LENGTH} printable "
            "characters, e.g. 'transfer_model/feature_extractor'."
        )
    try:
        rates = LayerRates(**arguments)
        if learning_rate is not None:
            TrainingConfig(learning_rate=learning_rate, layer_rates=rates)
    except ValueError as error:
        query.notices.append(f"URL parameters {', '.join(_RATE_PARAMETERS)} were ignored: {error}")
        return None
    return None if rates == LayerRates() else rates  # nothing valid: the app's default


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
    fields["lora"] = _parse_lora(query)
    fields.update(_parse_settings(query))
    fields["layer_rates"] = _parse_layer_rates(query, fields.get("learning_rate"))
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


def resolve_lora(
    preset: Preset, tree: LayerTree, base_path: str | None = None
) -> tuple[dict[str, LoraSetting] | None, list[str]]:
    """The LoRA adapters of a preset, as the adapters of the model in use.

    Applies the items in order, a later one winning for a layer named twice: a recipe of
    `models.lora.LORA_TARGETS` puts its setting on every layer of the base it names
    (`models.lora.lora_targets`), a layer path on that layer. Layers the model does not have
    or Keras cannot adapt are skipped with a notice.

    Args:
        preset: The preset.
        tree: The `LayerTree` of the user's model (after the preset's model and data).
        base_path: The path of the base the recipes run on; None for
            `tree.default_base_path()`.

    Returns:
        `(adapters, notices)`: path -> `LoraSetting` (for `Workspace.set_lora`), or None when
        the preset sets no adapters.

    Example:
    >>> adapters, notices = resolve_lora(preset, workspace.tree, workspace.base_path)
    >>> if adapters is not None: workspace.set_lora(adapters)
    """
    if preset.lora is None:
        return None, []
    base = tree.default_base_path() if base_path is None else base_path
    adapters: dict[str, LoraSetting] = {}
    missing: list[str] = []
    notices: list[str] = []
    for target, setting in preset.lora:
        if target in LORA_TARGETS:
            layers = lora_targets(tree.layer(base), target)
            adapters.update({tree.path_of(layer): setting for layer in layers})
            if not layers:
                notices.append(
                    f"The link's LoRA recipe {target!r} ({LORA_TARGETS[target]}) names no "
                    "layer of this model's base; it was skipped."
                )
        elif target not in tree:
            missing.append(target)
        elif (reason := why_not_lora(tree.layer(target))) is not None:
            notices.append(f"The link's LoRA adapter on '{target}' was skipped: {reason}")
        else:
            adapters[tree.canonical_path(target)] = setting
    if missing:
        notices.insert(
            0,
            f"The link puts LoRA adapters on {len(missing)} layer(s) the current model does "
            f"not have, which were skipped: {format_paths(missing)}.",
        )
    return adapters, notices


def resolve_layer_rates(preset: Preset, tree: LayerTree) -> tuple[LayerRates | None, list[str]]:
    """The per-layer learning rates of a preset, if they fit the model in use.

    Args:
        preset: The preset.
        tree: The `LayerTree` of the user's model (after the preset's model and data).

    Returns:
        `(rates, notices)`: the preset's `layer_rates`, or None (with a notice saying why)
        when they name a layer or base the model does not have; None without a notice when
        the preset has none.

    Example:
    >>> rates, notices = resolve_layer_rates(preset, workspace.tree)
    """
    if preset.layer_rates is None:
        return None, []
    try:
        layer_multipliers(preset.layer_rates, tree)
    except ValueError as error:
        return None, [
            f"The link's per-layer learning rates do not fit the current model and were left "
            f"out (every layer trains at the base rate): {error}"
        ]
    return preset.layer_rates, []


__all__ = ["parse_query", "resolve_frozen_paths", "resolve_layer_rates", "resolve_lora"]
