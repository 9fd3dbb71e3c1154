"""The run config JSON: write a run's description, read one back strictly, turn it into a plan."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import keras

from models.export.plan_code import restrict_plan
from models.template import ModelKey, ModelTemplate, parse_model_key
from models.training import TrainingConfig
from models.tree import LayerTree, ParameterCounts

FREEZELAB_VERSION = "0.1.0"
RUN_CONFIG_FORMAT = "freezelab-run-config"
RUN_CONFIG_FORMAT_VERSION = 1
MAX_RUN_CONFIG_BYTES = 2 * 1024 * 1024
MAX_CONFIG_PATHS = 100_000
MAX_PATH_LENGTH = 2_000
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
)


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
        training: The training settings.
        counts: Trainable / non-trainable parameters with the plan, or None.
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

    Returns:
        A dict with "format", "format_version", "freezelab_version", "keras_version",
        "created_at", "run_id", "model" {key, title, pretrained}, "dataset" {key, title},
        "frozen_paths" (sorted list), "training" (TrainingConfig fields) and "counts"
        {trainable, non_trainable} or None.

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
    moment = created_at or datetime.datetime.now(datetime.UTC)
    return {
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
            config, has unknown keys, values of the wrong type or invalid training settings;
            the message names the key, what was received and what is expected.

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
    field_names = [field.name for field in fields(TrainingConfig)]
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
