"""Instructor links: URL query parameters that preset the model, data, freeze plan and settings.

A preset link lets a whole room start from the same screen, e.g.

    ?model=mobilenet_v2_035&size=96&weights=random&data=digits_5_9&freeze=base
    &epochs=3&lr=0.001&batch=16&opt=adam&val=0.2&hide=model,data&title=Lab%201

Every parameter is optional; one that is missing keeps the app's default. An invalid one is
ignored with a notice naming it, its value and what is accepted; the rest still apply.

| name    | meaning                               | accepted values                               |
|---------|---------------------------------------|-----------------------------------------------|
| model   | base model                            | "bundled_digits_cnn" or a keras.applications  |
|         |                                       | key such as "mobilenet_v2_035", "resnet50"    |
| size    | input height = width (applications)   | the model's minimum (32 or 71) to 512         |
| weights | applications weights                  | "imagenet" or "random"                        |
| data    | bundled dataset                       | "digits_5_9", "digits_0_4", "shapes"          |
| freeze  | named freeze plan                     | "none", "base", "all", "batch_norm",          |
|         |                                       | "up_to:<layer path>", "top:<n>" (n base       |
|         |                                       | layers left trainable); see `models.plans`    |
| frozen  | explicit plan, as top-down steps      | comma-separated layer paths, applied in       |
|         |                                       | order from an all-trainable model: "path"     |
|         |                                       | freezes the layer and all inside it, "!path"  |
|         |                                       | makes them trainable again; replaces `freeze` |
| epochs  | epochs                                | 1 to 1000                                     |
| lr      | learning rate                         | a number from 1e-06 to 10                     |
| batch   | batch size                            | 1 to 65536                                    |
| opt     | optimizer                             | "adam", "adamw", "rmsprop", "sgd"             |
| val     | validation fraction                   | 0 to 0.9                                      |
| hide    | controls to hide                      | comma-separated: model, data, upload, freeze, |
|         |                                       | settings, code                                |
| title   | heading for the room                  | text, at most 120 characters                  |
| msg     | message for the room                  | text, at most 500 characters                  |

The ranges are `models.limits`'s, the same `TrainingConfig` accepts, so a link can carry the
settings of any run. The parameter "session" (the run store's session id, `models.run_store`)
is reserved and ignored here.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from models.applications import APPLICATION_ENTRIES, MAX_INPUT_SIZE
from models.datasets import BUNDLED_DATASETS
from models.export import freeze_statements
from models.limits import (
    BATCH_SIZE_RANGE,
    EPOCHS_RANGE,
    LEARNING_RATE_RANGE,
    TOP_LAYERS_RANGE,
    VALIDATION_FRACTION_RANGE,
)
from models.plans import NAMED_PLANS, FreezePlan, PlanKind
from models.run_store import SESSION_QUERY_PARAMETER
from models.template import (
    BUNDLED_MODEL_KEY,
    IMAGENET_WEIGHTS,
    RANDOM_WEIGHTS,
    WEIGHT_CHOICES,
    ModelKind,
    parse_model_key,
)
from models.training import OPTIMIZERS, TrainingConfig
from models.tree import LayerTree, format_paths
from models.validation import number_phrase, whole_number_phrase

HIDEABLE_CONTROLS: Mapping[str, str] = {
    "model": "the model picker (catalogue, size, weights)",
    "data": "the dataset picker",
    "upload": "model and data uploads",
    "freeze": "the layer tree and the bulk freezing buttons",
    "settings": "the training settings (epochs, learning rate, batch size, optimizer)",
    "code": "'Show code' and the downloads",
}
MAX_TITLE_LENGTH = 120
MAX_MESSAGE_LENGTH = 500
MAX_PATHS = 200
MAX_PATH_LENGTH = 300
RESERVED_PARAMETERS: frozenset[str] = frozenset({SESSION_QUERY_PARAMETER})
PARAMETERS: tuple[str, ...] = (
    "model",
    "size",
    "weights",
    "data",
    "freeze",
    "frozen",
    "epochs",
    "lr",
    "batch",
    "opt",
    "val",
    "hide",
    "title",
    "msg",
)
_SHOWN_VALUE_LENGTH = 60


@dataclass(frozen=True)
class Preset:
    """What an instructor link sets; None (or empty) means "keep the app's default".

    Attributes:
        model: Catalogue key: "bundled_digits_cnn" or a keras.applications key.
        input_size: Input size for a keras.applications model.
        pretrained: ImageNet weights (True) or random initialisation (False), applications.
        dataset: Bundled dataset key.
        freeze: Named plan: "none", "base", "all", "batch_norm", "up_to:<path>" or "top:<n>".
        freeze_steps: Explicit plan as top-down steps (`models.export.freeze_statements`):
            "path" freezes a layer and everything inside it, "!path" makes them trainable
            again; replaces `freeze`. `resolve_frozen_paths` turns it into frozen paths.
        epochs: Epochs.
        learning_rate: Learning rate.
        batch_size: Batch size.
        optimizer: Optimizer key of `models.training.OPTIMIZERS`.
        validation_fraction: Share of the data held out for validation.
        hidden: Controls to hide, from `HIDEABLE_CONTROLS`.
        title: Heading for the room (plain text: render it escaped).
        message: Message for the room (plain text: render it escaped).
    """

    model: str | None = None
    input_size: int | None = None
    pretrained: bool | None = None
    dataset: str | None = None
    freeze: str | None = None
    freeze_steps: tuple[str, ...] | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    validation_fraction: float | None = None
    hidden: frozenset[str] = frozenset()
    title: str = ""
    message: str = ""

    @property
    def is_empty(self) -> bool:
        """Whether the preset sets nothing (a plain link)."""
        return self == Preset()

    def hides(self, control: str) -> bool:
        """Whether a control of `HIDEABLE_CONTROLS` is hidden.

        Example:
        >>> Preset(hidden=frozenset({"model"})).hides("model")
        True
        """
        if control not in HIDEABLE_CONTROLS:
            raise ValueError(
                f"Unknown control {control!r}; expected one of {sorted(HIDEABLE_CONTROLS)}."
            )
        return control in self.hidden

    def training_config(self, defaults: TrainingConfig | None = None) -> TrainingConfig:
        """The app's training settings with the preset's values put in.

        Args:
            defaults: The settings to start from; None for `TrainingConfig()`.

        Returns:
            A `TrainingConfig`.

        Example:
        >>> Preset(epochs=5).training_config().epochs
        5
        """
        config = defaults or TrainingConfig()
        changes = {
            name: value
            for name, value in (
                ("epochs", self.epochs),
                ("learning_rate", self.learning_rate),
                ("batch_size", self.batch_size),
                ("optimizer", self.optimizer),
                ("validation_fraction", self.validation_fraction),
            )
            if value is not None
        }
        return replace(config, **changes)

    def freeze_plan(self) -> FreezePlan | None:
        """The named plan as a `FreezePlan`, or None when the preset has none.

        An explicit plan (`freeze_steps`) replaces the named one; it is applied with
        `resolve_frozen_paths` instead.

        Example:
        >>> Preset(freeze="top:3").freeze_plan().apply(workspace.tree, workspace.base_path)
        """
        if self.freeze is None or self.freeze_steps is not None:
            return None
        return FreezePlan.parse(self.freeze)

    def freeze_action(self) -> tuple[str, Any] | None:
        """The `Workspace.bulk_action(action, argument)` call for the named plan, if any.

        Returns:
            `(action, argument)`, e.g. `("freeze_base", None)`, `("freeze_up_to", path)` or
            `("unfreeze_top", 3)`; None when the preset has no named plan (see `freeze_plan`).

        Example:
        >>> Preset(freeze="top:3").freeze_action()
        ('unfreeze_top', 3)
        """
        plan = self.freeze_plan()
        return None if plan is None else (plan.action, plan.argument)


# ------------------------------------------------------------------------------ parsing
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
    notices: list[str] = []
    ignored = set(ignore)
    unknown = sorted(str(name) for name in params if name not in PARAMETERS and name not in ignored)
    for name in unknown:
        value = _single(name, params[name], [])
        notices.append(
            f"URL parameter {_plain_text(name, 40)}={_shown(value)} is not known and was "
            f"ignored. Known parameters: {', '.join(PARAMETERS)}."
        )

    def get(name: str) -> str | None:
        return _single(name, params[name], notices).strip() if name in params else None

    fields: dict[str, Any] = {}
    model = get("model")
    known_models = [BUNDLED_MODEL_KEY, *APPLICATION_ENTRIES]
    if model is not None:
        if model in known_models:
            fields["model"] = model
        else:
            notices.append(
                f"URL parameter model={_shown(model)} was ignored: expected one of "
                f"{known_models}."
            )
    entry = APPLICATION_ENTRIES.get(fields.get("model", ""))
    size = get("size")
    if size is not None:
        if entry is None:
            notices.append(
                f"URL parameter size={_shown(size)} was ignored: only keras.applications "
                "models take an input size (give a model such as model=mobilenet_v2_035)."
            )
        else:
            what = f"the input size of {entry.title}"
            fields["input_size"] = _whole(
                "size", size, entry.min_input_size, MAX_INPUT_SIZE, what, notices
            )
    weights = get("weights")
    if weights is not None:
        if entry is None:
            notices.append(
                f"URL parameter weights={_shown(weights)} was ignored: only keras.applications "
                "models have a choice of weights."
            )
        elif weights in WEIGHT_CHOICES:
            fields["pretrained"] = weights == IMAGENET_WEIGHTS
        else:
            notices.append(
                f"URL parameter weights={_shown(weights)} was ignored: expected 'imagenet' "
                "(pretrained, needs the weights file) or 'random' (random initialisation)."
            )
    data = get("data")
    if data is not None:
        if data in BUNDLED_DATASETS:
            fields["dataset"] = data
        else:
            notices.append(
                f"URL parameter data={_shown(data)} was ignored: expected one of the bundled "
                f"datasets {list(BUNDLED_DATASETS)}."
            )
    freeze = get("freeze")
    if freeze is not None:
        fields["freeze"] = _parse_freeze(freeze, notices)
    if "frozen" in params:
        fields["freeze_steps"] = _parse_frozen(params["frozen"], notices)
        if fields["freeze_steps"] is not None and fields.get("freeze") is not None:
            notices.append(
                f"URL parameters 'freeze' and 'frozen' were both given; the explicit 'frozen' "
                f"plan was used and 'freeze={_shown(fields['freeze'])}' was ignored."
            )
            fields["freeze"] = None
    for name, field_name, (low, high), what in (
        ("epochs", "epochs", EPOCHS_RANGE, "the number of epochs"),
        ("batch", "batch_size", BATCH_SIZE_RANGE, "the batch size"),
    ):
        text = get(name)
        if text is not None:
            fields[field_name] = _whole(name, text, low, high, what, notices)
    text = get("lr")
    if text is not None:
        low, high = LEARNING_RATE_RANGE
        fields["learning_rate"] = _fraction(
            "lr", text, low, high, "the learning rate", notices, open_low=False
        )
    text = get("val")
    if text is not None:
        low, high = VALIDATION_FRACTION_RANGE
        fields["validation_fraction"] = _fraction(
            "val", text, low, high, "the validation fraction", notices, open_low=False
        )
    optimizer = get("opt")
    if optimizer is not None:
        if optimizer.lower() in OPTIMIZERS:
            fields["optimizer"] = optimizer.lower()
        else:
            notices.append(
                f"URL parameter opt={_shown(optimizer)} was ignored: expected one of "
                f"{sorted(OPTIMIZERS)}."
            )
    if "hide" in params:
        items = _items(params["hide"])
        valid = {item for item in items if item in HIDEABLE_CONTROLS}
        invalid = [item for item in items if item not in HIDEABLE_CONTROLS]
        if invalid:
            notices.append(
                f"URL parameter 'hide' has unknown item(s) "
                f"{', '.join(_shown(item) for item in invalid[:5])}, which were ignored; "
                f"expected a comma-separated list of "
                f"{list(HIDEABLE_CONTROLS)}."
            )
        fields["hidden"] = frozenset(valid)
    for name, field_name, limit in (
        ("title", "title", MAX_TITLE_LENGTH),
        ("msg", "message", MAX_MESSAGE_LENGTH),
    ):
        text = get(name)
        if text is not None:
            cleaned = _plain_text(text, limit)
            if len(" ".join(text.split())) > limit:
                notices.append(
                    f"URL parameter '{name}' is longer than {limit} characters and was cut."
                )
            fields[field_name] = cleaned
    return Preset(**{key: value for key, value in fields.items() if value is not None}), notices


def _format_float(value: float) -> str:
    return repr(float(value))


def preset_query(preset: Preset) -> dict[str, str]:
    """The query parameters of a preset (the inverse of `parse_query`), for a share link.

    Only the fields the preset sets are written, in the documented order.

    Args:
        preset: The preset.

    Returns:
        `{name: value}`; `parse_query(preset_query(p))` gives back `p` and no notices.

    Example:
    >>> preset_query(Preset(model="resnet50", input_size=64, hidden=frozenset({"model"})))
    {'model': 'resnet50', 'size': '64', 'hide': 'model'}
    """
    if not isinstance(preset, Preset):
        raise TypeError(f"preset_query expects a Preset; received {type(preset).__name__}.")
    query: dict[str, str] = {}
    if preset.model is not None:
        query["model"] = preset.model
    if preset.input_size is not None:
        query["size"] = str(int(preset.input_size))
    if preset.pretrained is not None:
        query["weights"] = IMAGENET_WEIGHTS if preset.pretrained else RANDOM_WEIGHTS
    if preset.dataset is not None:
        query["data"] = preset.dataset
    if preset.freeze is not None and preset.freeze_steps is None:
        query["freeze"] = preset.freeze
    if preset.freeze_steps is not None:
        if any("," in step for step in preset.freeze_steps):
            raise ValueError(
                "A layer path of the plan contains a comma, which the 'frozen' parameter "
                "cannot carry; use a named plan (freeze=...) for this model."
            )
        query["frozen"] = ",".join(preset.freeze_steps)
    if preset.epochs is not None:
        query["epochs"] = str(int(preset.epochs))
    if preset.learning_rate is not None:
        query["lr"] = _format_float(preset.learning_rate)
    if preset.batch_size is not None:
        query["batch"] = str(int(preset.batch_size))
    if preset.optimizer is not None:
        query["opt"] = preset.optimizer
    if preset.validation_fraction is not None:
        query["val"] = _format_float(preset.validation_fraction)
    if preset.hidden:
        query["hide"] = ",".join(
            control for control in HIDEABLE_CONTROLS if control in preset.hidden
        )
    if preset.title:
        query["title"] = preset.title
    if preset.message:
        query["msg"] = preset.message
    return query


def preset_link(preset: Preset, base_url: str = "") -> str:
    """A share link: `base_url` + "?" + the preset's encoded query parameters.

    Example:
    >>> preset_link(Preset(dataset="shapes", epochs=2), "http://host:8501/")
    'http://host:8501/?data=shapes&epochs=2'
    """
    query = urllib.parse.urlencode(preset_query(preset), safe="/,:")
    return f"{base_url}?{query}" if query else base_url


def plan_steps(tree: LayerTree, frozen_paths: Iterable[str]) -> tuple[str, ...]:
    """A freeze plan as the fewest top-down steps, the compact form the `frozen` link uses.

    Args:
        tree: The model's `LayerTree`.
        frozen_paths: The plan (paths whose flag is False), e.g. `tree.frozen_paths()`.

    Returns:
        Steps: "path" freezes a layer and all inside it, "!path" makes them trainable again.

    Example:
    >>> plan_steps(workspace.tree, workspace.tree.frozen_paths())
    ('transfer_model/feature_extractor',)
    """
    return tuple(
        path if not trainable else f"!{path}"
        for path, trainable in freeze_statements(tree, frozen_paths)
    )


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


def preset_for(
    template_key: str,
    dataset_key: str,
    *,
    tree: LayerTree | None = None,
    freeze: str | None = None,
    config: TrainingConfig | None = None,
    hidden: Iterable[str] = (),
    title: str = "",
    message: str = "",
) -> tuple[Preset, list[str]]:
    """Builds the preset of the current screen, for an instructor's "share link" button.

    Args:
        template_key: `workspace.template.key`, e.g. "mobilenet_v2_035@96:random".
        dataset_key: `workspace.dataset.name`.
        tree: `workspace.tree`, to share its current freeze plan (compact steps), or None.
        freeze: A named plan instead, e.g. "base" or "up_to:<path>".
        config: The training settings to share, or None.
        hidden: Controls to hide.
        title: Heading for the room.
        message: Message for the room.

    Returns:
        `(preset, notices)`: what a link cannot carry (an uploaded model or dataset, a plan
        of more than `MAX_PATHS` steps) is left out with a notice.

    Example:
    >>> preset, notices = preset_for(workspace.template.key, workspace.dataset.name,
    ...                              tree=workspace.tree, config=TrainingConfig())
    >>> link = preset_link(preset, "http://workshop:8501/")
    """
    query: dict[str, str] = {}
    notices: list[str] = []
    try:
        key = parse_model_key(template_key)
    except ValueError:  # not a key FreezeLab makes: a link cannot carry it either
        key = None
    if key is not None and key.kind is ModelKind.BUNDLED:
        query["model"] = BUNDLED_MODEL_KEY
    elif (
        key is not None
        and key.kind is ModelKind.APPLICATION
        and key.catalogue_key in APPLICATION_ENTRIES
    ):
        query.update(model=key.catalogue_key, size=str(key.input_size), weights=key.weights)
    else:
        notices.append(
            f"The model {template_key!r} was uploaded or built from uploaded data, so a link "
            "cannot carry it; the link keeps the app's default model."
        )
    if dataset_key in BUNDLED_DATASETS:
        query["data"] = dataset_key
    else:
        notices.append(
            f"The dataset {dataset_key!r} is not bundled, so a link cannot carry it; learners "
            "start on the default dataset."
        )
    if freeze is not None:
        query["freeze"] = freeze
    elif tree is not None:
        steps = plan_steps(tree, tree.frozen_paths())
        if not steps:
            query["freeze"] = "none"
        elif len(steps) > MAX_PATHS or any("," in step for step in steps):
            notices.append(
                f"The freeze plan takes {len(steps)} steps, more than a link carries "
                f"({MAX_PATHS}) or with commas in layer names; it was left out. Use a named "
                "plan such as freeze=up_to:<path> instead."
            )
        else:
            query["frozen"] = ",".join(steps)
    extra = Preset(hidden=frozenset(hidden), title=title, message=message)
    if config is not None:
        extra = replace(
            extra,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            optimizer=config.optimizer,
            validation_fraction=config.validation_fraction,
        )
    query.update(preset_query(extra))
    preset, parse_notices = parse_query(query)
    return preset, notices + parse_notices


__all__ = [
    "HIDEABLE_CONTROLS",
    "PARAMETERS",
    "Preset",
    "parse_query",
    "plan_steps",
    "preset_for",
    "preset_link",
    "preset_query",
    "resolve_frozen_paths",
]
