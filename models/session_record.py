"""What a session chose, as plain JSON-ready data: enough to rebuild its workspace later.

The server keeps each session's `Workspace` in memory (see `models.sessions`). When that
workspace is gone (the server restarted, or it was released to free memory), the page rebuilds
it from the session's record: the base model's key, where its dataset came from, the freeze
plan and the user's settings. Uploaded files are kept beside the record by the run store.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from models.lora import LoraSetting
from models.template import parse_model_key
from models.training_config import TrainingConfig

SESSION_RECORD_FORMAT = "freezelab-session"
SESSION_RECORD_VERSION = 1
DATA_KINDS = ("bundled", "keras", "zip", "csv")


@dataclass(frozen=True)
class DataSource:
    """Where a session's dataset came from.

    Attributes:
        kind: "bundled", "keras" (keras.datasets), "zip" or "csv" (an upload kept on disk).
        key: The dataset key of "bundled" and "keras".
        subset_size: Samples kept of a "keras" dataset.
        filename: An upload's file name.
        image_size: The side a zip's images were resized to.
        label_column: A CSV's label column.

    Example:
    >>> DataSource("bundled", key="digits_5_9").kind
    'bundled'
    """

    kind: str
    key: str | None = None
    subset_size: int | None = None
    filename: str | None = None
    image_size: int | None = None
    label_column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"`kind` must be one of {DATA_KINDS}; received {self.kind!r}.")
        if self.kind in ("bundled", "keras") and not self.key:
            raise ValueError(f"A {self.kind!r} data source needs its dataset `key`.")

    @property
    def is_upload(self) -> bool:
        """Whether the data came from an upload (its bytes are kept beside the record)."""
        return self.kind in ("zip", "csv")


@dataclass(frozen=True)
class SessionRecord:
    """A session's choices: model, data, freeze plan, settings.

    Attributes:
        model_key: The base model's template key (`models.template.ModelKey` as text).
        data: Where the dataset came from (`DataSource`).
        frozen_paths: The freeze plan (node paths whose flag is False), sorted.
        settings: The user's settings by widget key (JSON values only).
        training: The training settings the controls showed last, or None.
        adapters: The LoRA adapters, layer path -> `LoraSetting` (a rebuilt workspace gets new
            ones, at zero, on the template's weights).

    Example:
    >>> record = SessionRecord("bundled_digits_cnn", DataSource("bundled", key="digits_5_9"))
    >>> SessionRecord.from_json(record.to_json()) == record
    True
    """

    model_key: str
    data: DataSource
    frozen_paths: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig | None = None
    adapters: dict[str, LoraSetting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_model_key(self.model_key)  # raises for a key no loader can read
        for path, setting in self.adapters.items():
            if not isinstance(path, str) or not isinstance(setting, LoraSetting):
                raise TypeError(
                    "`adapters` maps layer paths to LoraSetting; received "
                    f"{path!r}: {type(setting).__name__}."
                )
        object.__setattr__(self, "frozen_paths", tuple(sorted(map(str, self.frozen_paths))))
        object.__setattr__(self, "settings", json_settings(self.settings))

    def to_json(self) -> bytes:
        """The record as UTF-8 JSON."""
        document = {
            "format": SESSION_RECORD_FORMAT,
            "format_version": SESSION_RECORD_VERSION,
            "model_key": self.model_key,
            "data": asdict(self.data),
            "frozen_paths": list(self.frozen_paths),
            "settings": self.settings,
            "training": None if self.training is None else self.training.to_dict(),
            "adapters": {path: setting.to_dict() for path, setting in self.adapters.items()},
        }
        return json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, content: bytes | str) -> SessionRecord:
        """Reads a record written by `to_json`.

        Raises:
            ValueError: When the content is not such a record, saying what is wrong.
        """
        try:
            document = json.loads(content)
        except (TypeError, ValueError) as error:
            raise ValueError(f"The session record is not valid JSON ({error}).") from error
        if not isinstance(document, dict) or document.get("format") != SESSION_RECORD_FORMAT:
            raise ValueError(f"Not a FreezeLab session record (expected {SESSION_RECORD_FORMAT}).")
        if document.get("format_version") != SESSION_RECORD_VERSION:
            raise ValueError(
                f"Session record version {document.get('format_version')!r} is not supported "
                f"(expected {SESSION_RECORD_VERSION})."
            )
        try:
            training = document.get("training")
            return cls(
                model_key=str(document["model_key"]),
                data=DataSource(**document["data"]),
                frozen_paths=tuple(document.get("frozen_paths", [])),
                settings=dict(document.get("settings", {})),
                training=None if training is None else TrainingConfig(**training),
                adapters={
                    str(path): LoraSetting.from_dict(setting)
                    for path, setting in dict(document.get("adapters", {})).items()
                },
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"The session record is incomplete or damaged ({error}).") from error


def json_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that JSON can hold as they are (text, whole and finite numbers, booleans).

    Example:
    >>> json_settings({"validation_fraction": 0.2, "upload": b"..."})
    {'validation_fraction': 0.2}
    """
    kept = {}
    for key, value in settings.items():
        if isinstance(value, bool | int | str) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            kept[str(key)] = value
    return kept


__all__ = ["DATA_KINDS", "DataSource", "SessionRecord", "json_settings"]
