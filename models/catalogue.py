"""The base models a user can pick, each loaded once as a read-only `ModelTemplate`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.bundled import load_bundled_base, load_bundled_metadata
from models.workspace import ModelTemplate

BUNDLED_MODEL_KEY = "bundled_digits_cnn"
DEFAULT_MODEL = BUNDLED_MODEL_KEY

MODEL_CATALOGUE: Mapping[str, str] = MappingProxyType(
    {BUNDLED_MODEL_KEY: "Bundled digits CNN (pretrained on digits 0-4, offline)"}
)


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
        key=BUNDLED_MODEL_KEY,
        title="Bundled digits CNN",
        description=(
            "A small CNN whose feature extractor (3 Conv2D + BatchNormalization + ReLU blocks) "
            f"was trained on handwritten digits 0-4{accuracy_text}. Ships with FreezeLab: "
            "no download."
        ),
        pretrained=True,
    )


def load_template(key: str) -> ModelTemplate:
    """Loads the template for a catalogue key.

    Args:
        key: A key of `MODEL_CATALOGUE`.

    Returns:
        The `ModelTemplate`.

    Raises:
        ValueError: For an unknown key (the message lists the valid ones).
    """
    if key == BUNDLED_MODEL_KEY:
        return bundled_template()
    raise ValueError(f"Unknown model '{key}'. Expected one of {sorted(MODEL_CATALOGUE)}.")
