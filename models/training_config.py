"""The settings of one training run (`TrainingConfig`) and the optimizers it may name."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import keras

from models.layer_rates import LayerRates
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
        layer_rates: Per-layer learning rates (`models.layer_rates.LayerRates`, or its
            `to_dict()` data); None (the default) trains every layer at `learning_rate`. The
            largest rate a layer can get, `learning_rate` times the largest multiplier, stays
            within `LEARNING_RATE_RANGE`.

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
    layer_rates: LayerRates | None = None

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
        self._check_layer_rates()

    def _check_layer_rates(self) -> None:
        """Accepts a `LayerRates` or its `to_dict()` data (a stored config read back)."""
        rates = self.layer_rates
        if rates is None:
            return
        if isinstance(rates, dict):
            try:
                rates = LayerRates.from_dict(rates)
            except (TypeError, ValueError) as error:
                raise type(error)(f"`layer_rates` is invalid: {error}") from None
            object.__setattr__(self, "layer_rates", rates)
        elif not isinstance(rates, LayerRates):
            raise TypeError(
                "`layer_rates` must be None, a models.layer_rates.LayerRates or its to_dict() "
                f"data. Received: layer_rates={rates!r:.80}"
            )
        highest = self.learning_rate * rates.max_multiplier
        if highest > LEARNING_RATE_RANGE[1]:
            raise ValueError(
                f"With learning_rate={self.learning_rate:g} the largest layer multiplier "
                f"({rates.max_multiplier:g}) gives a layer the learning rate {highest:g}, above "
                f"the largest accepted ({LEARNING_RATE_RANGE[1]:g}). Lower the multiplier or "
                "the learning rate."
            )

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a plain dict (JSON-ready).

        `layer_rates` appears only when set (as `LayerRates.to_dict()`), so the settings of a
        run without per-layer rates read exactly as before it existed.
        """
        data = {field.name: getattr(self, field.name) for field in fields(self)}
        rates = data.pop("layer_rates")
        if rates is not None:
            data["layer_rates"] = rates.to_dict()
        return data
