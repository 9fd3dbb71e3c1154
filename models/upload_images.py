"""Turns an uploaded zip of class folders into an `ImageDataset`, refusing unsafe archives."""

from __future__ import annotations

import io
import re
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import numpy as np

from models.checks import checked_bytes, human_size
from models.datasets import ImageDataset
from models.validation import check_whole_number

# Limits for a zip of images (all adjustable per call).
DEFAULT_MAX_ZIP_FILES = 10_000
DEFAULT_MAX_ZIP_TOTAL_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_ZIP_RATIO = 100.0
PROGRESS_REPORTS = 50  # progress calls while decoding a zip's images, about
# Entries smaller than this are never called a zip bomb, whatever their ratio (tiny files of
# one colour compress very well).
RATIO_CHECK_MIN_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# The decoded images must fit in memory: images x size x size x 3 channels, one byte each
# (uint8; grayscale images keep 1 channel once all are read). A caller passes what the
# server can spare now as `max_dataset_bytes`.
DEFAULT_MAX_DATASET_BYTES = 512 * 1024 * 1024
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 256
# The formats keras.utils.image_dataset_from_directory accepts.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_LISTED_WARNINGS = 30
IMBALANCE_RATIO_WARNING = 3.0
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
_LAYOUT_HINT = (
    "Expected one folder per class holding its images, e.g. cats/001.png, cats/002.jpg, "
    "dogs/001.png."
)


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    class_name: str
    display_path: str


@dataclass(frozen=True)
class _Limits:
    """A zip upload's checked limits."""

    max_files: int
    max_total_bytes: int
    max_ratio: float
    max_dataset_bytes: int


# --------------------------------------------------------------------------- arguments
def largest_useful_image_size(input_shape: tuple | None) -> int | None:
    """The largest image side worth storing for a base model: its input's larger side.

    A transfer model resizes every image to its base's input size, so storing images larger
    than that only costs memory. Bases that take any size (`None` in their input shape), and
    feature-vector bases, give None: no limit.

    Args:
        input_shape: The base's input shape without the batch axis, e.g.
            `template.input_shape`: `(8, 8, 1)`, `(96, 96, 3)`, `(None, None, 3)`.

    Returns:
        `max(height, width)`, or None when unknown.

    Example:
    >>> largest_useful_image_size((8, 8, 1))
    8
    >>> largest_useful_image_size((None, None, 3)) is None
    True
    """
    if input_shape is None or len(input_shape) != 3:
        return None
    height, width = input_shape[0], input_shape[1]
    if height is None or width is None:
        return None
    return max(int(height), int(width))


def _check_zip_arguments(
    image_size: object,
    max_stored_size: object,
    max_files: object,
    max_total_bytes: object,
    max_ratio: object,
    max_dataset_bytes: object,
) -> tuple[int, _Limits]:
    """`(stored_size, limits)`, checked: the side images are stored at, and the limits."""
    image_size = check_whole_number("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    max_stored_size = check_whole_number(
        "max_stored_size",
        max_stored_size,
        1,
        allow_none=True,
        hint="Pass the base model's input size (e.g. 8 for the bundled CNN), or None.",
    )
    max_files = check_whole_number("max_files", max_files, 1)
    max_total_bytes = check_whole_number("max_total_bytes", max_total_bytes, 1)
    max_dataset_bytes = check_whole_number("max_dataset_bytes", max_dataset_bytes, 1)
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, Real) or max_ratio < 1:
        raise ValueError(f"max_ratio must be a number >= 1; received {max_ratio!r}.")
    stored_size = image_size if max_stored_size is None else min(image_size, max_stored_size)
    limits = _Limits(max_files, max_total_bytes, float(max_ratio), max_dataset_bytes)
    return stored_size, limits


def _open_zip(data: bytes, max_total_bytes: int) -> zipfile.ZipFile:
    """The upload as an open, non-empty `ZipFile` (read in memory, nothing extracted)."""
    if not data:
        raise ValueError("The upload is empty (0 bytes). Upload a zip of class folders.")
    if len(data) > max_total_bytes:
        raise ValueError(
            f"The zip is {human_size(len(data))}; the limit is {human_size(max_total_bytes)}."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"The upload is not a valid zip archive ({error}). {_LAYOUT_HINT}"
        ) from error
    if not archive.infolist():
        archive.close()
        raise ValueError(f"The zip is empty: it holds no files. {_LAYOUT_HINT}")
    return archive


# --------------------------------------------------------------------------- listing entries
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


def _check_entry_ratio(info: zipfile.ZipInfo, max_ratio: float) -> None:
    """Refuses an entry of 1 MiB or more that expands more than `max_ratio` times."""
    if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > max_ratio * max(
        info.compress_size, 1
    ):
        ratio = info.file_size / max(info.compress_size, 1)
        raise ValueError(
            f"The zip was refused as a possible zip bomb: {info.filename!r} expands from "
            f"{human_size(info.compress_size)} to {human_size(info.file_size)} (ratio "
            f"{ratio:.0f}:1, the limit is {max_ratio:g}:1). Images barely compress; "
            "upload the image files themselves."
        )


def _file_entries(
    archive: zipfile.ZipFile,
    *,
    max_files: int,
    max_total_bytes: int,
    max_ratio: float,
    warnings_out: list[str],
) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """The entries to read, with their path parts; checks paths, counts, sizes and ratios."""
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    num_hidden = 0
    declared_total = 0
    for info in archive.infolist():
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
        _check_entry_ratio(info, max_ratio)
    if declared_total > max_total_bytes:
        raise ValueError(
            f"The zip unpacks to {human_size(declared_total)}, more than the limit of "
            f"{human_size(max_total_bytes)}. Upload fewer or smaller images."
        )
    if num_hidden:
        warnings_out.append(
            f"Ignored {num_hidden} hidden or system entr{'y' if num_hidden == 1 else 'ies'} "
            "(names starting with '.', __MACOSX, Thumbs.db)."
        )
    return files


def _class_members(
    files: list[tuple[zipfile.ZipInfo, list[str]]], warnings_out: list[str]
) -> list[_Member]:
    """The files inside a class folder (one wrapping root folder is accepted)."""
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


def _count_image_files(members: list[_Member]) -> int:
    """How many members have an image file's extension (the most images there can be)."""
    return sum(member.display_path.lower().endswith(IMAGE_EXTENSIONS) for member in members)


def _check_dataset_memory(num_image_files: int, stored_size: int, max_dataset_bytes: int) -> None:
    """Refuses, before decoding, images whose uint8 arrays would not fit in the limit."""
    dataset_bytes = num_image_files * stored_size * stored_size * 3
    if dataset_bytes > max_dataset_bytes:
        raise ValueError(
            f"{num_image_files} images of {stored_size}x{stored_size} pixels would take "
            f"{human_size(dataset_bytes)} in memory; this server allows "
            f"{human_size(max_dataset_bytes)} per dataset now. Upload fewer images or "
            "choose a smaller image size."
        )


# --------------------------------------------------------------------------- reading images
def _not_an_image_note(display_path: str) -> str | None:
    """A note when the entry's extension is not an image format, else None."""
    extension = "." + display_path.rsplit(".", 1)[-1].lower()
    if "." not in display_path.rsplit("/", 1)[-1]:
        extension = "(none)"
    if extension in IMAGE_EXTENSIONS:
        return None
    return (
        f"Skipped {display_path!r}: not an image file (extension "
        f"{extension}; expected {', '.join(IMAGE_EXTENSIONS)})."
    )


def _read_entry(
    archive: zipfile.ZipFile, member: _Member, remaining: int, notes_out: list[str]
) -> bytes | None:
    """At most `remaining + 1` bytes of the entry, or None (with a note) if unreadable."""
    try:
        with archive.open(member.info) as entry:
            return entry.read(remaining + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as error:
        notes_out.append(
            f"Skipped {member.display_path!r}: it cannot be read from the zip "
            f"({type(error).__name__}: {error})."
        )
        return None


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
            # A JPEG decodes straight at a reduced scale (still at least image_size).
            image.draft(None, (image_size, image_size))
            # Grayscale stays one channel until it is stored (the same pixels, a third of
            # the work); everything else becomes RGB.
            converted = image.convert("L" if image.mode == "L" else "RGB")
    resized = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype="uint8")
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def _decode_failure_reason(error: Exception) -> str:
    """One short line on why Pillow could not decode an entry (never an object's repr)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "its content is not in an image format Pillow can read"
    text = str(error).strip()
    # Pillow names the in-memory buffer it read from, "<_io.BytesIO object at 0x...>".
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", text).strip()
    return text.splitlines()[0][:120] if text else ""


def _decoded_or_none(
    content: bytes, image_size: int, display_path: str, notes_out: list[str]
) -> np.ndarray | None:
    """The decoded uint8 RGB image, or None (with a note naming the file) if undecodable."""
    try:
        return _decode_image(content, image_size)
    except Exception as error:  # Pillow raises many types for bad files.
        reason = _decode_failure_reason(error)
        notes_out.append(
            f"Skipped {display_path!r}: it cannot be decoded as an image "
            f"({type(error).__name__}{': ' + reason if reason else ''})."
        )
        return None


def _read_images(
    archive: zipfile.ZipFile,
    members: list[_Member],
    *,
    image_size: int,
    num_image_files: int,
    max_total_bytes: int,
    notes_out: list[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """`(pixels, class_of_image)`: the decodable images as one uint8 RGB array, their classes.

    The array is allocated once for `num_image_files` images and filled as they decode (no
    list of arrays to stack); refuses more than `max_total_bytes` read.
    """
    pixels = np.empty((num_image_files, image_size, image_size, 3), dtype="uint8")
    class_of_image: list[str] = []
    bytes_read = 0
    every = max(1, -(-len(members) // PROGRESS_REPORTS))  # ceiling: at most that many calls
    for index, member in enumerate(members):
        if on_progress is not None and index % every == 0:
            on_progress(index, len(members))
        note = _not_an_image_note(member.display_path)
        if note is not None:
            notes_out.append(note)
            continue
        content = _read_entry(archive, member, max_total_bytes - bytes_read, notes_out)
        if content is None:
            continue
        bytes_read += len(content)
        if bytes_read > max_total_bytes:
            raise ValueError(
                f"The zip was refused: it unpacks to more than "
                f"{human_size(max_total_bytes)} (its headers understate the sizes). "
                "Upload fewer or smaller images."
            )
        image = _decoded_or_none(content, image_size, member.display_path, notes_out)
        if image is None:
            continue
        pixels[len(class_of_image)] = image  # a gray (h, w, 1) image fills all 3 channels
        class_of_image.append(member.class_name)
    if on_progress is not None:
        on_progress(len(members), len(members))
    if len(class_of_image) < num_image_files:  # some could not be decoded
        pixels = pixels[: len(class_of_image)].copy()
    return pixels, class_of_image


# --------------------------------------------------------------------------- the dataset
def _classes_with_images(
    members: list[_Member], class_of_image: list[str], notes_out: list[str]
) -> tuple[list[str], Counter[str]]:
    """`(class_names, counts)`: sorted classes with images; refuses fewer than 2."""
    all_classes = sorted({member.class_name for member in members})
    counts = Counter(class_of_image)
    empty_classes = [name for name in all_classes if counts[name] == 0]
    if empty_classes:
        notes_out.append(f"Ignored class folder(s) {empty_classes}: no decodable images in them.")
    class_names = [name for name in all_classes if counts[name] > 0]
    if not class_of_image:
        raise ValueError(
            f"The zip holds no decodable images ({len(members)} file(s) in class folders). "
            f"{_LAYOUT_HINT}"
        )
    if len(class_names) < 2:
        only = class_names[0]
        raise ValueError(
            f"The zip has images in only 1 class folder ({only!r}: {counts[only]} image(s)); "
            f"a classifier needs at least 2 classes. {_LAYOUT_HINT}"
        )
    return class_names, counts


def _image_arrays(
    pixels: np.ndarray, class_of_image: list[str], class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """`(x, y, is_colour)`: uint8 images (1 channel if none has colour, else 3), labels."""
    is_colour = bool(
        np.any(pixels[..., 0] != pixels[..., 1]) or np.any(pixels[..., 1] != pixels[..., 2])
    )
    x = pixels
    if not is_colour:
        x = np.ascontiguousarray(pixels[..., :1])  # a copy: the 3-channel array is freed
    label_of_class = {name: label for label, name in enumerate(class_names)}
    y = np.array([label_of_class[name] for name in class_of_image], dtype="int64")
    return x, y, is_colour


def _imbalance_notes(class_names: list[str], counts: Counter[str]) -> list[str]:
    """A note when the largest class has `IMBALANCE_RATIO_WARNING` times the smallest's images."""
    largest = max(counts[name] for name in class_names)
    smallest = min(counts[name] for name in class_names)
    if largest < IMBALANCE_RATIO_WARNING * smallest:
        return []
    most = max(class_names, key=lambda name: counts[name])
    least = min(class_names, key=lambda name: counts[name])
    return [
        f"The classes are imbalanced: {most!r} has {largest} images, {least!r} only "
        f"{smallest}. Accuracy can look good by favouring the large class; add images to "
        "the small ones if you can."
    ]


def _limit_warnings(messages: list[str]) -> list[str]:
    if len(messages) <= MAX_LISTED_WARNINGS:
        return messages
    hidden = len(messages) - MAX_LISTED_WARNINGS
    return [*messages[:MAX_LISTED_WARNINGS], f"... and {hidden} more skipped or ignored entries."]


def load_image_zip(
    data: bytes,
    *,
    image_size: int = 64,
    max_stored_size: int | None = None,
    max_files: int = DEFAULT_MAX_ZIP_FILES,
    max_total_bytes: int = DEFAULT_MAX_ZIP_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_ZIP_RATIO,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    filename: str = "images.zip",
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[ImageDataset, list[str]]:
    """Reads a zip of class folders (`class_name/*.png|jpg`) into a uint8 `ImageDataset`.

    Nothing is extracted to disk: entries are read in memory with `zipfile`. The zip is
    refused (ValueError) when an entry has an absolute path or a `..` component, when it
    holds more than `max_files` files, when the declared or the actually read uncompressed
    size exceeds `max_total_bytes`, or when an entry of 1 MiB or more expands more than
    `max_ratio` times (a zip bomb). Directories, symbolic links, encrypted entries, hidden
    files and `__MACOSX` are ignored. Class names are the top-level folder names, sorted (a
    single folder wrapping them all is accepted). Files that are not images, or that Pillow
    cannot decode, are skipped and reported by name.

    Images are converted to RGB and resized (bilinear, antialiased when shrinking, aspect
    ratio not kept, like Keras's `image_dataset_from_directory`) straight to the stored
    size, `min(image_size, max_stored_size)`: a model resizes its input to its base's size
    anyway, so larger images would only cost memory. They are kept as uint8 pixels 0..255
    (a quarter of float32's memory; the model scales each batch, see
    `build_transfer_model(..., input_dtype="uint8")`); if no image has colour (all
    grayscale), the dataset has 1 channel, else 3. Before any image is decoded, the zip is
    refused when `images x size x size x 3` bytes would exceed `max_dataset_bytes`.

    Args:
        data: The zip file's bytes.
        image_size: The side the user asked for, 8 to 256.
        max_stored_size: The largest side worth storing, e.g. the base model's input size
            (`largest_useful_image_size(template.input_shape)`); None stores `image_size`.
        max_files: Most files (not counting directories and ignored entries).
        max_total_bytes: Most uncompressed bytes, declared and read.
        max_ratio: Largest expansion ratio of an entry of 1 MiB or more.
        max_dataset_bytes: Most bytes the decoded images may take in memory (what the server
            can spare for one dataset now).
        filename: The upload's name, for titles.
        on_progress: Called as `on_progress(files_read, files_total)` about
            `PROGRESS_REPORTS` times while images are decoded (a page shows a progress bar).

    Returns:
        `(dataset, warnings)`: the `ImageDataset` (uint8 x of shape `(N, size, size, 1 or 3)`)
        and human-readable notes about skipped or ignored entries and class imbalance.

    Raises:
        ValueError: For an unsafe, empty, unusable or too large zip, or fewer than 2 classes
            with images.

    Example:
    >>> dataset, notes = load_image_zip(
    ...     Path("digits.zip").read_bytes(), image_size=64, max_stored_size=8)
    >>> dataset.x.dtype, dataset.input_shape, dataset.nbytes
    (dtype('uint8'), (8, 8, 1), 720000)
    """
    data = checked_bytes(data, "load_image_zip")
    stored_size, limits = _check_zip_arguments(
        image_size, max_stored_size, max_files, max_total_bytes, max_ratio, max_dataset_bytes
    )
    notes: list[str] = []
    with _open_zip(data, limits.max_total_bytes) as archive:
        files = _file_entries(
            archive,
            max_files=limits.max_files,
            max_total_bytes=limits.max_total_bytes,
            max_ratio=limits.max_ratio,
            warnings_out=notes,
        )
        members = _class_members(files, notes)
        num_image_files = _count_image_files(members)
        _check_dataset_memory(num_image_files, stored_size, limits.max_dataset_bytes)
        pixels, class_of_image = _read_images(
            archive,
            members,
            image_size=stored_size,
            num_image_files=num_image_files,
            max_total_bytes=limits.max_total_bytes,
            notes_out=notes,
            on_progress=on_progress,
        )

    class_names, counts = _classes_with_images(members, class_of_image, notes)
    x, y, is_colour = _image_arrays(pixels, class_of_image, class_names)
    del pixels
    notes += _imbalance_notes(class_names, counts)
    display = str(filename).replace("\\", "/").rsplit("/", 1)[-1][:100] or "images.zip"
    size_text = f"resized to {stored_size}x{stored_size}"
    if stored_size < image_size:
        size_text += f" (the model's input size; {image_size}x{image_size} was asked)"
    dataset = ImageDataset(
        name="uploaded_images",
        title=f"Uploaded images: {display} ({len(class_names)} classes)",
        description=(
            f"{len(y)} images from {display} in {len(class_names)} classes "
            f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}), "
            f"{size_text}, {'RGB' if is_colour else 'grayscale'}, stored as uint8 pixels "
            "0..255."
        ),
        x=x,
        y=y,
        class_names=tuple(class_names),
    )
    return dataset, _limit_warnings(notes)
