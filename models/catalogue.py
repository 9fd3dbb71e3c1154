"""The base models a user can pick, each loaded once as a read-only `ModelTemplate`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from models.applications import APPLICATIONS, application_template
from models.bundled import load_bundled_base, load_bundled_metadata
from models.download import ProgressCallback
from models.template import BUNDLED_MODEL_KEY, ModelKey, ModelTemplate, parse_model_key

DEFAULT_MODEL = BUNDLED_MODEL_KEY

MODEL_CATALOGUE: Mapping[str, str] = MappingProxyType(
    {BUNDLED_MODEL_KEY: "Bundled digits CNN (pretrained on digits 0-4, offline)"}
)
# keras.applications bases, key -> title (see models.applications); nothing is built at import.
APPLICATION_CATALOGUE: Mapping[str, str] = APPLICATIONS


def bundled_template() -> ModelTemplate:
    """Returns the bundled pretrained feature extractor as a template.

    Returns:
        A `ModelTemplate` of the nested `feature_extractor` of the bundled digits CNN.

    Example:
    >>> bundled_template().pretrained
    True
    """
    metadata = load_bundled_metadata()
    accuracy = metadata.get("validation_accuracy")
    accuracy_text = f" ({accuracy:.0%} validation accuracy)" if accuracy is not None else ""
    return ModelTemplate.from_model(
        load_bundled_base(),
        key=ModelKey.bundled().format(),
        title="Bundled digits CNN",
        description=(
            "A small CNN whose feature extractor (3 Conv2D + BatchNormalization + ReLU blocks) "
            f"was trained on handwritten digits 0-4{accuracy_text}. Ships with FreezeLab: "
            "no download."
        ),
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
    """Loads the template for a catalogue key: the bundled model or a keras.applications base.

    Args:
        key: A key of `MODEL_CATALOGUE` or of `APPLICATION_CATALOGUE`.
        input_size: For keras.applications bases: input height and width (None: the
            entry's default). Ignored for the bundled model.
        pretrained: For keras.applications bases: ImageNet weights (True) or random
            initialisation (False). Ignored for the bundled model.
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
    """
    if key == BUNDLED_MODEL_KEY:
        return bundled_template()
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
