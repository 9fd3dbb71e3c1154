"""Turns a user's uploaded data into datasets: a zip of class folders, or a CSV table."""

from __future__ import annotations

import csv
import io
import math
import re
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import keras
import numpy as np
import pandas as pd

from models.datasets import ImageDataset, check_labels
from models.workspace import ModelTemplate

# Limits for a zip of images (all adjustable per call).
DEFAULT_MAX_ZIP_FILES = 10_000
DEFAULT_MAX_ZIP_TOTAL_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_ZIP_RATIO = 100.0
# Entries smaller than this are never called a zip bomb, whatever their ratio (tiny files of
# one colour compress very well).
RATIO_CHECK_MIN_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# The float32 images must fit in memory: images x size x size x 3 channels x 4 bytes.
DEFAULT_MAX_DATASET_BYTES = 1024 * 1024 * 1024
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 256
# The formats keras.utils.image_dataset_from_directory accepts.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_LISTED_WARNINGS = 30
IMBALANCE_RATIO_WARNING = 3.0
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})

# Limits for a CSV table.
DEFAULT_MAX_CSV_BYTES = 50 * 1024 * 1024
MAX_CSV_CLASSES = 100
_CSV_DELIMITERS = ",;\t|"


def _human_size(num_bytes: float) -> str:
    if num_bytes >= 1024 * 1024:
        return f"{num_bytes / (1024 * 1024):.2f} MiB"
    return f"{int(num_bytes):,} bytes"


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} expects the file's bytes; received {type(data).__name__}.")
    return bytes(data)


def _positive_int(name: str, value: object, low: int, high: int | None = None) -> int:
    too_high = high is not None and isinstance(value, Integral) and value > high
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or too_high:
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be an integer >= {low}{upper}; received {value!r}.")
    return int(value)


# --------------------------------------------------------------------------- zip of images
@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    class_name: str
    display_path: str


def _check_member_path(name: str) -> list[str]:
    """The entry's path parts; refuses absolute paths and '..' components."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise ValueError(
            f"The zip was refused: entry {name!r} has an absolute path. A zip of class "
            "folders must hold relative paths like 'cats/001.png'; re-create it from the "
            "folders themselves."
        )
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(
            f"The zip was refused: entry {name!r} points outside the archive ('..' in its "
            "path, a path traversal). Re-create the zip from the class folders themselves."
        )
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_hidden(parts: list[str]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts) or (
        bool(parts) and parts[-1].lower() in _SYSTEM_FILES
    )


def _list_members(
    archive: zipfile.ZipFile,
    *,
    max_files: int,
    max_total_bytes: int,
    max_ratio: float,
    warnings_out: list[str],
) -> list[_Member]:
    infos = archive.infolist()
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    num_hidden = 0
    declared_total = 0
    for info in infos:
        parts = _check_member_path(info.filename)
        if info.is_dir() or not parts:
            continue
        if _is_symlink(info):
            warnings_out.append(f"Ignored {info.filename!r}: it is a symbolic link.")
            continue
        if _is_hidden(parts):
            num_hidden += 1
            continue
        if info.flag_bits & 0x1:
            warnings_out.append(f"Ignored {info.filename!r}: it is encrypted.")
            continue
        files.append((info, parts))
        if len(files) > max_files:
            raise ValueError(
                f"The zip holds more than {max_files} files; the limit is {max_files}. "
                "Upload fewer images (e.g. a subset of each class)."
            )
        declared_total += info.file_size
        if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > max_ratio * max(
            info.compress_size, 1
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            raise ValueError(
                f"The zip was refused as a possible zip bomb: {info.filename!r} expands from "
                f"{_human_size(info.compress_size)} to {_human_size(info.file_size)} (ratio "
                f"{ratio:.0f}:1, the limit is {max_ratio:g}:1). Images barely compress; "
                "upload the image files themselves."
            )
    if declared_total > max_total_bytes:
        raise ValueError(
            f"The zip unpacks to {_human_size(declared_total)}, more than the limit of "
            f"{_human_size(max_total_bytes)}. Upload fewer or smaller images."
        )
    if num_hidden:
        warnings_out.append(
            f"Ignored {num_hidden} hidden or system entr{'y' if num_hidden == 1 else 'ies'} "
            "(names starting with '.', __MACOSX, Thumbs.db)."
        )
    if not files:
        return []

    # Accept one wrapping root folder: root/cats/1.png, root/dogs/2.png.
    first_parts = {parts[0] for _, parts in files}
    if len(first_parts) == 1 and all(len(parts) >= 3 for _, parts in files):
        files = [(info, parts[1:]) for info, parts in files]

    members = []
    for info, parts in files:
        if len(parts) < 2:
            warnings_out.append(
                f"Skipped {info.filename!r}: it is not inside a class folder (expected "
                "class_name/image.png)."
            )
            continue
        members.append(_Member(info, parts[0], info.filename))
    return members


def _decode_image(content: bytes, image_size: int) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{width}x{height} pixels is more than the {MAX_IMAGE_PIXELS:,} allowed"
                )
            rgb = image.convert("RGB")
    resized = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype="uint8")


def _decode_failure_reason(error: Exception) -> str:
    """One short line on why Pillow could not decode an entry (never an object's repr)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "its content is not in an image format Pillow can read"
    text = str(error).strip()
    # Pillow names the in-memory buffer it read from, "<_io.BytesIO object at 0x...>".
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", text).strip()
    return text.splitlines()[0][:120] if text else ""


def _limit_warnings(messages: list[str]) -> list[str]:
    if len(messages) <= MAX_LISTED_WARNINGS:
        return messages
    hidden = len(messages) - MAX_LISTED_WARNINGS
    return [*messages[:MAX_LISTED_WARNINGS], f"... and {hidden} more skipped or ignored entries."]


def load_image_zip(
    data: bytes,
    *,
    image_size: int = 64,
    max_files: int = DEFAULT_MAX_ZIP_FILES,
    max_total_bytes: int = DEFAULT_MAX_ZIP_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_ZIP_RATIO,
    filename: str = "images.zip",
) -> tuple[ImageDataset, list[str]]:
    """Reads a zip of class folders (`class_name/*.png|jpg`) into an `ImageDataset`.

    Nothing is extracted to disk: entries are read in memory with `zipfile`. The zip is
    refused (ValueError) when an entry has an absolute path or a `..` component, when it
    holds more than `max_files` files, when the declared or the actually read uncompressed
    size exceeds `max_total_bytes`, or when an entry of 1 MiB or more expands more than
    `max_ratio` times (a zip bomb). Directories, symbolic links, encrypted entries, hidden
    files and `__MACOSX` are ignored. Class names are the top-level folder names, sorted (a
    single folder wrapping them all is accepted). Files that are not images, or that Pillow
    cannot decode, are skipped and reported by name. Images are converted to RGB, resized to
    `image_size` x `image_size` (bilinear, aspect ratio not kept, like Keras's
    `image_dataset_from_directory`) and scaled to [0, 1]; if no image has colour (all
    grayscale), the dataset has 1 channel, else 3. The float32 images may take at most
    `DEFAULT_MAX_DATASET_BYTES` (1 GiB) of memory.

    Args:
        data: The zip file's bytes.
        image_size: Height and width of the output images, 8 to 256.
        max_files: Most files (not counting directories and ignored entries).
        max_total_bytes: Most uncompressed bytes, declared and read.
        max_ratio: Largest expansion ratio of an entry of 1 MiB or more.
        filename: The upload's name, for titles.

    Returns:
        `(dataset, warnings)`: the `ImageDataset` and human-readable notes about skipped or
        ignored entries and class imbalance.

    Raises:
        ValueError: For an unsafe, empty or unusable zip, or fewer than 2 classes with images.

    Example:
    >>> dataset, notes = load_image_zip(Path("pets.zip").read_bytes(), image_size=32)
    >>> dataset.class_counts()
    """
    data = _as_bytes(data, "load_image_zip")
    image_size = _positive_int("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    max_files = _positive_int("max_files", max_files, 1)
    max_total_bytes = _positive_int("max_total_bytes", max_total_bytes, 1)
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, Real) or max_ratio < 1:
        raise ValueError(f"max_ratio must be a number >= 1; received {max_ratio!r}.")
    if not data:
        raise ValueError("The upload is empty (0 bytes). Upload a zip of class folders.")
    if len(data) > max_total_bytes:
        raise ValueError(
            f"The zip is {_human_size(len(data))}; the limit is {_human_size(max_total_bytes)}."
        )
    layout_hint = (
        "Expected one folder per class holding its images, e.g. cats/001.png, cats/002.jpg, "
        "dogs/001.png."
    )
    notes: list[str] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"The upload is not a valid zip archive ({error}). {layout_hint}"
        ) from error

    with archive:
        if not archive.infolist():
            raise ValueError(f"The zip is empty: it holds no files. {layout_hint}")
        members = _list_members(
            archive,
            max_files=max_files,
            max_total_bytes=max_total_bytes,
            max_ratio=float(max_ratio),
            warnings_out=notes,
        )
        num_image_files = sum(
            member.display_path.lower().endswith(IMAGE_EXTENSIONS) for member in members
        )
        dataset_bytes = num_image_files * image_size * image_size * 3 * 4
        if dataset_bytes > DEFAULT_MAX_DATASET_BYTES:
            raise ValueError(
                f"{num_image_files} images of {image_size}x{image_size} pixels would take "
                f"{_human_size(dataset_bytes)} of memory, more than the "
                f"{_human_size(DEFAULT_MAX_DATASET_BYTES)} allowed. Choose a smaller image "
                "size or upload fewer images."
            )
        images: list[np.ndarray] = []
        class_of_image: list[str] = []
        bytes_read = 0
        for member in members:
            extension = "." + member.display_path.rsplit(".", 1)[-1].lower()
            if "." not in member.display_path.rsplit("/", 1)[-1]:
                extension = "(none)"
            if extension not in IMAGE_EXTENSIONS:
                notes.append(
                    f"Skipped {member.display_path!r}: not an image file (extension "
                    f"{extension}; expected {', '.join(IMAGE_EXTENSIONS)})."
                )
                continue
            remaining = max_total_bytes - bytes_read
            try:
                with archive.open(member.info) as entry:
                    content = entry.read(remaining + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as error:
                notes.append(
                    f"Skipped {member.display_path!r}: it cannot be read from the zip "
                    f"({type(error).__name__}: {error})."
                )
                continue
            bytes_read += len(content)
            if bytes_read > max_total_bytes:
                raise ValueError(
                    f"The zip was refused: it unpacks to more than "
                    f"{_human_size(max_total_bytes)} (its headers understate the sizes). "
                    "Upload fewer or smaller images."
                )
            try:
                images.append(_decode_image(content, image_size))
            except Exception as error:  # Pillow raises many types for bad files.
                reason = _decode_failure_reason(error)
                notes.append(
                    f"Skipped {member.display_path!r}: it cannot be decoded as an image "
                    f"({type(error).__name__}{': ' + reason if reason else ''})."
                )
                continue
            class_of_image.append(member.class_name)

    all_classes = sorted({member.class_name for member in members})
    counts = Counter(class_of_image)
    empty_classes = [name for name in all_classes if counts[name] == 0]
    if empty_classes:
        notes.append(f"Ignored class folder(s) {empty_classes}: no decodable images in them.")
    class_names = [name for name in all_classes if counts[name] > 0]
    if not images:
        raise ValueError(
            f"The zip holds no decodable images ({len(members)} file(s) in class folders). "
            f"{layout_hint}"
        )
    if len(class_names) < 2:
        only = class_names[0]
        raise ValueError(
            f"The zip has images in only 1 class folder ({only!r}: {counts[only]} image(s)); "
            f"a classifier needs at least 2 classes. {layout_hint}"
        )

    stacked = np.stack(images)
    is_colour = bool(
        np.any(stacked[..., 0] != stacked[..., 1]) or np.any(stacked[..., 1] != stacked[..., 2])
    )
    x = stacked.astype("float32") / 255.0
    if not is_colour:
        x = x[..., :1]
    label_of_class = {name: label for label, name in enumerate(class_names)}
    y = np.array([label_of_class[name] for name in class_of_image], dtype="int64")

    largest = max(counts[name] for name in class_names)
    smallest = min(counts[name] for name in class_names)
    if largest >= IMBALANCE_RATIO_WARNING * smallest:
        most = max(class_names, key=lambda name: counts[name])
        least = min(class_names, key=lambda name: counts[name])
        notes.append(
            f"The classes are imbalanced: {most!r} has {largest} images, {least!r} only "
            f"{smallest}. Accuracy can look good by favouring the large class; add images to "
            "the small ones if you can."
        )
    display = str(filename).replace("\\", "/").rsplit("/", 1)[-1][:100] or "images.zip"
    colour_text = "RGB" if is_colour else "grayscale"
    dataset = ImageDataset(
        name="uploaded_images",
        title=f"Uploaded images: {display} ({len(class_names)} classes)",
        description=(
            f"{len(y)} images from {display} in {len(class_names)} classes "
            f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}), "
            f"resized to {image_size}x{image_size}, {colour_text}, scaled to [0, 1]."
        ),
        x=x,
        y=y,
        class_names=tuple(class_names),
    )
    return dataset, _limit_warnings(notes)


# --------------------------------------------------------------------------- CSV tables
@dataclass(frozen=True, eq=False)
class TabularDataset:
    """An in-memory classification dataset of feature vectors (from a CSV table).

    Like `ImageDataset`, the arrays are read-only so one loaded dataset can be shared.

    Args:
        name: Short key, e.g. `"uploaded_csv"`.
        title: Human-readable title.
        description: One or two sentences describing the data.
        x: float32 features of shape `(num_samples, num_features)`, as in the file.
        y: int64 labels of shape `(num_samples,)`, values `0..num_classes - 1`.
        class_names: One name per class, in label order.
        feature_names: One name per feature column, in column order.

    Example:
    >>> dataset, notes = load_csv_dataset(b"a,b,label\\n1,2,x\\n3,4,y\\n", "label")
    >>> dataset.input_shape, dataset.class_names
    ((2,), ('x', 'y'))
    """

    name: str
    title: str
    description: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype="float32")
        y = np.asarray(self.y, dtype="int64")
        class_names = tuple(str(name) for name in self.class_names)
        feature_names = tuple(str(name) for name in self.feature_names)
        if x.ndim != 2:
            raise ValueError(
                f"TabularDataset '{self.name}' expects x of shape (num_samples, num_features); "
                f"received an array of shape {x.shape}."
            )
        if len(feature_names) != x.shape[1]:
            raise ValueError(
                f"TabularDataset '{self.name}' expects {x.shape[1]} feature names (one per "
                f"column of x); received {len(feature_names)}."
            )
        check_labels("TabularDataset", self.name, x, y, class_names)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "class_names", class_names)
        object.__setattr__(self, "feature_names", feature_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        """Number of feature columns."""
        return int(self.x.shape[1])

    @property
    def input_shape(self) -> tuple[int]:
        """Shape of one sample, `(num_features,)`."""
        return (self.num_features,)

    @property
    def num_samples(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])

    def class_counts(self) -> pd.Series:
        """Counts the rows of each class (a Series indexed by class name, zeros included)."""
        counts = np.bincount(self.y, minlength=self.num_classes)
        return pd.Series(
            counts.astype("int64"),
            index=pd.Index(self.class_names, name="class"),
            name="num_samples",
        )

    def feature_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and variance (variance 1 for constant columns), for standardising.

        Returns:
            `(mean, variance)`, float32 arrays of shape `(num_features,)`.
        """
        mean = self.x.mean(axis=0, dtype="float64")
        variance = self.x.var(axis=0, dtype="float64")
        variance = np.where(variance > 0, variance, 1.0)
        return mean.astype("float32"), variance.astype("float32")


def _read_table(data: bytes, max_bytes: int, *, nrows: int | None = None) -> pd.DataFrame:
    data = _as_bytes(data, "load_csv_dataset")
    if not data.strip():
        raise ValueError(
            "The CSV file is empty. Upload a table with a header row, feature columns and a "
            "label column."
        )
    if len(data) > max_bytes:
        raise ValueError(
            f"The CSV file is {_human_size(len(data))}; the limit is {_human_size(max_bytes)}. "
            "Upload fewer rows."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The CSV file is not UTF-8 text (byte {error.start} cannot be decoded). Save it "
            "as 'CSV UTF-8' and upload it again."
        ) from error
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=_CSV_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"The CSV file cannot be parsed ({first_line}). Expected a header row and the "
            "same number of comma-separated values in every row."
        ) from error
    columns = [str(column) for column in frame.columns]
    mangled = [column for column in columns if re.search(r"\.\d+$", column)]
    duplicates = [column for column in mangled if column.rsplit(".", 1)[0] in columns]
    if duplicates:
        raise ValueError(
            f"The CSV header repeats column names (pandas renamed them {duplicates}). Give "
            "every column a unique name."
        )
    frame.columns = columns
    return frame


def csv_columns(data: bytes, *, max_bytes: int = DEFAULT_MAX_CSV_BYTES) -> list[str]:
    """The column names of a CSV file, for the label picker.

    Args:
        data: The CSV file's bytes (UTF-8, with a header row).
        max_bytes: Largest accepted file.

    Returns:
        Column names in file order.

    Example:
    >>> csv_columns(b"height,weight,species\\n1,2,cat\\n")
    ['height', 'weight', 'species']
    """
    return list(_read_table(data, max_bytes, nrows=0).columns)


def _label_text(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def load_csv_dataset(
    data: bytes,
    label_column: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_CSV_BYTES,
    filename: str = "table.csv",
) -> tuple[TabularDataset, list[str]]:
    """Reads a CSV table into a `TabularDataset`: numeric features plus a label column.

    The delimiter (`,`, `;`, tab or `|`) is detected. Every column except the label is a
    feature and must be numeric: a column holding text is refused with its name, how many
    values are not numbers and a sample (row numbers count the header as row 1). Rows with
    missing values are dropped, and the notes say how many were missing in each column (the
    load fails only if no row is left). Labels may be text or numbers; their sorted distinct
    values become classes `0..K-1` (2 to 100 classes). Features are kept as they are in the
    file: `dense_base_for_features` standardises them inside the model.

    Args:
        data: The CSV file's bytes (UTF-8, with a header row).
        label_column: The column holding the class; None for the last column.
        max_bytes: Largest accepted file.
        filename: The upload's name, for titles.

    Returns:
        `(dataset, notes)`: the `TabularDataset` and human-readable notes (dropped rows,
        constant columns, rare classes).

    Raises:
        ValueError: For an empty or unparsable file, an unknown label column, text in a
            feature column, infinite values, fewer than 2 or more than 100 labels.

    Example:
    >>> dataset, notes = load_csv_dataset(Path("iris.csv").read_bytes(), "species")
    """
    frame = _read_table(data, max_bytes)
    columns = list(frame.columns)
    if len(columns) < 2:
        raise ValueError(
            f"The CSV file has {len(columns)} column ({columns}); it needs at least one "
            "feature column and a label column. Check the delimiter and the header row."
        )
    if label_column is None:
        label_column = columns[-1]
    if label_column not in columns:
        raise ValueError(
            f"The CSV file has no column {label_column!r}; its columns are {columns}. Pick "
            "the label column from these."
        )
    feature_columns = [column for column in columns if column != label_column]
    if len(frame) < 2:
        raise ValueError(
            f"The CSV file has {len(frame)} data row(s); a classifier needs at least 2 "
            "(and at least one per class)."
        )

    non_numeric = []
    numeric = {}
    for column in feature_columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            non_numeric.append(
                f"{column!r} ({int(bad.sum())} value(s), e.g. {frame[column].iloc[first]!r} "
                f"in row {first + 2})"
            )
        numeric[column] = values.astype("float64")
    if non_numeric:
        raise ValueError(
            f"Feature columns must hold numbers; these hold text: {', '.join(non_numeric)}. "
            f"Choose such a column as the label column (now {label_column!r}), or remove or "
            "encode it (e.g. one-hot) before uploading."
        )
    features = pd.DataFrame(numeric, index=frame.index)
    infinite = [column for column in feature_columns if np.isinf(features[column]).any()]
    if infinite:
        raise ValueError(
            f"Feature columns {infinite} hold infinite values; replace them with finite "
            "numbers before uploading."
        )

    notes: list[str] = []
    labels = frame[label_column]
    missing = features.isna().sum()
    missing[label_column] = int(labels.isna().sum())
    missing = missing[missing > 0]
    keep = features.notna().all(axis=1) & labels.notna()
    if not keep.all():
        per_column = ", ".join(f"{column!r}: {int(count)}" for column, count in missing.items())
        if not keep.any():
            raise ValueError(
                f"Every row of the CSV file has a missing value (missing per column: "
                f"{per_column}). Fill in the values or drop the empty columns."
            )
        notes.append(
            f"Dropped {int((~keep).sum())} of {len(frame)} rows with missing values "
            f"(missing per column: {per_column})."
        )
        features = features[keep]
        labels = labels[keep]

    distinct = sorted(labels.unique(), key=lambda value: (str(type(value)), value))
    if len(distinct) < 2:
        raise ValueError(
            f"The label column {label_column!r} holds only one value "
            f"({_label_text(distinct[0])!r}); a classifier needs at least 2 classes. Pick "
            "another label column or add rows of other classes."
        )
    if len(distinct) > MAX_CSV_CLASSES:
        raise ValueError(
            f"The label column {label_column!r} holds {len(distinct)} distinct values; "
            f"FreezeLab classifies into at most {MAX_CSV_CLASSES} classes. Is it a "
            "continuous measurement? Pick the column that holds the class."
        )
    class_names = [_label_text(value) for value in distinct]
    if len(set(class_names)) != len(class_names):
        class_names = [f"{value!r}" for value in distinct]
    label_of_value = {value: label for label, value in enumerate(distinct)}
    y = labels.map(label_of_value).to_numpy(dtype="int64")
    x = features.to_numpy(dtype="float32")

    constant = [column for column in feature_columns if features[column].nunique() <= 1]
    if constant:
        notes.append(f"Column(s) {constant} hold a single value and carry no information.")
    counts = np.bincount(y, minlength=len(class_names))
    rare = [class_names[label] for label in np.flatnonzero(counts < 2)]
    if rare:
        notes.append(
            f"Class(es) {rare} have a single row; a stratified validation split needs at "
            "least 2 per class (or use no validation)."
        )
    display = str(filename).replace("\\", "/").rsplit("/", 1)[-1][:100] or "table.csv"
    dataset = TabularDataset(
        name="uploaded_csv",
        title=f"Uploaded table: {display} ({len(class_names)} classes)",
        description=(
            f"{len(y)} rows from {display}: {len(feature_columns)} numeric feature column(s) "
            f"and the label column {label_column!r} with {len(class_names)} classes."
        ),
        x=x,
        y=y,
        class_names=tuple(class_names),
        feature_names=tuple(feature_columns),
    )
    return dataset, notes


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
    num_features = _positive_int("num_features", num_features, 1)
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
    units = [_positive_int("hidden_units", value, 1) for value in hidden_units]
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
        key=f"dense_base:{dataset.num_features}",
        title="Dense base · not pretrained (random initialisation)",
        description=(
            f"Two Dense + BatchNormalization + ReLU blocks for {dataset.num_features} "
            "features, standardised inside the model with the table's mean and variance. Not "
            "pretrained (random initialisation): freezing it transfers nothing learned."
        ),
        pretrained=False,
    )


# --------------------------------------------------------------------------- batch size
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
    num_samples = _positive_int("num_samples", num_samples, 0)
    batch_size = _positive_int("batch_size", batch_size, 1)
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
