"""Tests for models/keras_datasets.py with tiny fake Keras caches: never the network."""

import gzip
import io
import os
import pickle
import tarfile
import urllib.error

import keras
import numpy as np
import pytest

from models.keras_datasets import (
    KERAS_DATASETS,
    DatasetUnavailableError,
    keras_dataset_folder,
    load_keras_dataset,
)

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
    with pytest.raises(ValueError, match=r"an integer >= 10 \(one image per class\); received 5"):
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


def test_no_network_download_failure_is_explained(monkeypatch):
    def offline_load_data(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline_load_data)
    with pytest.raises(DatasetUnavailableError) as raised:
        load_keras_dataset("mnist")
    message = str(raised.value)
    assert "MNIST digits is not in the Keras cache" in message
    assert "downloading it failed (URLError: <urlopen error [Errno -3] Temporary" in message
    assert "mnist.npz" in message
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in message


def test_keras_own_downloader_failing_offline_is_explained():
    """Not monkeypatching the loader: Keras's get_file meets the blocked network."""
    with pytest.raises(DatasetUnavailableError, match="downloading it failed"):
        load_keras_dataset("cifar10")


def test_a_successful_keras_download_is_used(monkeypatch):
    x, y = fake_images(12, (28, 28))

    def downloaded(*args, **kwargs):
        return (x, y), (x[:1], y[:1])

    monkeypatch.setattr(keras.datasets.mnist, "load_data", downloaded)
    dataset = load_keras_dataset("mnist")
    assert dataset.num_samples == 12
    assert "all images" in dataset.description


def test_unknown_datasets_and_bad_files_are_explained(offline_keras_home):
    with pytest.raises(ValueError, match=r"Unknown keras\.datasets dataset 'imagenet'"):
        load_keras_dataset("imagenet")
    folder = offline_keras_home / "datasets"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"not an npz file")
    with pytest.raises(DatasetUnavailableError, match=r"in the Keras cache .* but cannot be read"):
        load_keras_dataset("mnist", allow_download=False)
