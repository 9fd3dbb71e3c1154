"""Image datasets as NumPy arrays: the bundled digits tasks and generated shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from models.validation import check_whole_number

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

    Images are stored either as float32 values in [0, 1] (the bundled datasets) or as uint8
    pixels 0..255 (uploads: a quarter of the memory). A model for uint8 images scales each
    batch itself: build it with `build_transfer_model(..., input_dtype=dataset.x.dtype)`.

    Args:
        name: Short key of the dataset, e.g. `"digits_5_9"`.
        title: Human-readable title.
        description: One or two sentences describing the data.
        x: Images of shape `(num_samples, height, width, channels)`: uint8 arrays are kept
            as they are (pixels 0..255), any other numbers become float32 (values in [0, 1]
            expected).
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
        x = np.asarray(self.x)
        if x.dtype != np.uint8:
            x = np.asarray(x, dtype="float32")
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

    @property
    def nbytes(self) -> int:
        """Bytes the dataset's arrays hold in memory (images and labels).

        Example:

        >>> load_bundled_dataset("digits_5_9").nbytes  # 896 images of 8x8x1 float32 + labels
        236544
        """
        return int(self.x.nbytes + self.y.nbytes)

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
    hint = f"Every digit of {digits} must be one, e.g. (5, 6, 7, 8, 9)."
    digits = tuple(check_whole_number("digit", digit, 0, 9, hint=hint) for digit in digits)
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
    num_samples_per_class = check_whole_number("num_samples_per_class", num_samples_per_class, 2)
    image_size = check_whole_number("image_size", image_size, 8)
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
