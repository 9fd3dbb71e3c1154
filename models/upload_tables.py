"""Turns an uploaded CSV table into a `TabularDataset`: numeric features and a label column."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.checks import checked_bytes, human_size
from models.datasets import check_labels

# Limits for a CSV table.
DEFAULT_MAX_CSV_BYTES = 50 * 1024 * 1024
MAX_CSV_CLASSES = 100
_CSV_DELIMITERS = ",;\t|"


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

    @property
    def nbytes(self) -> int:
        """Bytes the dataset's arrays hold in memory (features and labels)."""
        return int(self.x.nbytes + self.y.nbytes)

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
    data = checked_bytes(data, "load_csv_dataset")
    if not data.strip():
        raise ValueError(
            "The CSV file is empty. Upload a table with a header row, feature columns and a "
            "label column."
        )
    if len(data) > max_bytes:
        raise ValueError(
            f"The CSV file is {human_size(len(data))}; the limit is {human_size(max_bytes)}. "
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


def _split_columns(frame: pd.DataFrame, label_column: str | None) -> tuple[str, list[str]]:
    """`(label_column, feature_columns)`; refuses too few columns or rows, unknown labels."""
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
    return label_column, feature_columns


def _numeric_features(
    frame: pd.DataFrame, feature_columns: list[str], label_column: str
) -> pd.DataFrame:
    """The feature columns as float64 (missing values kept); refuses text and infinities."""
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
    return features


def _drop_missing_rows(
    features: pd.DataFrame, labels: pd.Series, label_column: str, notes_out: list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """`(features, labels)` without the rows that miss a value; a note says how many."""
    missing = features.isna().sum()
    missing[label_column] = int(labels.isna().sum())
    missing = missing[missing > 0]
    keep = features.notna().all(axis=1) & labels.notna()
    if keep.all():
        return features, labels
    per_column = ", ".join(f"{column!r}: {int(count)}" for column, count in missing.items())
    if not keep.any():
        raise ValueError(
            f"Every row of the CSV file has a missing value (missing per column: "
            f"{per_column}). Fill in the values or drop the empty columns."
        )
    notes_out.append(
        f"Dropped {int((~keep).sum())} of {len(features)} rows with missing values "
        f"(missing per column: {per_column})."
    )
    return features[keep], labels[keep]


def _encode_labels(labels: pd.Series, label_column: str) -> tuple[list[str], np.ndarray]:
    """`(class_names, y)`: sorted distinct labels become classes 0..K-1 (2 to 100 of them)."""
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
    return class_names, y


def _table_notes(
    features: pd.DataFrame, feature_columns: list[str], y: np.ndarray, class_names: list[str]
) -> list[str]:
    """Notes on constant columns and on classes with a single row."""
    notes = []
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
    return notes


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
    label_column, feature_columns = _split_columns(frame, label_column)
    features = _numeric_features(frame, feature_columns, label_column)
    notes: list[str] = []
    features, labels = _drop_missing_rows(features, frame[label_column], label_column, notes)
    class_names, y = _encode_labels(labels, label_column)
    x = features.to_numpy(dtype="float32")
    notes += _table_notes(features, feature_columns, y, class_names)
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
