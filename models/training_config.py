"""The settings of one training run (`TrainingConfig`) and the optimizers it may name."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras

from models.limits import (
    BATCH_SIZE_RANGE,
    DRIFT_EVERY_BATCHES_RANGE,
    EPOCHS_RANGE,
    LEARNING_RATE_RANGE,
    SEED_RANGE,
    VALIDATION_FRACTION_RANGE,
)
from models.validation import check_choice, check_number, check_whole_number

OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adamw": keras.optimizers.AdamW,
}
"""Optimizer names a `TrainingConfig` accepts, each with its Keras class."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training run.

    Attributes:
        epochs: Passes over the training data (`EPOCHS_RANGE`: 1 to 1000).
        batch_size: Samples per gradient step (`BATCH_SIZE_RANGE`: 1 to 65536).
        learning_rate: Optimizer step size (`LEARNING_RATE_RANGE`: 1e-6 to 10).
        optimizer: One of "adam", "sgd", "rmsprop", "adamw".
        validation_fraction: Share of the data held out for validation (stratified), 0 for none
            (`VALIDATION_FRACTION_RANGE`: 0 to 0.9).
        seed: Seed for the split, the shuffling, dropout and new weights.
        drift_every_batches: Also record drift every this many batches; None for epoch ends only.

    The bounds live in `models.limits`; bad values raise `ValueError` (`TypeError` too for a
    value of the wrong kind, see `models.validation`).

    Example:
    >>> config = TrainingConfig(epochs=2, learning_rate=1e-4)
    >>> config.to_dict()["optimizer"]
    'adam'
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    validation_fraction: float = 0.2
    seed: int = 0
    drift_every_batches: int | None = None

    def __post_init__(self) -> None:
        check_whole_number("epochs", self.epochs, *EPOCHS_RANGE)
        check_whole_number("batch_size", self.batch_size, *BATCH_SIZE_RANGE)
        check_whole_number("seed", self.seed, *SEED_RANGE)
        every, every_range = self.drift_every_batches, DRIFT_EVERY_BATCHES_RANGE
        check_whole_number("drift_every_batches", every, *every_range, allow_none=True)
        check_number(
            "learning_rate",
            self.learning_rate,
            *LEARNING_RATE_RANGE,
            hint="Typical values: 1e-3 for a new head, 1e-5 for fine-tuning.",
        )
        check_choice("optimizer", self.optimizer, sorted(OPTIMIZERS))
        check_number("validation_fraction", self.validation_fraction, *VALIDATION_FRACTION_RANGE)

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a plain dict (JSON-ready)."""
        return asdict(self)
