"""How a dataset is split for training: the stratified validation split and the batch fit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.limits import VALIDATION_FRACTION_RANGE
from models.validation import check_number, check_whole_number


def train_validation_split(
    x: np.ndarray, y: np.ndarray, validation_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits arrays into shuffled, stratified training and validation parts.

    Every class keeps (about) the same share in both parts. A `validation_fraction` of 0
    means no validation: all samples (shuffled) go to training and the validation arrays are
    empty, with the right trailing shape.

    Args:
        x: Samples, first axis is the sample axis.
        y: Integer labels of shape `(num_samples,)`.
        validation_fraction: 0 (no validation) or a fraction in (0, 0.9].
        seed: Seed of the shuffle, so the same seed gives the same split.

    Returns:
        `(x_train, y_train, x_validation, y_validation)`.

    Example:

    >>> dataset = load_bundled_dataset("digits_0_4")
    >>> x_train, y_train, x_val, y_val = train_validation_split(
    ...     dataset.x, dataset.y, validation_fraction=0.2, seed=0)
    """
    from sklearn.model_selection import train_test_split

    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"train_validation_split expects y of shape ({len(x)},) matching x's first axis; "
            f"received x of shape {x.shape} and y of shape {y.shape}."
        )
    validation_fraction = check_number(
        "validation_fraction",
        validation_fraction,
        *VALIDATION_FRACTION_RANGE,
        hint="Use 0 for no validation, e.g. 0.2 to keep a fifth of the data for validation.",
    )
    if validation_fraction == 0.0:
        order = np.random.default_rng(seed).permutation(len(x))
        return x[order], y[order], x[:0], y[:0]

    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"A stratified split needs at least 2 classes; received labels {classes.tolist()}."
        )
    too_small = classes[counts < 2]
    if len(too_small):
        raise ValueError(
            f"Each class needs at least 2 samples for a stratified split; classes "
            f"{too_small.tolist()} have only 1. Add samples or use validation_fraction=0."
        )
    num_validation = math.ceil(validation_fraction * len(y))
    num_train = len(y) - num_validation
    if num_validation < len(classes) or num_train < len(classes):
        raise ValueError(
            f"validation_fraction={validation_fraction} on {len(y)} samples gives "
            f"{num_train} training and {num_validation} validation samples, but a stratified "
            f"split needs at least one sample of each of the {len(classes)} classes in both. "
            "Use more data or a fraction closer to 0.5."
        )
    x_train, x_validation, y_train, y_validation = train_test_split(
        x, y, test_size=validation_fraction, random_state=seed, stratify=y, shuffle=True
    )
    return x_train, y_train, x_validation, y_validation


@dataclass(frozen=True)
class BatchFit:
    """How a batch size fits a dataset.

    Attributes:
        batch_size: The batch size to use (reduced to the training samples if needed).
        num_train_samples: Samples left for training after the validation split.
        reduced: Whether `batch_size` is smaller than the requested one.
        message: A sentence for the user when reduced, else "".
    """

    batch_size: int
    num_train_samples: int
    reduced: bool
    message: str


def check_batch_fits(
    num_samples: int, batch_size: int, validation_fraction: float = 0.0
) -> BatchFit:
    """Checks that a batch fits in the training split, reducing the batch size if not.

    The training split has `num_samples - ceil(validation_fraction * num_samples)` samples
    (as in `train_validation_split`). A batch size larger than that is reduced to it (one
    step per epoch) and the message says so.

    Args:
        num_samples: Samples in the dataset.
        batch_size: The requested batch size, at least 1.
        validation_fraction: Share held out for validation, 0 to 0.9.

    Returns:
        A `BatchFit`.

    Raises:
        ValueError: When no sample is left for training.

    Example:
    >>> check_batch_fits(20, 32, 0.2).batch_size
    16
    """
    num_samples = check_whole_number("num_samples", num_samples, 0)
    batch_size = check_whole_number("batch_size", batch_size, 1)
    validation_fraction = check_number(
        "validation_fraction", validation_fraction, *VALIDATION_FRACTION_RANGE
    )
    num_validation = math.ceil(float(validation_fraction) * num_samples)
    num_train = num_samples - num_validation
    if num_train < 1:
        raise ValueError(
            f"The dataset has {num_samples} sample(s); after holding out {num_validation} for "
            "validation none is left for training. Add data or lower the validation fraction."
        )
    if batch_size <= num_train:
        return BatchFit(batch_size, num_train, False, "")
    return BatchFit(
        num_train,
        num_train,
        True,
        (
            f"The training split has only {num_train} sample(s), fewer than the batch size "
            f"{batch_size}: the batch size will be reduced to {num_train} (one step per "
            "epoch). Lower the batch size or add data to choose it yourself."
        ),
    )
