"""The Dense base for tables: a small, not pretrained Dense network that standardises its input."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from models.template import ModelKey, ModelTemplate
from models.upload_tables import TabularDataset
from models.validation import check_whole_number


def dense_base_for_features(
    num_features: int,
    *,
    mean: Sequence[float] | np.ndarray | None = None,
    variance: Sequence[float] | np.ndarray | None = None,
    hidden_units: tuple[int, int] = (64, 32),
) -> keras.Model:
    """Builds a small, randomly initialised Dense base for tabular data (the "Dense base").

    Layers: `keras.Input((num_features,))`, a fixed `Normalization` named `"standardize"`
    when `mean` and `variance` are given (so raw CSV values are standardised inside the
    model), then two blocks of Dense -> BatchNormalization -> ReLU (`"dense1"`,
    `"batch_norm1"`, `"relu1"`, `"dense2"`, ...). It is not pretrained: freezing it
    transfers nothing learned, but the freezing and drift views work the same.

    Args:
        num_features: Number of input features, at least 1.
        mean: Optional per-feature means (e.g. `TabularDataset.feature_statistics()[0]`).
        variance: Optional per-feature variances, given together with `mean`.
        hidden_units: Units of the two hidden Dense layers.

    Returns:
        An uncompiled `keras.Sequential` named `"dense_base"` that outputs feature vectors.

    Example:
    >>> dense_base_for_features(4).output.shape
    (None, 32)
    """
    num_features = check_whole_number("num_features", num_features, 1)
    if (mean is None) != (variance is None):
        raise ValueError(
            "dense_base_for_features needs both mean and variance (or neither); received "
            f"mean={'set' if mean is not None else None}, "
            f"variance={'set' if variance is not None else None}."
        )
    if len(hidden_units) != 2:
        raise ValueError(
            f"hidden_units must be 2 positive integers, e.g. (64, 32); received {hidden_units!r}."
        )
    units = [check_whole_number("hidden_units", value, 1) for value in hidden_units]
    layers: list[keras.layers.Layer] = [keras.Input((num_features,), name="features_input")]
    if mean is not None:
        mean_array = np.asarray(mean, dtype="float32").reshape(-1)
        variance_array = np.asarray(variance, dtype="float32").reshape(-1)
        if mean_array.shape != (num_features,) or variance_array.shape != (num_features,):
            raise ValueError(
                f"mean and variance must have {num_features} values (one per feature); "
                f"received {mean_array.shape[0]} and {variance_array.shape[0]}."
            )
        layers.append(
            keras.layers.Normalization(
                mean=mean_array.tolist(), variance=variance_array.tolist(), name="standardize"
            )
        )
    for index, count in enumerate(units, start=1):
        layers += [
            keras.layers.Dense(count, use_bias=False, name=f"dense{index}"),
            keras.layers.BatchNormalization(name=f"batch_norm{index}"),
            keras.layers.ReLU(name=f"relu{index}"),
        ]
    return keras.Sequential(layers, name="dense_base")


def dense_base_template(dataset: TabularDataset, seed: int = 0) -> ModelTemplate:
    """The Dense base for a tabular dataset, standardising its features, as a template.

    Args:
        dataset: The `TabularDataset` whose feature statistics the base standardises with.
        seed: Seed of the random initial weights.

    Returns:
        A `ModelTemplate` (not pretrained) with key "dense_base:<num_features>".

    Example:
    >>> template = dense_base_template(dataset)
    >>> template.pretrained
    False
    """
    if not isinstance(dataset, TabularDataset):
        raise TypeError(
            f"dense_base_template expects a TabularDataset (from load_csv_dataset); received "
            f"{type(dataset).__name__}."
        )
    keras.utils.set_random_seed(seed)
    mean, variance = dataset.feature_statistics()
    base = dense_base_for_features(dataset.num_features, mean=mean, variance=variance)
    return ModelTemplate.from_model(
        base,
        key=ModelKey.dense_base(dataset.num_features).format(),
        title="Dense base · not pretrained (random initialisation)",
        description=(
            f"Two Dense + BatchNormalization + ReLU blocks for {dataset.num_features} "
            "features, standardised inside the model with the table's mean and variance. Not "
            "pretrained (random initialisation): freezing it transfers nothing learned."
        ),
        pretrained=False,
    )
