"""Tests for models/splits.py: the stratified validation split and the batch fit."""

import numpy as np
import pytest

from models.splits import check_batch_fits, train_validation_split


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [40, 60, 80, 20])
    indices = np.arange(len(labels))

    x_train, y_train, x_validation, y_validation = train_validation_split(
        indices, labels, validation_fraction=0.25, seed=7
    )

    assert len(x_validation) == 50 and len(x_train) == 150
    assert set(x_train).isdisjoint(x_validation)
    assert sorted(np.concatenate([x_train, x_validation])) == indices.tolist()
    np.testing.assert_array_equal(labels[x_train], y_train)
    np.testing.assert_array_equal(labels[x_validation], y_validation)
    np.testing.assert_array_equal(np.bincount(y_validation), [10, 15, 20, 5])

    again = train_validation_split(indices, labels, validation_fraction=0.25, seed=7)
    np.testing.assert_array_equal(again[2], x_validation)
    other = train_validation_split(indices, labels, validation_fraction=0.25, seed=8)
    assert not np.array_equal(other[2], x_validation)


def test_split_with_zero_fraction_keeps_everything_for_training():
    labels = np.array([0, 1, 0, 1, 1])
    images = np.arange(5 * 4).reshape(5, 2, 2, 1)
    x_train, y_train, x_validation, y_validation = train_validation_split(
        images, labels, validation_fraction=0, seed=0
    )
    assert x_validation.shape == (0, 2, 2, 1) and y_validation.shape == (0,)
    assert sorted(y_train.tolist()) == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(np.sort(x_train[:, 0, 0, 0]), images[:, 0, 0, 0])


@pytest.mark.parametrize("fraction", [-0.1, 0.95, 1.0])
def test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match=f"Received: validation_fraction={float(fraction)}"):
        train_validation_split(np.zeros(10), np.arange(10) % 2, fraction, seed=0)


def test_split_explains_too_few_samples():
    with pytest.raises(ValueError, match=r"classes \[2\] have only 1"):
        train_validation_split(np.zeros(7), np.array([0, 0, 0, 1, 1, 1, 2]), 0.3, seed=0)
    with pytest.raises(ValueError, match="at least one sample of each of the 3 classes"):
        train_validation_split(np.zeros(6), np.array([0, 0, 1, 1, 2, 2]), 0.1, seed=0)
    with pytest.raises(ValueError, match="y of shape"):
        train_validation_split(np.zeros(6), np.array([0, 1]), 0.5, seed=0)


def test_a_dataset_smaller_than_a_batch_reduces_the_batch_size_with_a_message():
    fit = check_batch_fits(20, 32, validation_fraction=0.2)
    assert (fit.batch_size, fit.num_train_samples, fit.reduced) == (16, 16, True)
    assert "fewer than the batch size 32: the batch size will be reduced to 16" in fit.message
    assert check_batch_fits(100, 32).message == ""
    with pytest.raises(ValueError, match="none is left for training"):
        check_batch_fits(1, 8, validation_fraction=0.5)
