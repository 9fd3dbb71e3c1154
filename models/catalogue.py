"""The base models a user can pick, each loaded once as a read-only `ModelTemplate`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import keras

from models.applications import APPLICATIONS, application_template
from models.bundled import (
    BUNDLED_MODEL_PATH,
    load_bundled_base,
    load_bundled_metadata,
    load_bundled_model,
)
from models.bundled_attention import (
    ATTENTION_MODEL_PATH,
    load_attention_base,
    load_attention_metadata,
    load_attention_model,
)
from models.download import ProgressCallback
from models.template import (
    BUNDLED_ATTENTION_KEY,
    BUNDLED_MODEL_KEY,
    BUNDLED_MODEL_KEYS,
    ModelKey,
    ModelTemplate,
    parse_model_key,
)

__all__ = [
    "APPLICATION_CATALOGUE",
    "BUNDLED_ATTENTION_KEY",
    "BUNDLED_MODEL_KEY",
    "BUNDLED_MODEL_KEYS",
    "DEFAULT_MODEL",
    "MODEL_CATALOGUE",
    "bundled_model_path",
    "bundled_template",
    "catalogue_key",
    "load_template",
]

DEFAULT_MODEL = BUNDLED_MODEL_KEY


@dataclass(frozen=True)
class _BundledEntry:
    """How to load one bundled base and describe it (`{accuracy}` is filled in)."""

    title: str
    menu_title: str
    description: str
    model_path: Path
    load_base: Callable[[], keras.Model]
    load_metadata: Callable[[], dict[str, Any]]
    load_model: Callable[[], keras.Model]


_BUNDLED: Mapping[str, _BundledEntry] = MappingProxyType(
    {
        BUNDLED_MODEL_KEY: _BundledEntry(
            title="Bundled digits CNN",
            menu_title="Bundled digits CNN (pretrained on digits 0-4, offline)",
            description=(
                "A small CNN whose feature extractor (3 Conv2D + BatchNormalization + ReLU "
                "blocks) was trained on handwritten digits 0-4{accuracy}. Ships with "
                "FreezeLab: no download."
            ),
            model_path=BUNDLED_MODEL_PATH,
            load_base=load_bundled_base,
            load_metadata=load_bundled_metadata,
            load_model=load_bundled_model,
        ),
        BUNDLED_ATTENTION_KEY: _BundledEntry(
            title="Bundled digits attention",
            menu_title=(
                "Bundled digits attention (tiny Transformer, pretrained on digits 0-4, offline)"
            ),
            description=(
                "A tiny Vision Transformer: 2x2-pixel patches with a learned position "
                "embedding, then 2 blocks of LayerNormalization + MultiHeadAttention (4 heads) "
                "+ Dense feed-forward, trained on handwritten digits 0-4{accuracy}. Its Dense "
                "and EinsumDense projections (attention query, key, value, output) take LoRA "
                "adapters. Ships with FreezeLab: no download."
            ),
            model_path=ATTENTION_MODEL_PATH,
            load_base=load_attention_base,
            load_metadata=load_attention_metadata,
            load_model=load_attention_model,
        ),
    }
)

# Bundled bases, key -> menu title, in the order menus offer them (the default first).
MODEL_CATALOGUE: Mapping[str, str] = MappingProxyType(
    {key: _BUNDLED[key].menu_title for key in BUNDLED_MODEL_KEYS}
)
# keras.applications bases, key -> title (see models.applications); nothing is built at import.
APPLICATION_CATALOGUE: Mapping[str, str] = APPLICATIONS


def _bundled_entry(key: str) -> _BundledEntry:
    """The bundled model of a key, or a ValueError that lists the bundled keys."""
    if not isinstance(key, str) or key not in _BUNDLED:
        raise ValueError(
            f"`key` must name a bundled model, one of {list(BUNDLED_MODEL_KEYS)}. "
            f"Received: key={key!r}"
        )
    return _BUNDLED[key]


def bundled_model_path(key: str = BUNDLED_MODEL_KEY) -> Path:
    """The `.keras` file a bundled model ships in (its feature extractor is the base).

    Args:
        key: One of `BUNDLED_MODEL_KEYS`.

    Returns:
        The file's path in the repository.

    Raises:
        ValueError: For a key that names no bundled model.

    Example:
    >>> bundled_model_path("bundled_digits_attention").name
    'bundled_digits_attention.keras'
    """
    return _bundled_entry(key).model_path


def load_pretrained_model(key: str = BUNDLED_MODEL_KEY) -> keras.Model:
    """Loads a bundled model whole: its base and the classifier it was pretrained with.

    Args:
        key: One of `BUNDLED_MODEL_KEYS`.

    Returns:
        A new, uncompiled model (base "feature_extractor", head "classifier", digits 0-4).

    Raises:
        ValueError: For a key that names no bundled model.

    Example:
    >>> load_pretrained_model().get_layer("classifier").units
    5
    """
    return _bundled_entry(key).load_model()


def bundled_template(key: str = BUNDLED_MODEL_KEY) -> ModelTemplate:
    """Returns a bundled pretrained feature extractor as a template.

    Args:
        key: One of `BUNDLED_MODEL_KEYS`: "bundled_digits_cnn" (the default) or
            "bundled_digits_attention".

    Returns:
        A `ModelTemplate` of the nested `feature_extractor` of that bundled model.

    Raises:
        ValueError: For a key that names no bundled model.

    Example:
    >>> bundled_template().pretrained
    True
    >>> bundled_template("bundled_digits_attention").class_name
    'Functional'
    """
    entry = _bundled_entry(key)
    accuracy = entry.load_metadata().get("validation_accuracy")
    accuracy_text = f" ({accuracy:.0%} validation accuracy)" if accuracy is not None else ""
    return ModelTemplate.from_model(
        entry.load_base(),
        key=ModelKey.bundled(key).format(),
        title=entry.title,
        description=entry.description.format(accuracy=accuracy_text),
        pretrained=True,
    )


def load_template(
    key: str,
    *,
    input_size: int | None = None,
    pretrained: bool = True,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    on_progress: ProgressCallback | None = None,
) -> ModelTemplate:
    """Loads the template for a catalogue key: a bundled model or a keras.applications base.

    Args:
        key: A key of `MODEL_CATALOGUE` (the bundled models) or of `APPLICATION_CATALOGUE`.
        input_size: For keras.applications bases: input height and width (None: the
            entry's default). Ignored for the bundled models.
        pretrained: For keras.applications bases: ImageNet weights (True) or random
            initialisation (False). Ignored for the bundled models.
        cache_dir: For keras.applications bases: the Keras cache folder.
        allow_download: For keras.applications bases: whether weights may be downloaded.
        on_progress: For keras.applications bases: called as `on_progress(bytes_done,
            bytes_total)` while weights download (`bytes_total` None when unknown).

    Returns:
        The `ModelTemplate`.

    Raises:
        ValueError: For an unknown key (the message lists the valid ones).
        models.applications.WeightsUnavailableError: When ImageNet weights are requested but
            neither cached nor downloadable (a ValueError; offer `pretrained=False`).

    Example:
    >>> load_template("mobilenet_v2_035", input_size=96, pretrained=False).pretrained
    False
    >>> load_template("bundled_digits_attention").key
    'bundled_digits_attention'
    """
    if key in MODEL_CATALOGUE:
        return bundled_template(key)
    if key in APPLICATION_CATALOGUE:
        return application_template(
            key,
            input_size,
            pretrained,
            cache_dir=cache_dir,
            allow_download=allow_download,
            on_progress=on_progress,
        )
    raise ValueError(
        f"Unknown model '{key}'. Expected one of "
        f"{sorted(MODEL_CATALOGUE) + sorted(APPLICATION_CATALOGUE)}."
    )


def catalogue_key(template_key: str) -> str | None:
    """The catalogue key a template key comes from ("resnet50@96:imagenet" -> "resnet50").

    Args:
        template_key: A template's key (see `models.template.parse_model_key`).

    Returns:
        The catalogue key, or None for an uploaded model or a Dense base.

    Raises:
        ValueError: When `template_key` is not a model key.

    Example:
    >>> catalogue_key("resnet50@96:random")
    'resnet50'
    """
    return parse_model_key(template_key).catalogue_key
