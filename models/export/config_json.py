"""The run config JSON: write a run's description, read one back strictly, turn it into a plan.

Format version policy: `format_version` changes only when a key changes its meaning, so that
a reader never misreads a file. Keys added later are optional and written only when they say
something: "lora_adapters" (layer path -> {"rank", "alpha"}) appears only for a model with
LoRA adapters and "training"."layer_rates" only with per-layer learning rates. A config
without them is byte for byte what earlier FreezeLabs wrote and still reads everywhere as
format_version 1; one with them is refused by an earlier FreezeLab with a message naming the
unknown key, never misread. A config without "lora_adapters" describes a model without
adapters (there were none before the key existed).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import keras

from models.export.plan_code import restrict_plan
from models.layer_rates import layer_multipliers
from models.limits import MAX_LAYER_PATH_LENGTH
from models.lora import LoraSetting, why_not_lora
from models.template import ModelKey, ModelTemplate, parse_model_key
from models.training import TrainingConfig
from models.tree import LayerTree, ParameterCounts, format_paths

FREEZELAB_VERSION = "0.1.0"
RUN_CONFIG_FORMAT = "freezelab-run-config"
RUN_CONFIG_FORMAT_VERSION = 1
MAX_RUN_CONFIG_BYTES = 2 * 1024 * 1024
MAX_CONFIG_PATHS = 100_000
MAX_PATH_LENGTH = MAX_LAYER_PATH_LENGTH
LORA_ADAPTERS_KEY = "lora_adapters"
_TOP_LEVEL_KEYS = (
    "format",
    "format_version",
    "freezelab_version",
    "keras_version",
    "created_at",
    "run_id",
    "model",
    "dataset",
    "frozen_paths",
    "training",
    "counts",
    LORA_ADAPTERS_KEY,  # optional: only a model with LoRA adapters has it
)
_LORA_KEYS = ("rank", "alpha")


@dataclass(frozen=True)
class RunConfig:
    """A run's description read back from its JSON (see `run_config`).

    Attributes:
        freezelab_version: The FreezeLab version that wrote it.
        keras_version: The Keras version that wrote it.
        created_at: When it was written (ISO 8601, UTC).
        run_id: The run's number in its session, or None for a plan without a run.
        template_key: The model's template key, e.g. "mobilenet_v2_035@96:random".
        template_title: The model's title.
        pretrained: Whether the base held learned weights.
        dataset_key: The dataset's key, e.g. "digits_5_9".
        dataset_title: The dataset's title.
        frozen_paths: The freeze plan, sorted.
        training: The training settings (per-layer learning rates included).
        counts: Trainable / non-trainable parameters with the plan, or None.
        lora_adapters: The LoRA adapters, layer path -> `LoraSetting` (empty: none).
    """

    freezelab_version: str
    keras_version: str
    created_at: str
    run_id: int | None
    template_key: str
    template_title: str
    pretrained: bool
    dataset_key: str
    dataset_title: str
    frozen_paths: tuple[str, ...]
    training: TrainingConfig
    counts: ParameterCounts | None
    lora_adapters: dict[str, LoraSetting] = field(default_factory=dict)

    @property
    def model_key(self) -> ModelKey | None:
        """The template key read by `parse_model_key`, or None when it is no model key.

        A run config is a file anyone can edit, so its key may be any string.
        """
        try:
            return parse_model_key(self.template_key)
        except ValueError:
            return None

    @property
    def catalogue_key(self) -> str | None:
        """The catalogue key of the model ("resnet50@96:imagenet" -> "resnet50").

        None for an uploaded model, a Dense base, or a key that is no model key.
        """
        key = self.model_key
        return key.catalogue_key if key is not None else None

    @property
    def input_size(self) -> int | None:
        """The keras.applications input size from the template key, or None."""
        key = self.model_key
        return key.input_size if key is not None else None


# ------------------------------------------------------------------------------ write
def run_config(
    template: ModelTemplate,
    dataset_key: str,
    dataset_title: str,
    frozen_paths: Iterable[str],
    config: TrainingConfig,
    counts: ParameterCounts | None = None,
    *,
    run_id: int | None = None,
    created_at: datetime.datetime | None = None,
    adapters: Mapping[str, LoraSetting] | None = None,
) -> dict[str, Any]:
    """Describes a run (or the current plan) as a JSON-ready dict.

    Args:
        template: The model's template (`workspace.template`).
        dataset_key: The dataset's key (`workspace.dataset.name`).
        dataset_title: The dataset's title.
        frozen_paths: The freeze plan (`run.frozen_paths` or `tree.frozen_paths()`).
        config: The training settings (`run.config`).
        counts: Parameter counts with the plan (`run.counts`), or None.
        run_id: The run's number, or None for a plan that has not run.
        created_at: When; None for now (UTC).
        adapters: The model's LoRA adapters, layer path -> `LoraSetting`
            (`workspace.lora_plan()` or `run.adapters`); None or empty for none.

    Returns:
        A dict with "format", "format_version", "freezelab_version", "keras_version",
        "created_at", "run_id", "model" {key, title, pretrained}, "dataset" {key, title},
        "frozen_paths" (sorted list), "training" (TrainingConfig fields, "layer_rates" only
        when set) and "counts" {trainable, non_trainable} or None; with adapters also
        "lora_adapters" {path: {rank, alpha}} (sorted by path).

    Example:
    >>> data = run_config(workspace.template, "digits_5_9", "Digits 5-9",
    ...                   run.frozen_paths, run.config, run.counts, run_id=run.run_id)
    >>> parse_run_config(run_config_bytes(data)).training == run.config
    True
    """
    if not isinstance(template, ModelTemplate):
        raise TypeError(f"template must be a ModelTemplate; received {type(template).__name__}.")
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig; received {type(config).__name__}.")
    if isinstance(frozen_paths, str):
        raise TypeError(
            f"frozen_paths must be a collection of paths; received the string {frozen_paths!r}."
        )
    lora = _lora_data(adapters)
    moment = created_at or datetime.datetime.now(datetime.UTC)
    data = {
        "format": RUN_CONFIG_FORMAT,
        "format_version": RUN_CONFIG_FORMAT_VERSION,
        "freezelab_version": FREEZELAB_VERSION,
        "keras_version": keras.__version__,
        "created_at": moment.isoformat(timespec="seconds"),
        "run_id": None if run_id is None else int(run_id),
        "model": {
            "key": template.key,
            "title": template.title,
            "pretrained": bool(template.pretrained),
        },
        "dataset": {"key": str(dataset_key), "title": str(dataset_title)},
        "frozen_paths": sorted(str(path) for path in frozen_paths),
        "training": config.to_dict(),
        "counts": None
        if counts is None
        else {"trainable": int(counts.trainable), "non_trainable": int(counts.non_trainable)},
    }
    if lora:
        data[LORA_ADAPTERS_KEY] = lora
    return data


def _lora_data(adapters: Mapping[str, LoraSetting] | None) -> dict[str, dict[str, Any]]:
    """The adapters as JSON-ready data, sorted by path; refuses what is not LoraSetting."""
    if adapters is None:
        return {}
    if not isinstance(adapters, Mapping):
        raise TypeError(
            "adapters must map layer paths to LoraSetting (workspace.lora_plan()); received "
            f"{type(adapters).__name__}."
        )
    data = {}
    for path in sorted(adapters):
        setting = adapters[path]
        if not isinstance(setting, LoraSetting):
            raise TypeError(
                f"adapters[{path!r}] must be a LoraSetting; received {type(setting).__name__}."
            )
        data[str(path)] = setting.to_dict()
    return data


def run_config_bytes(config: Mapping[str, Any]) -> bytes:
    """Serialises a `run_config` dict as indented UTF-8 JSON, for a download button.

    Example:
    >>> run_config_bytes(run_config(...))[:1]
    b'{'
    """
    return (json.dumps(dict(config), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------- read
def parse_run_config(data: bytes | str) -> RunConfig:
    """Reads a run config JSON (as written by `run_config_bytes`) strictly.

    Args:
        data: The uploaded file's bytes (UTF-8 JSON) or text.

    Returns:
        A `RunConfig`.

    Raises:
        TypeError: When `data` is neither bytes nor text.
        ValueError: For a file that is too large, not UTF-8, not JSON, not a FreezeLab run
            config, has unknown keys, values of the wrong type, invalid training settings
            or invalid LoRA adapters; the message names the key, what was received and what
            is expected. A config without "lora_adapters" (or per-layer rates) reads as one
            without adapters (or rates).

    Example:
    >>> parse_run_config(run_config_bytes(run_config(...))).frozen_paths
    ('transfer_model/feature_extractor',)
    """
    document = _json_object(data)
    _check_format(document)
    _check_keys(document, _TOP_LEVEL_KEYS, "the top level")
    run_id = _require(document, "run_id", (int, type(None)), "")
    model = _require(document, "model", dict, "")
    _check_keys(model, ("key", "title", "pretrained"), "'model'")
    dataset = _require(document, "dataset", dict, "")
    _check_keys(dataset, ("key", "title"), "'dataset'")
    paths = _frozen_paths(document)
    training = _training(document)
    counts = _counts(document)
    adapters = _lora_adapters(document)
    return RunConfig(
        freezelab_version=_require(document, "freezelab_version", str, ""),
        keras_version=_require(document, "keras_version", str, ""),
        created_at=_require(document, "created_at", str, ""),
        run_id=run_id,
        template_key=_require(model, "key", str, "model."),
        template_title=_require(model, "title", str, "model."),
        pretrained=_require(model, "pretrained", bool, "model."),
        dataset_key=_require(dataset, "key", str, "dataset."),
        dataset_title=_require(dataset, "title", str, "dataset."),
        frozen_paths=tuple(sorted(set(paths))),
        training=training,
        counts=counts,
        lora_adapters=adapters,
    )


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _json_object(data: bytes | str) -> dict[str, Any]:
    """The file's JSON object, after the checks of size, encoding and syntax."""
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes | str):
        raise TypeError(
            f"parse_run_config expects the file's bytes or text; received {type(data).__name__}."
        )
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > MAX_RUN_CONFIG_BYTES:
        raise ValueError(
            f"The run config is {size:,} bytes; the limit is {MAX_RUN_CONFIG_BYTES:,}. Upload "
            "the JSON file FreezeLab wrote (a few kilobytes)."
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"The run config is not UTF-8 text ({error}); upload the .json file FreezeLab "
                "wrote, not a model or an image."
            ) from None
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ValueError(
            f"The run config is not valid JSON ({error}). Upload the .json file FreezeLab wrote "
            "with 'Download run config'."
        ) from None
    if not isinstance(document, dict):
        raise ValueError(
            f"The run config must be a JSON object {{...}}; received a JSON "
            f"{_type_name(document)}. Upload the .json file FreezeLab wrote."
        )
    return document


def _check_format(document: Mapping[str, Any]) -> None:
    """Refuses JSON that is not a FreezeLab run config of the version this code reads."""
    if document.get("format") != RUN_CONFIG_FORMAT:
        raise ValueError(
            f"This JSON is not a FreezeLab run config: its 'format' is "
            f"{document.get('format')!r:.80}, expected {RUN_CONFIG_FORMAT!r}."
        )
    version = _require(document, "format_version", int, "")
    if version != RUN_CONFIG_FORMAT_VERSION:
        raise ValueError(
            f"The run config has format_version {version}; this FreezeLab reads version "
            f"{RUN_CONFIG_FORMAT_VERSION}. Export it again from this FreezeLab."
        )


def _require(data: Mapping[str, Any], key: str, kinds: type | tuple, where: str) -> Any:
    """`data[key]`, refused when it is missing or not of one of `kinds`."""
    if key not in data:
        raise ValueError(f"The run config has no {where}{key!r}; a FreezeLab run config has it.")
    value = data[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    wrong_bool = isinstance(value, bool) and bool not in allowed  # JSON true is not a number
    if wrong_bool or not isinstance(value, allowed):
        expected = " or ".join(kind.__name__ for kind in allowed)
        raise ValueError(
            f"The run config's {where}{key!r} must be {expected.replace('NoneType', 'null')}; "
            f"received {_type_name(value)} {value!r:.80}."
        )
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuses keys that a FreezeLab run config does not have at this place."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"The run config has unknown key(s) {unknown} in {where}; expected only "
            f"{sorted(allowed)}. Was it written by another tool or edited by hand?"
        )


def _frozen_paths(document: Mapping[str, Any]) -> list[str]:
    """The list of frozen layer paths, each a bounded non-empty string."""
    paths = _require(document, "frozen_paths", list, "")
    if len(paths) > MAX_CONFIG_PATHS:
        raise ValueError(
            f"The run config lists {len(paths):,} frozen paths; at most {MAX_CONFIG_PATHS:,} "
            "are accepted."
        )
    for index, path in enumerate(paths):
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
            raise ValueError(
                f"frozen_paths[{index}] must be a non-empty layer path of at most "
                f"{MAX_PATH_LENGTH} characters such as 'transfer_model/feature_extractor'; "
                f"received {_type_name(path)} {path!r:.80}."
            )
    return paths


def _training(document: Mapping[str, Any]) -> TrainingConfig:
    """The training settings, checked by `TrainingConfig` itself."""
    training = _require(document, "training", dict, "")
    field_names = [entry.name for entry in fields(TrainingConfig)]
    _check_keys(training, field_names, "'training'")
    try:
        return TrainingConfig(**training)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The run config's training settings are invalid: {error}") from None


def _counts(document: Mapping[str, Any]) -> ParameterCounts | None:
    """The parameter counts with the plan, or None when the config has none."""
    counts_data = _require(document, "counts", (dict, type(None)), "")
    if counts_data is None:
        return None
    _check_keys(counts_data, ("trainable", "non_trainable"), "'counts'")
    trainable = _require(counts_data, "trainable", int, "counts.")
    non_trainable = _require(counts_data, "non_trainable", int, "counts.")
    if trainable < 0 or non_trainable < 0:
        raise ValueError(
            f"The run config's counts must be >= 0; received trainable={trainable}, "
            f"non_trainable={non_trainable}."
        )
    return ParameterCounts(trainable, non_trainable)


def _lora_adapters(document: Mapping[str, Any]) -> dict[str, LoraSetting]:
    """The LoRA adapters, path -> `LoraSetting`; empty when the config has none."""
    if LORA_ADAPTERS_KEY not in document:
        return {}
    adapters = _require(document, LORA_ADAPTERS_KEY, dict, "")
    if len(adapters) > MAX_CONFIG_PATHS:
        raise ValueError(
            f"The run config lists {len(adapters):,} LoRA adapters; at most "
            f"{MAX_CONFIG_PATHS:,} are accepted."
        )
    settings = {}
    for path, data in adapters.items():
        where = f"{LORA_ADAPTERS_KEY}[{path!r:.80}]"
        if not path or len(path) > MAX_PATH_LENGTH:
            raise ValueError(
                f"Each key of '{LORA_ADAPTERS_KEY}' must be a non-empty layer path of at most "
                f"{MAX_PATH_LENGTH} characters; received {path!r:.80}."
            )
        if not isinstance(data, dict):
            raise ValueError(
                f'The run config\'s {where} must be an object {{"rank": 4, "alpha": 4.0}}; '
                f"received {_type_name(data)} {data!r:.80}."
            )
        _check_keys(data, _LORA_KEYS, f"'{where}'")
        rank = _require(data, "rank", int, f"{where}.")
        alpha = (
            _require(data, "alpha", (int, float, type(None)), f"{where}.")
            if "alpha" in data
            else None
        )
        try:
            settings[path] = LoraSetting(rank, alpha)
        except (TypeError, ValueError) as error:
            raise ValueError(f"The run config's {where} is invalid: {error}") from None
    return settings


# -------------------------------------------------------------------------- to a plan
def plan_from_config(
    config: RunConfig, tree: LayerTree, *, template_key: str | None = None
) -> tuple[frozenset[str], list[str]]:
    """The freeze plan of a run config, restricted to the layers of the current model.

    Args:
        config: A parsed `RunConfig`.
        tree: The `LayerTree` of the model to apply the plan to.
        template_key: The current model's template key; when it differs from the config's,
            a notice says the plan was made for another model.

    Returns:
        `(plan, notices)`: the paths to freeze (all in `tree`), and notices about the model
        mismatch and the paths that do not exist (empty when everything matched).

    Example:
    >>> plan, notices = plan_from_config(parse_run_config(data), workspace.tree,
    ...                                  template_key=workspace.template.key)
    >>> workspace.apply_plan(plan)
    """
    if not isinstance(config, RunConfig):
        raise TypeError(
            f"config must be a RunConfig from parse_run_config; received {type(config).__name__}."
        )
    notices = []
    if template_key is not None and template_key != config.template_key:
        notices.append(
            f"The config was made for model {config.template_title!r} ({config.template_key}); "
            f"the current model is {template_key}. Only the layer paths both share were applied."
        )
    plan, missing = restrict_plan(config.frozen_paths, tree)
    return plan, notices + missing


def lora_from_config(
    config: RunConfig, tree: LayerTree
) -> tuple[dict[str, LoraSetting], list[str]]:
    """The LoRA adapters of a run config that the current model can take.

    Args:
        config: A parsed `RunConfig`.
        tree: The `LayerTree` of the model to put the adapters on.

    Returns:
        `(adapters, notices)`: layer path (as `tree` names it) -> `LoraSetting` for the
        adapters whose layer exists and supports LoRA (empty when the config has none; pass
        it to `Workspace.set_lora`), and a notice for the paths that do not exist and one for
        each layer Keras cannot adapt.

    Example:
    >>> adapters, notices = lora_from_config(parse_run_config(data), workspace.tree)
    >>> workspace.set_lora(adapters)
    """
    if not isinstance(config, RunConfig):
        raise TypeError(
            f"config must be a RunConfig from parse_run_config; received {type(config).__name__}."
        )
    adapters: dict[str, LoraSetting] = {}
    missing: list[str] = []
    notices: list[str] = []
    for path, setting in config.lora_adapters.items():
        if path not in tree:
            missing.append(path)
            continue
        canonical = tree.canonical_path(path)
        reason = why_not_lora(tree.layer(canonical))
        if reason is not None:
            notices.append(f"The config's LoRA adapter on '{canonical}' was skipped: {reason}")
            continue
        adapters[canonical] = setting
    if missing:
        notices.insert(
            0,
            f"{len(missing)} LoRA adapter(s) of the config are on layers the current model "
            f"does not have and were skipped: {format_paths(missing)}.",
        )
    return adapters, notices


def training_from_config(config: RunConfig, tree: LayerTree) -> tuple[TrainingConfig, list[str]]:
    """The training settings of a run config, with per-layer rates only if they fit the model.

    Args:
        config: A parsed `RunConfig`.
        tree: The `LayerTree` of the model the settings are for.

    Returns:
        `(settings, notices)`: `config.training`, without its `layer_rates` (and with a
        notice saying why) when they name a layer the model does not have.

    Example:
    >>> settings, notices = training_from_config(parse_run_config(data), workspace.tree)
    """
    if not isinstance(config, RunConfig):
        raise TypeError(
            f"config must be a RunConfig from parse_run_config; received {type(config).__name__}."
        )
    settings = config.training
    if settings.layer_rates is None:
        return settings, []
    try:
        layer_multipliers(settings.layer_rates, tree)
    except ValueError as error:
        notice = (
            f"The config's per-layer learning rates do not fit the current model and were left "
            f"out (every layer trains at the base rate): {error}"
        )
        return replace(settings, layer_rates=None), [notice]
    return settings, []
