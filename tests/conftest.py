"""Shared pytest set-up: quiet TensorFlow, fixed seeds, no network."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import pytest


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(1234)
    yield
