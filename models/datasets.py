"""Image datasets as NumPy arrays (bundled digits and shapes), the validation split, batch fit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from types import MappingProxyType

import numpy as np
import pandas as pd

from models.checks import checked_int

DEFAULT_DATASET = "digits_5_9"

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

BUNDLED_DATASETS: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "digits_5_9": (
            "Handwritten digits 5-9",
            "Real 8x8 grayscale handwritten digits 5, 6, 7, 8 and 9 from scikit-learn "
            "(about 900 images). The default transfer task: the bundled model was pretrained "
            "on the other digits, 0-4.",
        ),
        "digits_0_4": (
            "Handwritten digits 0-4",
            "Real 8x8 grayscale handwritten digits 0, 1, 2, 3 and 4 from scikit-learn "
            "(about 900 images). The task the bundled model was pretrained on.",
        ),
        "shapes": (
            "Generated shapes",
            "Procedurally generated 32x32 RGB images of circles, squares, triangles and "
            "crosses with random position, size and colour plus a little noise (600 images, "
            "seeded, so the same every time).",
        ),
    }
)


def check_labels(
    kind: str, name: str, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...]
) -> None:
    """Checks a labelled dataset's y against x and its class names, then makes both read-only.

    Shared by `ImageDataset` and the uploads' `TabularDataset`.

    Args:
        kind: The dataset class, for messages ("ImageDataset").
        name: The dataset's key, for messages.
        x: Inputs, one row per sample.
        y: Integer labels, shape (num_samples,).
        class_names: One name per class.

    Raises:
        ValueError: Saying what was received and what is expected.
    """
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"{kind} '{name}' expects y of shape ({len(x)},) to match x; received shape {y.shape}."
        )
    if len(class_names) < 2:
        raise ValueError(f"{kind} '{name}' expects at least 2 class names; received {class_names}.")
    if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
        raise ValueError(
            f"{kind} '{name}' expects labels in 0..{len(class_names) - 1} (one per class name); "
            f"received labels from {y.min()} to {y.max()}."
        )
    x.flags.writeable = False
    y.flags.writeable = False


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An in-memory image classification dataset.

    The arrays are made read-only so one loaded dataset can be shared safely (for example
    by a process-wide cache); copy them before changing values in place.

    Args:
        name: Short key of the dataset, e.g. `"digits_5_9"`.
        title: Human-readable title.
        description: One or two sentences describing the data.
        x: float32 images of shape `(num_samples, height, width, channels)`, values in [0, 1].
        y: int64 labels of shape `(num_samples,)`, values `0..num_classes - 1`.
        class_names: One name per class, in label order.

    Example:

    >>> dataset = load_digits_task((5, 6, 7, 8, 9))
    >>> dataset.input_shape, dataset.num_classes
    ((8, 8, 1), 5)
    """

    name: str
    title: str
    description: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype="float32")
        y = np.asarray(self.y, dtype="int64")
        class_names = tuple(str(class_name) for class_name in self.class_names)
        if x.ndim != 4:
            raise ValueError(
                f"ImageDataset '{self.name}' expects x of shape (num_samples, height, width, "
                f"channels); received an array of shape {x.shape}."
            )
        check_labels("ImageDataset", self.name, x, y, class_names)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "class_names", class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of `class_names`)."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, `(height, width, channels)`."""
        return tuple(int(size) for size in self.x.shape[1:])

    @property
    def num_samples(self) -> int:
        """Number of images."""
        return int(self.x.shape[0])

    def class_counts(self) -> pd.Series:
        """Counts the images of each class.

        Returns:
            A pandas Series indexed by class name (in label order) holding the number of
            images of each class, zero included.

        Example:

        >>> load_bundled_dataset("shapes").class_counts()["circle"]
        150
        """
        counts = np.bincount(self.y, minlength=self.num_classes)
        return pd.Series(
            counts.astype("int64"),
            index=pd.Index(self.class_names, name="class"),
            name="num_samples",
        )


def _validate_digits(digits: Sequence[int]) -> tuple[int, ...]:
    if isinstance(digits, str | bytes) or not isinstance(digits, Sequence | np.ndarray):
        raise TypeError(
            f"digits must be a sequence of integers 0-9, e.g. (5, 6, 7, 8, 9); received "
            f"{digits!r} of type {type(digits).__name__}."
        )
    digits = list(digits)
    for digit in digits:
        if isinstance(digit, bool) or not isinstance(digit, Integral):
            raise ValueError(
                f"digits must contain integers 0-9; received {digit!r} "
                f"({type(digit).__name__}) in {digits}."
            )
        if not 0 <= int(digit) <= 9:
            raise ValueError(f"digits must be between 0 and 9; received {int(digit)} in {digits}.")
    digits = tuple(int(digit) for digit in digits)
    if len(digits) < 2:
        raise ValueError(
            f"A classification task needs at least 2 distinct digits; received {list(digits)}. "
            "Pass e.g. (5, 6, 7, 8, 9)."
        )
    if len(set(digits)) != len(digits):
        duplicates = sorted({digit for digit in digits if digits.count(digit) > 1})
        raise ValueError(
            f"digits must be unique; received {list(digits)} where {duplicates} appear more "
            "than once."
        )
    return digits


def load_digits_task(digits: Sequence[int]) -> ImageDataset:
    """Loads scikit-learn's handwritten digits, keeping only some digits.

    The 8x8 images (values 0..16) ship inside scikit-learn, so no network is needed. They are
    scaled to [0, 1] and given a channel axis. Labels are remapped to `0..K-1` in the order
    the digits are given, so `digits=(5, 6)` maps digit 5 to label 0 and 6 to label 1.

    Args:
        digits: At least 2 distinct digits between 0 and 9.

    Returns:
        An `ImageDataset` with x of shape `(N, 8, 8, 1)` and class names like `("5", "6")`.

    Example:

    >>> dataset = load_digits_task((5, 6, 7, 8, 9))
    >>> dataset.x.shape[1:], dataset.class_names[0]
    ((8, 8, 1), '5')
    """
    from sklearn.datasets import load_digits

    digits = _validate_digits(digits)
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype="float32")
    targets = np.asarray(bunch.target, dtype="int64")

    keep = np.isin(targets, digits)
    label_of_digit = np.full(10, -1, dtype="int64")
    label_of_digit[list(digits)] = np.arange(len(digits))

    x = (images[keep] / 16.0)[..., np.newaxis]
    y = label_of_digit[targets[keep]]
    digit_text = ", ".join(str(digit) for digit in digits)
    return ImageDataset(
        name="digits_" + "_".join(str(digit) for digit in digits),
        title=f"Handwritten digits {digit_text}",
        description=(
            f"Real 8x8 grayscale handwritten digits {digit_text} from scikit-learn's "
            f"load_digits ({int(keep.sum())} images), scaled to [0, 1]."
        ),
        x=x,
        y=y,
        class_names=tuple(str(digit) for digit in digits),
    )


def _shape_mask(
    shape_name: str,
    rows: np.ndarray,
    cols: np.ndarray,
    center_row: float,
    center_col: float,
    radius: float,
) -> np.ndarray:
    delta_row = rows - center_row
    delta_col = cols - center_col
    if shape_name == "circle":
        return delta_row**2 + delta_col**2 <= radius**2
    if shape_name == "square":
        half_side = 0.8 * radius
        return (np.abs(delta_row) <= half_side) & (np.abs(delta_col) <= half_side)
    if shape_name == "triangle":
        # Apex at the top, base at the bottom, base width equal to its height.
        from_top = delta_row + radius
        return (from_top >= 0) & (delta_row <= radius) & (np.abs(delta_col) <= from_top / 2)
    if shape_name == "cross":
        half_thickness = max(radius / 3.0, 1.0)
        vertical = (np.abs(delta_col) <= half_thickness) & (np.abs(delta_row) <= radius)
        horizontal = (np.abs(delta_row) <= half_thickness) & (np.abs(delta_col) <= radius)
        return vertical | horizontal
    raise ValueError(f"Unknown shape {shape_name!r}; expected one of {SHAPE_NAMES}.")


def generate_shapes(
    num_samples_per_class: int = 150, image_size: int = 32, seed: int = 0
) -> ImageDataset:
    """Generates a deterministic RGB dataset of simple shapes with NumPy.

    Each image shows one circle, square, triangle or cross with a random size, position,
    foreground and background colour, plus a little Gaussian noise. Colours are drawn the
    same way for every class, so only the shape tells the classes apart. The same seed always
    gives the same arrays; the samples are shuffled (with the same seed).

    Args:
        num_samples_per_class: Images per class, at least 2.
        image_size: Height and width in pixels, at least 8.
        seed: Seed of the NumPy random generator.

    Returns:
        An `ImageDataset` with x of shape `(4 * num_samples_per_class, image_size,
        image_size, 3)` in [0, 1] and class names `("circle", "square", "triangle", "cross")`.

    Example:

    >>> dataset = generate_shapes(num_samples_per_class=10, image_size=16, seed=1)
    >>> dataset.x.shape
    (40, 16, 16, 3)
    """
    for argument, value, minimum in (
        ("num_samples_per_class", num_samples_per_class, 2),
        ("image_size", image_size, 8),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise ValueError(
                f"generate_shapes expects {argument} to be an integer >= {minimum}; "
                f"received {value!r}."
            )
    num_samples_per_class = int(num_samples_per_class)
    image_size = int(image_size)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:image_size, 0:image_size].astype("float32")

    num_classes = len(SHAPE_NAMES)
    total = num_classes * num_samples_per_class
    x = np.empty((total, image_size, image_size, 3), dtype="float32")
    y = np.repeat(np.arange(num_classes, dtype="int64"), num_samples_per_class)
    for index, label in enumerate(y):
        radius = rng.uniform(0.2, 0.4) * image_size
        margin = radius + 0.5
        center_row = rng.uniform(margin, image_size - 1 - margin)
        center_col = rng.uniform(margin, image_size - 1 - margin)
        background = rng.uniform(0.0, 0.35, size=3)
        foreground = rng.uniform(0.55, 1.0, size=3)
        mask = _shape_mask(SHAPE_NAMES[label], rows, cols, center_row, center_col, radius)
        image = np.where(mask[..., np.newaxis], foreground, background)
        image = image + rng.normal(0.0, 0.04, size=image.shape)
        x[index] = np.clip(image, 0.0, 1.0)

    order = rng.permutation(total)
    title, description = BUNDLED_DATASETS["shapes"]
    if num_samples_per_class != 150 or image_size != 32:
        description = (
            f"Procedurally generated {image_size}x{image_size} RGB images of circles, "
            f"squares, triangles and crosses ({total} images, seed {seed})."
        )
    return ImageDataset(
        name="shapes",
        title=title,
        description=description,
        x=x[order],
        y=y[order],
        class_names=SHAPE_NAMES,
    )


def load_bundled_dataset(key: str) -> ImageDataset:
    """Loads one of the bundled offline datasets by key.

    Args:
        key: One of `BUNDLED_DATASETS`: `"digits_5_9"` (the default transfer task),
            `"digits_0_4"` (what the bundled model was pretrained on) or `"shapes"`.

    Returns:
        The `ImageDataset`, with the registry's key, title and description.

    Example:

    >>> load_bundled_dataset(DEFAULT_DATASET).num_classes
    5
    """
    if key not in BUNDLED_DATASETS:
        raise ValueError(
            f"Unknown bundled dataset {key!r}; expected one of {list(BUNDLED_DATASETS)}."
        )
    title, description = BUNDLED_DATASETS[key]
    if key == "shapes":
        dataset = generate_shapes()
    else:
        first, last = (int(part) for part in key.removeprefix("digits_").split("_"))
        dataset = load_digits_task(tuple(range(first, last + 1)))
    return ImageDataset(
        name=key,
        title=title,
        description=description,
        x=dataset.x,
        y=dataset.y,
        class_names=dataset.class_names,
    )


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
    if isinstance(validation_fraction, bool) or not isinstance(
        validation_fraction, int | float | np.floating | np.integer
    ):
        raise TypeError(
            f"validation_fraction must be a number, 0 or in (0, 0.9]; received "
            f"{validation_fraction!r}."
        )
    validation_fraction = float(validation_fraction)
    if not (validation_fraction == 0.0 or 0.0 < validation_fraction <= 0.9):
        raise ValueError(
            f"validation_fraction must be 0 (no validation) or in (0, 0.9]; received "
            f"{validation_fraction}. Use e.g. 0.2 to keep a fifth of the data for validation."
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
    num_samples = checked_int("num_samples", num_samples, 0)
    batch_size = checked_int("batch_size", batch_size, 1)
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, Real)
        or not 0 <= validation_fraction <= 0.9
    ):
        raise ValueError(
            f"validation_fraction must be between 0 and 0.9; received {validation_fraction!r}."
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
