"""Shared pytest set-up: quiet TensorFlow, fixed seeds, no network."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Runs the app keeps on disk go to a throw-away folder, never into the checkout.
os.environ.setdefault("FREEZELAB_RUNS_DIR", tempfile.mkdtemp(prefix="freezelab-test-runs-"))

import keras
import pytest


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(1234)
    yield
