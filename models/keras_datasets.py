"""keras.datasets (MNIST, Fashion-MNIST, CIFAR-10) from the Keras cache, downloaded if missing."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from models.applications import keras_cache_dir
from models.datasets import ImageDataset
from models.download import DownloadError, ProgressCallback, download_file
from models.validation import check_whole_number

DATASETS_SUBDIR = "datasets"
FASHION_MNIST_FOLDER = "fashion-mnist"
CIFAR10_FOLDERS: tuple[str, ...] = (
    "cifar-10-batches-py-target/cifar-10-batches-py",  # Keras 3 (extract=True target)
    "cifar-10-batches-py",  # Keras 2 and a hand-extracted archive
)
CIFAR10_ARCHIVES: tuple[str, ...] = ("cifar-10-batches-py-target_archive", "cifar-10-python.tar.gz")
_TF_KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class DatasetDownload:
    """One file `keras.datasets.<name>.load_data()` downloads, as FreezeLab downloads it.

    Attributes:
        url: Where Keras downloads it from.
        file: Where Keras keeps it, relative to `<cache>/datasets`.
        file_hash: The sha256 Keras checks (None: Keras checks none).
    """

    url: str
    file: str
    file_hash: str | None = None


@dataclass(frozen=True)
class KerasDatasetEntry:
    """One keras.datasets dataset FreezeLab offers (its training split).

    Attributes:
        key: The keras.datasets module name, e.g. "fashion_mnist".
        title: Human name.
        description: One or two sentences.
        files: The files Keras keeps in `<cache>/datasets`, relative to it.
        downloads: The files of the training split Keras downloads (same URLs, same places
            in the cache, same hashes); `urls` lists their URLs.
        class_names: Class names in label order.
        image_shape: Shape of one image, `(height, width, channels)`.
        num_train_samples: Images in the full training split.
    """

    key: str
    title: str
    description: str
    files: tuple[str, ...]
    downloads: tuple[DatasetDownload, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_train_samples: int

    @property
    def urls(self) -> tuple[str, ...]:
        """Where Keras downloads the training split's files from."""
        return tuple(download.url for download in self.downloads)


_ENTRIES = (
    KerasDatasetEntry(
        key="mnist",
        title="MNIST digits",
        description="28x28 grayscale handwritten digits 0-9 (60,000 training images).",
        files=("mnist.npz",),
        downloads=(
            DatasetDownload(
                _TF_KERAS_DATASETS_URL + "mnist.npz",
                "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
            ),
        ),
        class_names=tuple(str(digit) for digit in range(10)),
        image_shape=(28, 28, 1),
        num_train_samples=60_000,
    ),
    KerasDatasetEntry(
        key="fashion_mnist",
        title="Fashion-MNIST",
        description=(
            "28x28 grayscale images of 10 kinds of clothing from Zalando (60,000 training images)."
        ),
        files=(
            f"{FASHION_MNIST_FOLDER}/train-labels-idx1-ubyte.gz",
            f"{FASHION_MNIST_FOLDER}/train-images-idx3-ubyte.gz",
        ),
        downloads=tuple(
            DatasetDownload(_TF_KERAS_DATASETS_URL + name, f"{FASHION_MNIST_FOLDER}/{name}")
            for name in ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")
        ),
        class_names=_FASHION_CLASSES,
        image_shape=(28, 28, 1),
        num_train_samples=60_000,
    ),
    KerasDatasetEntry(
        key="cifar10",
        title="CIFAR-10",
        description=(
            "32x32 colour photos of 10 classes (airplane, automobile, bird, cat, deer, dog, "
            "frog, horse, ship, truck; 50,000 training images)."
        ),
        files=tuple(f"{CIFAR10_FOLDERS[0]}/data_batch_{index}" for index in range(1, 6)),
        downloads=(
            DatasetDownload(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                CIFAR10_ARCHIVES[0],  # read without extracting it (see _load_cifar10)
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
        class_names=_CIFAR10_CLASSES,
        image_shape=(32, 32, 3),
        num_train_samples=50_000,
    ),
)

KERAS_DATASET_ENTRIES: Mapping[str, KerasDatasetEntry] = MappingProxyType(
    {entry.key: entry for entry in _ENTRIES}
)
KERAS_DATASETS: Mapping[str, str] = MappingProxyType({entry.key: entry.title for entry in _ENTRIES})


class DatasetUnavailableError(ValueError):
    """A keras.datasets dataset is neither in the Keras cache nor downloadable.

    Attributes:
        key: The dataset key.
        folder: The folder its files belong in (`<Keras cache>/datasets`).
        files: The files expected there.
    """

    def __init__(self, message: str, *, key: str, folder: Path, files: tuple[str, ...]):
        super().__init__(message)
        self.key = key
        self.folder = folder
        self.files = files


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold: dicts, lists, bytes and NumPy arrays.

    The same globals as Keras's own loader allows, plus `_codecs.encode`, which protocol-2
    pickles written by Python 3 use for bytes (a pure function: it runs no other code).
    """

    _ALLOWED = frozenset(
        {
            ("_codecs", "encode"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to load {module}.{name} from a CIFAR batch file: the file may be "
            "damaged or malicious."
        )


def _get_entry(name: str) -> KerasDatasetEntry:
    if name not in KERAS_DATASET_ENTRIES:
        raise ValueError(
            f"Unknown keras.datasets dataset {name!r}. Expected one of "
            f"{list(KERAS_DATASET_ENTRIES)}."
        )
    return KERAS_DATASET_ENTRIES[name]


def keras_dataset_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where Keras keeps downloaded datasets: `<Keras cache>/datasets`.

    Args:
        cache_dir: The Keras cache folder; None for `$KERAS_HOME` or `~/.keras`.

    Returns:
        The folder (it may not exist).

    Example:
    >>> keras_dataset_folder("/data/keras")
    PosixPath('/data/keras/datasets')
    """
    return keras_cache_dir(cache_dir) / DATASETS_SUBDIR


def _load_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = folder / "mnist.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return np.asarray(arrays["x_train"]), np.asarray(arrays["y_train"])


def _load_fashion_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    labels_path = folder / FASHION_MNIST_FOLDER / "train-labels-idx1-ubyte.gz"
    images_path = folder / FASHION_MNIST_FOLDER / "train-images-idx3-ubyte.gz"
    if not (labels_path.is_file() and images_path.is_file()):
        return None
    with gzip.open(labels_path, "rb") as labels_file:
        y = np.frombuffer(labels_file.read(), np.uint8, offset=8)
    with gzip.open(images_path, "rb") as images_file:
        x = np.frombuffer(images_file.read(), np.uint8, offset=16).reshape(len(y), 28, 28)
    return x, y


def _cifar_batch(file: Any) -> tuple[np.ndarray, np.ndarray]:
    batch = _RestrictedUnpickler(file, encoding="bytes").load()
    batch = {
        (key.decode("utf8") if isinstance(key, bytes) else key): value
        for key, value in batch.items()
    }
    data = np.asarray(batch["data"], dtype="uint8").reshape(-1, 3, 32, 32)
    labels = np.asarray(batch["labels"], dtype="uint8")
    return data.transpose(0, 2, 3, 1), labels


def _load_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    batch_names = [f"data_batch_{index}" for index in range(1, 6)]
    for subfolder in CIFAR10_FOLDERS:
        batch_folder = folder / subfolder
        if all((batch_folder / name).is_file() for name in batch_names):
            parts = []
            for name in batch_names:
                with (batch_folder / name).open("rb") as batch_file:
                    parts.append(_cifar_batch(batch_file))
            return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    for archive_name in CIFAR10_ARCHIVES:
        archive_path = folder / archive_name
        if not archive_path.is_file():
            continue
        with tarfile.open(archive_path, "r:*") as archive:
            members = {
                member.name.rsplit("/", 1)[-1]: member
                for member in archive.getmembers()
                if member.isfile() and member.name.rsplit("/", 1)[-1] in batch_names
            }
            if len(members) != len(batch_names):
                continue
            parts = []
            for name in batch_names:
                batch_file = archive.extractfile(members[name])
                if batch_file is None:
                    break
                parts.append(_cifar_batch(batch_file))
            if len(parts) == len(batch_names):
                return (
                    np.concatenate([x for x, _ in parts]),
                    np.concatenate([y for _, y in parts]),
                )
    return None


_CACHE_LOADERS = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
}


def _download_missing(
    entry: KerasDatasetEntry, folder: Path, on_progress: ProgressCallback | None
) -> None:
    """Downloads the entry's files that are not in `folder`, reporting one running total.

    The total is only known (not None) while the last file downloads.
    """
    missing = [download for download in entry.downloads if not (folder / download.file).is_file()]
    finished = 0
    for index, download in enumerate(missing):
        is_last = index == len(missing) - 1

        def report(
            done: int, total: int | None, finished: int = finished, is_last: bool = is_last
        ) -> None:
            if on_progress is not None:
                known = is_last and total is not None
                on_progress(finished + done, finished + total if known else None)

        path = download_file(
            download.url, folder / download.file, file_hash=download.file_hash, on_progress=report
        )
        finished += path.stat().st_size


def _stratified_subset(y: np.ndarray, subset_size: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    if subset_size >= len(y):
        return indices
    try:
        chosen, _ = train_test_split(
            indices, train_size=subset_size, stratify=y, random_state=seed, shuffle=True
        )
    except ValueError:  # a class too rare to stratify: fall back to a seeded random subset
        chosen = np.random.default_rng(seed).choice(indices, size=subset_size, replace=False)
    return np.sort(chosen)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _read_cache(
    entry: KerasDatasetEntry, name: str, folder: Path
) -> tuple[np.ndarray, np.ndarray] | None:
    """The dataset's arrays from the Keras cache, or None when its files are not there."""
    try:
        return _CACHE_LOADERS[name](folder)
    except Exception as error:
        raise DatasetUnavailableError(
            f"{entry.title} is in the Keras cache ({folder}) but cannot be read "
            f"({_describe(error)}); the files may be incomplete. Delete them and try again, "
            "or use one of the bundled datasets, which need no download.",
            key=name,
            folder=folder,
            files=entry.files,
        ) from error


def _download_and_read(
    entry: KerasDatasetEntry,
    name: str,
    folder: Path,
    allow_download: bool,
    on_progress: ProgressCallback | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Downloads the dataset's missing files into the Keras cache and reads them."""
    file_list = ", ".join(entry.files)
    advice = (
        f"To use it offline, download {', '.join(entry.urls)} on a machine with internet "
        f"access and place {file_list} in {folder} (the Keras cache, ~/.keras/datasets "
        "unless KERAS_HOME is set). Or use one of the bundled datasets, which need no "
        "download."
    )
    if not allow_download:
        raise DatasetUnavailableError(
            f"{entry.title} is not in the Keras cache ({folder}) and downloading is off. {advice}",
            key=name,
            folder=folder,
            files=entry.files,
        )
    try:
        _download_missing(entry, folder, on_progress)
    except DownloadError as error:
        raise DatasetUnavailableError(
            f"{entry.title} is not in the Keras cache ({folder}) and downloading it "
            f"failed: {error.reason} {advice}",
            key=name,
            folder=folder,
            files=entry.files,
        ) from error
    try:
        arrays = _CACHE_LOADERS[name](folder)
    except Exception as error:
        arrays, read_error = None, f" ({_describe(error)})"
    else:
        read_error = ""
    if arrays is None:
        raise DatasetUnavailableError(
            f"{entry.title} was downloaded into the Keras cache ({folder}) but cannot be "
            f"read{read_error}; the files there may be incomplete. Delete "
            f"{', '.join(download.file for download in entry.downloads)} and try again, "
            "or use one of the bundled datasets, which need no download.",
            key=name,
            folder=folder,
            files=entry.files,
        )
    return arrays


def load_keras_dataset(
    name: str,
    subset_size: int | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
) -> ImageDataset:
    """Loads the training split of MNIST, Fashion-MNIST or CIFAR-10 as an `ImageDataset`.

    First looks for the files Keras itself keeps in `<cache>/datasets` (`mnist.npz`;
    `fashion-mnist/train-*-idx*-ubyte.gz`; `cifar-10-batches-py-target/cifar-10-batches-py/`
    or `cifar-10-batches-py/`, or the `cifar-10-python.tar.gz` archive) and reads them
    directly: no network, no hash check (CIFAR's pickles with a restricted unpickler). If they
    are missing and `allow_download`, downloads the training split's files from the URLs
    `keras.datasets.<name>.load_data()` uses into the same places in the cache, checking
    Keras's hash where Keras has one (CIFAR-10's archive is kept as Keras keeps it and read
    without extracting), with a timeout on a stalled connection
    (`$FREEZELAB_DOWNLOAD_TIMEOUT_S`, default 20 s) and progress reports; a failed download
    leaves nothing in the cache. Any failure raises `DatasetUnavailableError`, whose message
    names the files, the folder to put them in by hand and the bundled datasets.

    Args:
        name: One of `KERAS_DATASETS`: "mnist", "fashion_mnist" or "cifar10".
        subset_size: Keep only this many images, stratified by class and seeded (at least
            one per class); None keeps the full training split (CIFAR-10 takes 600 MB as
            float32, so pick a subset on small machines).
        cache_dir: The Keras cache folder; None for `$KERAS_HOME` or `~/.keras`.
        allow_download: Whether missing files may be downloaded.
        seed: Seed of the subset choice.
        on_progress: Called as `on_progress(bytes_done, bytes_total)` while files download
            (a running total over the dataset's files; `bytes_total` is None until the
            last file's size is known); not called when everything is in the cache. Its
            exceptions propagate unchanged.

    Returns:
        An `ImageDataset` with x of shape `(N, 28, 28, 1)` or `(N, 32, 32, 3)` in [0, 1].

    Raises:
        ValueError: For an unknown name or a bad subset size.
        DatasetUnavailableError: When the files are missing and cannot be downloaded.

    Example:
    >>> dataset = load_keras_dataset("fashion_mnist", subset_size=2000)
    >>> dataset.input_shape, dataset.num_classes
    ((28, 28, 1), 10)
    """
    entry = _get_entry(name)
    subset_size = check_whole_number(
        "subset_size",
        subset_size,
        len(entry.class_names),
        allow_none=True,
        hint=f"None keeps all {entry.num_train_samples:,} images; a subset needs at least one "
        "image per class.",
    )
    folder = keras_dataset_folder(cache_dir)
    arrays = _read_cache(entry, name, folder)
    source = f"the Keras cache ({folder})"
    if arrays is None:
        arrays = _download_and_read(entry, name, folder, allow_download, on_progress)
        source = f"the Keras cache ({folder}, just downloaded)"

    x, y = arrays
    y = np.asarray(y).reshape(-1).astype("int64")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if len(x) != len(y) or tuple(x.shape[1:]) != entry.image_shape:
        raise DatasetUnavailableError(
            f"{entry.title} from {source} has unexpected shapes: images {x.shape}, labels "
            f"{y.shape}; expected (N, {', '.join(map(str, entry.image_shape))}) and (N,). "
            "Delete the cached files and try again.",
            key=name,
            folder=folder,
            files=entry.files,
        )
    if subset_size is not None:
        chosen = _stratified_subset(y, int(subset_size), seed)
        x, y = x[chosen], y[chosen]
    scaled = x.astype("float32") / 255.0
    is_subset = subset_size is not None and subset_size < entry.num_train_samples
    subset_text = f"a stratified subset of {len(y):,} images" if is_subset else "all images"
    return ImageDataset(
        name=name,
        title=entry.title,
        description=f"{entry.description} Training split, {subset_text}, scaled to [0, 1].",
        x=scaled,
        y=y,
        class_names=entry.class_names,
    )
