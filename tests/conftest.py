"""Shared pytest set-up: quiet TensorFlow, fixed seeds, no network."""

import os
import tempfile
import urllib.error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Runs the app keeps on disk go to a throw-away folder, never into the checkout.
os.environ.setdefault("FREEZELAB_RUNS_DIR", tempfile.mkdtemp(prefix="freezelab-test-runs-"))

import keras
import pytest


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture
def offline_keras_home(tmp_path, monkeypatch):
    """An empty Keras cache in tmp_path and no network at all (downloads fail at once).

    Code that downloads (ImageNet weights, keras.datasets) is tested through this: its failure
    path, and its cache path by writing files into the returned folder.
    """
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(home))
    monkeypatch.setattr(keras.utils, "get_file", _no_network)
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", _no_network)
    monkeypatch.setattr("models.download.urlopen", _no_network)
    return home


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(1234)
    yield


# Templates and datasets the export tests share (read-only: instantiate() copies the config).
@pytest.fixture(scope="module")
def bundled():
    from models.catalogue import bundled_template

    return bundled_template()


@pytest.fixture(scope="module")
def digits():
    from models.datasets import load_bundled_dataset

    return load_bundled_dataset("digits_5_9")


@pytest.fixture(scope="module")
def shapes():
    from models.datasets import load_bundled_dataset

    return load_bundled_dataset("shapes")


@pytest.fixture(scope="module")
def mobilenet():
    """A small keras.applications template (random weights: offline)."""
    from models.catalogue import load_template

    return load_template("mobilenet_v2_035", input_size=32, pretrained=False)


@pytest.fixture
def local_server(offline_keras_home, monkeypatch):
    """A local HTTP server (tests/test_download.py): downloads reach it, and nothing else."""
    import urllib.request

    from tests.test_download import running_server

    monkeypatch.setattr("models.download.urlopen", urllib.request.urlopen)
    with running_server() as server:
        yield server
