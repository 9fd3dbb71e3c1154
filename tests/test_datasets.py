"""Tests for models/datasets.py: bundled digits and shapes, and the registry."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from models.datasets import (
    BUNDLED_DATASETS,
    DEFAULT_DATASET,
    SHAPE_NAMES,
    ImageDataset,
    generate_shapes,
    load_bundled_dataset,
    load_digits_task,
)


@pytest.fixture(scope="module")
def sklearn_digits():
    return load_digits()


def test_digits_task_matches_sklearn_counts_and_pixels(sklearn_digits):
    digits = (7, 5, 9)
    dataset = load_digits_task(digits)

    expected_counts = np.bincount(sklearn_digits.target, minlength=10)[list(digits)]
    np.testing.assert_array_equal(np.bincount(dataset.y, minlength=3), expected_counts)
    assert dataset.num_samples == expected_counts.sum()
    assert dataset.class_names == ("7", "5", "9")
    assert dataset.num_classes == 3
    assert dataset.input_shape == (8, 8, 1)
    assert dataset.x.dtype == np.float32
    assert dataset.y.dtype == np.int64

    # Labels are remapped in the given order: label 0 is digit 7, label 1 digit 5.
    for label, digit in enumerate(digits):
        expected_images = sklearn_digits.images[sklearn_digits.target == digit] / 16.0
        np.testing.assert_allclose(dataset.x[dataset.y == label, ..., 0], expected_images)


def test_digits_values_are_scaled_to_unit_range():
    dataset = load_digits_task(range(10))
    assert dataset.x.min() == 0.0
    assert dataset.x.max() == 1.0
    assert dataset.num_samples == 1797


@pytest.mark.parametrize(
    ("digits", "error", "fragment"),
    [
        ((5,), ValueError, "at least 2"),
        ((5, 10), ValueError, "Received: digit=10"),
        ((-1, 3), ValueError, "Received: digit=-1"),
        ((5, 6, 5), ValueError, "[5] appear more than once"),
        ((5, 6.0), ValueError, "6.0"),
        ("56", TypeError, "'56'"),
        (5, TypeError, "received 5"),
    ],
)
def test_digits_task_rejects_bad_digits(digits, error, fragment):
    with pytest.raises(error) as raised:
        load_digits_task(digits)
    assert fragment in str(raised.value)


def test_shapes_are_deterministic_balanced_and_in_range():
    first = generate_shapes(num_samples_per_class=12, image_size=16, seed=3)
    second = generate_shapes(num_samples_per_class=12, image_size=16, seed=3)
    other = generate_shapes(num_samples_per_class=12, image_size=16, seed=4)

    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)
    assert not np.array_equal(first.x, other.x)

    assert first.x.shape == (48, 16, 16, 3)
    assert first.x.dtype == np.float32
    assert first.x.min() >= 0.0 and first.x.max() <= 1.0
    assert first.class_names == SHAPE_NAMES
    np.testing.assert_array_equal(np.bincount(first.y), [12, 12, 12, 12])
    # Samples are shuffled, not grouped by class.
    assert len(set(first.y[:12].tolist())) > 1


def test_shapes_classes_differ_in_structure_not_only_noise():
    dataset = generate_shapes(num_samples_per_class=30, image_size=32, seed=0)
    # The shape is bright on a dark background: the per-image bright-pixel fraction differs
    # between classes (a cross covers less of its box than a square).
    bright_fraction = (dataset.x.mean(axis=-1) > 0.45).mean(axis=(1, 2))
    by_class = pd.Series(bright_fraction).groupby(dataset.y).mean()
    square, cross = SHAPE_NAMES.index("square"), SHAPE_NAMES.index("cross")
    assert by_class[square] > by_class[cross]


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"num_samples_per_class": 1}, "`num_samples_per_class` must be a whole number >= 2"),
        ({"image_size": 4}, "`image_size` must be a whole number >= 8"),
    ],
)
def test_shapes_reject_bad_arguments(arguments, fragment):
    with pytest.raises(ValueError, match=fragment):
        generate_shapes(**arguments)


def test_registry_lists_the_bundled_tasks_in_order():
    assert list(BUNDLED_DATASETS) == ["digits_5_9", "digits_0_4", "shapes"]
    assert DEFAULT_DATASET == "digits_5_9"
    for title, description in BUNDLED_DATASETS.values():
        assert title and description


@pytest.mark.parametrize(
    ("key", "class_names", "input_shape"),
    [
        ("digits_5_9", ("5", "6", "7", "8", "9"), (8, 8, 1)),
        ("digits_0_4", ("0", "1", "2", "3", "4"), (8, 8, 1)),
        ("shapes", SHAPE_NAMES, (32, 32, 3)),
    ],
)
def test_load_bundled_dataset(key, class_names, input_shape):
    dataset = load_bundled_dataset(key)
    assert dataset.name == key
    assert dataset.title == BUNDLED_DATASETS[key][0]
    assert dataset.description == BUNDLED_DATASETS[key][1]
    assert dataset.class_names == class_names
    assert dataset.input_shape == input_shape
    counts = dataset.class_counts()
    assert isinstance(counts, pd.Series)
    assert list(counts.index) == list(class_names)
    assert counts.sum() == dataset.num_samples


def test_bundled_digit_tasks_partition_sklearn_digits():
    pretrained = load_bundled_dataset("digits_0_4")
    transfer = load_bundled_dataset("digits_5_9")
    assert pretrained.num_samples + transfer.num_samples == 1797


def test_unknown_bundled_dataset_lists_valid_keys():
    with pytest.raises(ValueError, match="'mnist'") as raised:
        load_bundled_dataset("mnist")
    for key in BUNDLED_DATASETS:
        assert key in str(raised.value)


def test_dataset_arrays_are_read_only():
    dataset = generate_shapes(num_samples_per_class=2, image_size=8)
    with pytest.raises(ValueError):
        dataset.x[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError):
        dataset.y[0] = 1


def test_image_dataset_validates_its_arrays():
    with pytest.raises(ValueError, match=r"labels in 0\.\.1"):
        ImageDataset("bad", "Bad", "", np.zeros((2, 4, 4, 1)), np.array([0, 2]), ("a", "b"))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ImageDataset("bad", "Bad", "", np.zeros((3, 4, 4, 1)), np.array([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="height, width"):
        ImageDataset("bad", "Bad", "", np.zeros((2, 4, 4)), np.array([0, 1]), ("a", "b"))


def test_uint8_images_are_kept_as_uint8_and_counted_in_bytes():
    pixels = np.full((3, 4, 4, 3), 200, dtype=np.uint8)
    dataset = ImageDataset("u8", "U8", "", pixels, np.array([0, 1, 0]), ("a", "b"))
    assert dataset.x.dtype == np.uint8 and not dataset.x.flags.writeable
    assert dataset.nbytes == 3 * 4 * 4 * 3 + 3 * 8
    floats = ImageDataset("f", "F", "", np.zeros((3, 4, 4, 1)), np.array([0, 1, 0]), ("a", "b"))
    assert floats.x.dtype == np.float32  # float64 (or int) images become float32 as before
    assert floats.nbytes == 3 * 4 * 4 * 1 * 4 + 3 * 8
    bundled = load_bundled_dataset("digits_5_9")
    assert bundled.nbytes == bundled.x.nbytes + bundled.y.nbytes
