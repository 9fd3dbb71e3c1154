"""Tests for models/keras_datasets.py with tiny fake Keras caches: never the network."""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import posixpath
import tarfile
import time

import numpy as np
import pytest

import models.download
import models.keras_datasets
from models.download import DOWNLOAD_TIMEOUT_ENV
from models.keras_datasets import (
    KERAS_DATASET_ENTRIES,
    KERAS_DATASETS,
    DatasetUnavailableError,
    keras_dataset_folder,
    load_keras_dataset,
)
from tests.test_download import cache_listing

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def fake_images(num_images, shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(num_images, *shape), dtype=np.uint8)
    y = (np.arange(num_images) % 10).astype(np.uint8)
    return x, y


def write_mnist(folder, num_images=20):
    folder.mkdir(parents=True, exist_ok=True)
    x, y = fake_images(num_images, (28, 28))
    np.savez(folder / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    return x, y


def write_idx(path, array, header_size):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as file:
        file.write(b"\x00" * header_size + array.tobytes())


def write_fashion_mnist(folder, num_images=30):
    x, y = fake_images(num_images, (28, 28), seed=1)
    write_idx(folder / "fashion-mnist" / "train-labels-idx1-ubyte.gz", y, 8)
    write_idx(folder / "fashion-mnist" / "train-images-idx3-ubyte.gz", x, 16)
    return x, y


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx_gz_bytes(array, header_size):
    return gzip.compress(b"\x00" * header_size + array.tobytes())


def serve_dataset(monkeypatch, server, name, bodies, hashes=None):
    """Points a dataset's downloads at the local server, serving `bodies` (one per file).

    `hashes` replaces the catalogue's hashes (None: the sha256 of each body).
    """
    entry = KERAS_DATASET_ENTRIES[name]
    if hashes is None:
        hashes = [hashlib.sha256(body).hexdigest() for body in bodies]
    downloads = tuple(
        dataclasses.replace(
            download,
            url=server.serve(f"{name}/{index}/{posixpath.basename(download.file)}", body),
            file_hash=file_hash,
        )
        for index, (download, body, file_hash) in enumerate(
            zip(entry.downloads, bodies, hashes, strict=True)
        )
    )
    served = dataclasses.replace(entry, downloads=downloads)
    monkeypatch.setattr(
        models.keras_datasets, "KERAS_DATASET_ENTRIES", {**KERAS_DATASET_ENTRIES, name: served}
    )
    return served


def cifar_batches(per_batch=4):
    """Five CIFAR batches as pickled bytes, in the format of the python CIFAR-10 release."""
    batches, images, labels = {}, [], []
    for index in range(1, 6):
        x, _ = fake_images(per_batch, (3, 32, 32), seed=index)
        batch_labels = [(index * per_batch + position) % 10 for position in range(per_batch)]
        batch = {
            b"batch_label": f"training batch {index} of 5".encode(),
            b"labels": batch_labels,
            b"data": x.reshape(per_batch, 3072),
            b"filenames": [f"image_{position}.png".encode() for position in range(per_batch)],
        }
        batches[f"data_batch_{index}"] = pickle.dumps(batch, protocol=2)
        images.append(x.transpose(0, 2, 3, 1))
        labels += batch_labels
    return batches, np.concatenate(images), np.array(labels)


def test_the_catalogue_lists_three_datasets():
    assert list(KERAS_DATASETS) == ["mnist", "fashion_mnist", "cifar10"]


def test_mnist_loads_from_the_keras_cache(offline_keras_home):
    assert keras_dataset_folder() == offline_keras_home / "datasets"
    x, y = write_mnist(offline_keras_home / "datasets")
    dataset = load_keras_dataset("mnist", allow_download=False)
    assert dataset.input_shape == (28, 28, 1)
    assert dataset.class_names == tuple("0123456789")
    np.testing.assert_array_equal(dataset.x[..., 0], x.astype("float32") / 255.0)
    np.testing.assert_array_equal(dataset.y, y)


def test_fashion_mnist_loads_from_the_gz_files_keras_keeps(offline_keras_home):
    x, y = write_fashion_mnist(offline_keras_home / "datasets")
    dataset = load_keras_dataset("fashion_mnist", allow_download=False)
    assert dataset.class_names[0] == "T-shirt/top" and dataset.num_classes == 10
    np.testing.assert_array_equal(dataset.x[..., 0], x.astype("float32") / 255.0)
    np.testing.assert_array_equal(dataset.y, y)


@pytest.mark.parametrize(
    "subfolder", ["cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"]
)
def test_cifar10_loads_from_the_extracted_batches(offline_keras_home, subfolder):
    batches, images, labels = cifar_batches()
    folder = offline_keras_home / "datasets" / subfolder
    folder.mkdir(parents=True)
    for name, content in batches.items():
        (folder / name).write_bytes(content)
    dataset = load_keras_dataset("cifar10", allow_download=False)
    assert dataset.input_shape == (32, 32, 3)
    assert dataset.class_names[0] == "airplane"
    np.testing.assert_array_equal(dataset.x, images.astype("float32") / 255.0)
    np.testing.assert_array_equal(dataset.y, labels)


def test_cifar10_loads_from_the_downloaded_archive_without_extracting(offline_keras_home):
    batches, images, _ = cifar_batches()
    folder = offline_keras_home / "datasets"
    folder.mkdir()
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as archive:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    dataset = load_keras_dataset("cifar10", allow_download=False)
    np.testing.assert_array_equal(dataset.x, images.astype("float32") / 255.0)
    assert sorted(os.listdir(folder)) == ["cifar-10-python.tar.gz"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_malicious_cifar_pickle_is_refused(offline_keras_home):
    batches, _, _ = cifar_batches()
    folder = offline_keras_home / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, content in batches.items():
        (folder / name).write_bytes(content)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit()}))
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("cifar10", allow_download=False)
    message = str(raised.value)
    assert "cannot be read (UnpicklingError: Refusing to load posix.system" in message
    assert "Delete them and try again" in message


def test_a_stratified_subset_is_seeded_and_keeps_every_class(offline_keras_home):
    write_mnist(offline_keras_home / "datasets", num_images=100)
    first = load_keras_dataset("mnist", subset_size=30, allow_download=False, seed=1)
    again = load_keras_dataset("mnist", subset_size=30, allow_download=False, seed=1)
    assert first.num_samples == 30
    assert first.class_counts().tolist() == [3] * 10
    np.testing.assert_array_equal(first.x, again.x)
    assert "a stratified subset of 30 images" in first.description
    with pytest.raises(ValueError, match=r"a whole number >= 10\. Received: subset_size=5"):
        load_keras_dataset("mnist", subset_size=5)


def test_offline_without_a_cache_names_the_files_and_the_folder(offline_keras_home):
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("fashion_mnist", allow_download=False)
    error = raised.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert "Fashion-MNIST is not in the Keras cache" in message
    assert "downloading is off" in message
    assert "fashion-mnist/train-labels-idx1-ubyte.gz" in message
    assert str(offline_keras_home / "datasets") in message
    assert "~/.keras/datasets" in message
    assert "bundled datasets" in message
    assert error.folder == offline_keras_home / "datasets"


def test_no_network_download_failure_is_explained(offline_keras_home):
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("mnist")
    message = str(raised.value)
    assert "MNIST digits is not in the Keras cache" in message
    assert "downloading it failed: the connection failed (network disabled in tests)." in message
    assert "mnist.npz" in message
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in message
    assert "bundled datasets" in message
    assert cache_listing(offline_keras_home / "datasets") == []


def _keras_requested_files(name, monkeypatch):
    """Runs keras.datasets.<name>.load_data() with a recording get_file: what Keras fetches."""
    requested = []

    def recording_get_file(fname=None, origin=None, **kwargs):
        requested.append(dict(fname=fname, origin=origin, **kwargs))
        return os.devnull

    monkeypatch.setattr(f"keras.src.datasets.{name}.get_file", recording_get_file)
    module = __import__(f"keras.src.datasets.{name}", fromlist=["load_data"])
    with pytest.raises(Exception):  # noqa: B017 - it reads os.devnull as the data
        module.load_data()
    return requested


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_downloads_fetch_what_keras_fetches_into_the_same_places(name, monkeypatch):
    """The reference is Keras's own loader: the same URLs, cache files and hashes."""
    requested = _keras_requested_files(name, monkeypatch)
    expected = []
    for request in requested:
        subdir = request.get("cache_subdir", "datasets")
        file = request["fname"]
        if request.get("extract"):  # get_file keeps an archive as "<fname>_archive"
            file = f"{file}_archive"
        expected.append((request["origin"], posixpath.join(subdir, file), request.get("file_hash")))
    downloads = [
        (download.url, f"datasets/{download.file}", download.file_hash)
        for download in KERAS_DATASET_ENTRIES[name].downloads
    ]
    # FreezeLab fetches the training split only: Keras's first files (Fashion-MNIST's last
    # two are its test split).
    assert len(downloads) == {"mnist": 1, "fashion_mnist": 2, "cifar10": 1}[name]
    assert downloads == expected[: len(downloads)]


def test_mnist_downloads_into_the_keras_cache_with_progress(
    offline_keras_home, monkeypatch, local_server
):
    x, y = fake_images(12, (28, 28))
    body = npz_bytes(x_train=x, y_train=y, x_test=x[:1], y_test=y[:1])
    serve_dataset(monkeypatch, local_server, "mnist", [body])
    reports = []
    dataset = load_keras_dataset("mnist", on_progress=lambda *report: reports.append(report))
    assert dataset.num_samples == 12
    np.testing.assert_array_equal(dataset.x[..., 0], x.astype("float32") / 255.0)
    assert "all images" in dataset.description
    folder = offline_keras_home / "datasets"
    assert cache_listing(folder) == ["mnist.npz"]
    assert (folder / "mnist.npz").read_bytes() == body
    assert reports[0] == (0, len(body)) and reports[-1] == (len(body), len(body))

    # Cached now: no second download, no progress.
    reports.clear()
    load_keras_dataset("mnist", on_progress=lambda *report: reports.append(report))
    assert reports == [] and len(local_server.requests) == 1


def test_fashion_mnist_downloads_both_files_with_one_running_total(
    offline_keras_home, monkeypatch, local_server
):
    x, y = fake_images(30, (28, 28), seed=1)
    bodies = [idx_gz_bytes(y, 8), idx_gz_bytes(x, 16)]
    serve_dataset(monkeypatch, local_server, "fashion_mnist", bodies, hashes=[None, None])
    reports = []
    dataset = load_keras_dataset(
        "fashion_mnist", on_progress=lambda *report: reports.append(report)
    )
    np.testing.assert_array_equal(dataset.y, y)
    assert cache_listing(offline_keras_home / "datasets" / "fashion-mnist") == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    done = [report[0] for report in reports]
    assert done == sorted(done)
    total = len(bodies[0]) + len(bodies[1])
    assert reports[-1] == (total, total)
    # The total is unknown (None) while the first of the two files downloads.
    assert (len(bodies[0]), None) in reports and (len(bodies[0]), total) in reports


def test_cifar10_downloads_the_archive_keras_keeps_and_reads_it(
    offline_keras_home, monkeypatch, local_server
):
    batches, images, labels = cifar_batches()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    serve_dataset(monkeypatch, local_server, "cifar10", [buffer.getvalue()])
    dataset = load_keras_dataset("cifar10")
    np.testing.assert_array_equal(dataset.x, images.astype("float32") / 255.0)
    np.testing.assert_array_equal(dataset.y, labels)
    assert cache_listing(offline_keras_home / "datasets") == ["cifar-10-batches-py-target_archive"]


def test_a_stalled_dataset_download_times_out_and_points_to_the_bundled_data(
    offline_keras_home, monkeypatch, local_server
):
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "1")
    entry = serve_dataset(monkeypatch, local_server, "mnist", [b""])
    local_server.serve("mnist/0/mnist.npz", b"PK" * 500, declared_length=11_490_434, stall=True)
    started = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("mnist")
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert (
        "downloading it failed: the download stalled: no data for 1 s after 1.0 kB of 11.5 MB"
        in (message)
    )
    assert entry.urls[0] in message
    assert str(offline_keras_home / "datasets") in message
    assert "bundled datasets" in message
    assert cache_listing(offline_keras_home / "datasets") == []


def test_a_dataset_with_the_wrong_hash_is_refused_and_not_kept(
    offline_keras_home, monkeypatch, local_server
):
    expected = KERAS_DATASET_ENTRIES["mnist"].downloads[0].file_hash
    serve_dataset(monkeypatch, local_server, "mnist", [b"<html>portal</html>"], [expected])
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("mnist")
    assert f"; expected {expected}" in str(raised.value)
    assert cache_listing(offline_keras_home / "datasets") == []


def test_a_downloaded_file_that_cannot_be_read_is_explained(
    offline_keras_home, monkeypatch, local_server
):
    serve_dataset(monkeypatch, local_server, "fashion_mnist", [b"junk", b"junk"], [None, None])
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("fashion_mnist")
    message = str(raised.value)
    assert "Fashion-MNIST was downloaded into the Keras cache" in message
    assert "but cannot be read (BadGzipFile" in message
    assert "Delete fashion-mnist/train-labels-idx1-ubyte.gz" in message


def test_unknown_datasets_and_bad_files_are_explained(offline_keras_home):
    with pytest.raises(ValueError, match=r"Unknown keras\.datasets dataset 'imagenet'"):
        load_keras_dataset("imagenet")
    folder = offline_keras_home / "datasets"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"not an npz file")
    with pytest.raises(DatasetUnavailableError, match=r"in the Keras cache .* but cannot be read"):
        load_keras_dataset("mnist", allow_download=False)
