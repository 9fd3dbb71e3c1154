"""Tests for models.representation: linear CKA against a reference, blocks, the probe on bases."""

import json

import keras
import numpy as np
import pytest

from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.representation import (
    REPRESENTATION_COLUMNS,
    RepresentationProbe,
    _cka_features,
    _cka_grams,
    base_inputs,
    linear_cka,
    representation_blocks,
)
from models.transfer import build_transfer_model
from models.tree import LayerTree
from tests.backend_subprocess import run_on_backend, skip_without_jax

BASE = "transfer_model/feature_extractor"
CNN_BLOCKS = ["conv1", "batch_norm1", "conv2", "batch_norm2", "conv3", "batch_norm3"]


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: HSIC with explicit centring matrices (Kornblith et al., eq. 3)."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    y = y.reshape(n, -1).astype(np.float64)
    centring = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ centring @ b @ centring) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.fixture(scope="module")
def digits():
    return load_bundled_dataset("digits_5_9")


def random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# ------------------------------------------------------------------------------ linear_cka
@pytest.mark.parametrize(
    "x_shape, y_shape",
    [
        ((40, 5), (40, 7)),  # features fewer than examples: feature form
        ((12, 30), (12, 50)),  # more features than examples: Gram form
        ((20, 4, 4, 3), (20, 9)),  # any rank, flattened
        ((16,), (16, 3)),  # a 1-D array is one feature
    ],
)
def test_linear_cka_matches_the_hsic_reference(x_shape, y_shape):
    x = random(x_shape, 1)
    y = random(y_shape, 2)
    y.reshape(y_shape[0], -1)[:, 0] += x.reshape(x_shape[0], -1)[:, 0] * 2  # some shared signal
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10, abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(linear_cka(x, y), rel=1e-12)


def test_feature_and_gram_forms_agree():
    x, y = random((30, 8), 3), random((30, 11), 4)
    x, y = x - x.mean(0), y - y.mean(0)
    assert _cka_features(x, y) == pytest.approx(_cka_grams(x @ x.T, y @ y.T), rel=1e-12)


def test_linear_cka_is_invariant_to_rotation_scaling_and_shift():
    x, y = random((50, 6), 5), random((50, 6), 6) + random((50, 6), 5)
    rotation, _ = np.linalg.qr(random((6, 6), 7))
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.5 * x + 2.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ rotation * 0.1, 7.0 * y) == pytest.approx(linear_cka(x, y), rel=1e-10)


def test_exactly_one_only_for_bitwise_equal_arrays_and_below_one_for_a_change():
    x = random((64, 10), 8).astype("float32")
    assert linear_cka(x, x.copy()) == 1.0
    assert linear_cka(x, keras.ops.convert_to_tensor(x)) == 1.0  # backend tensors are accepted
    # The same values in another dtype, or scaled, are the same representation but not the
    # same bits: close to 1, never exactly 1.
    for other in (x.astype("float64"), 2.0 * x):
        value = linear_cka(x, other)
        assert value < 1.0 and value == pytest.approx(1.0, abs=1e-12)
    changed = x + 0.5 * random((64, 10), 9).astype("float32")
    assert 0.5 < linear_cka(x, changed) < 0.99
    assert linear_cka(x, random((64, 10), 10)) < 0.4  # unrelated features


def test_non_finite_and_zero_variance_inputs_have_defined_results():
    x = random((8, 3), 11)
    with_nan = x.copy()
    with_nan[0, 0] = np.nan
    assert np.isnan(linear_cka(x, with_nan))
    assert np.isnan(linear_cka(x, np.full((8, 3), np.inf)))
    assert linear_cka(with_nan, with_nan.copy()) == 1.0  # bitwise equal: the same representation
    constant = np.ones((8, 3))
    assert linear_cka(constant, constant.copy()) == 1.0
    with pytest.raises(ValueError, match=r"zero variance.*3 features.*8 examples"):
        linear_cka(x, constant)
    with pytest.raises(ValueError, match="x has zero variance"):
        linear_cka(np.zeros((8, 2)), constant)


@pytest.mark.parametrize(
    "x, y, error, fragment",
    [
        (np.ones((4, 2)), np.ones((5, 2)), ValueError, r"same number of rows.*\(4, 2\).*\(5, 2\)"),
        (np.ones((1, 3)), np.ones((1, 3)), ValueError, r"at least 2 examples.*\(1, 3\)"),
        (np.float64(1.0), np.ones((2, 2)), ValueError, "scalar"),
        (np.ones((4, 0)), np.ones((4, 2)), ValueError, r"at least one feature.*\(4, 0\)"),
        (np.ones((4, 2), complex), np.ones((4, 2)), TypeError, "real numbers.*complex"),
    ],
)
def test_linear_cka_errors_say_what_was_received(x, y, error, fragment):
    with pytest.raises(error, match=fragment):
        linear_cka(x, y)


# -------------------------------------------------------------------- representation_blocks
def test_blocks_of_a_small_base_are_its_layers_with_weights_in_model_order():
    tree = LayerTree(build_default_transfer_model())
    assert representation_blocks(tree) == [f"{BASE}/{name}" for name in CNN_BLOCKS]
    # Four runs of 2, 1, 2, 1 layers, each represented by its last layer.
    assert representation_blocks(tree, max_blocks=4) == [
        f"{BASE}/{name}" for name in ("batch_norm1", "conv2", "conv3", "batch_norm3")
    ]
    assert representation_blocks(tree, max_blocks=1) == [f"{BASE}/batch_norm3"]
    with pytest.raises(ValueError, match=r"max_blocks.*Received: max_blocks=0"):
        representation_blocks(tree, max_blocks=0)


def test_blocks_without_weights_are_explained():
    base = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()], name="weightless")
    model = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(2)], name="outer")
    with pytest.raises(ValueError, match="'outer/weightless' has no layer with weights"):
        representation_blocks(LayerTree(model), "outer/weightless")


@pytest.fixture(scope="module")
def mobilenet_model():
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    return build_transfer_model(base, (8, 8, 1), 5, rescaling=(2.0, -1.0))


def test_blocks_of_a_deep_base_are_evenly_spaced_and_keep_the_last(mobilenet_model):
    tree = LayerTree(mobilenet_model)
    candidates = tree.base_layer_paths()
    blocks = representation_blocks(tree)
    assert len(candidates) == 104 and len(blocks) == 12
    positions = [candidates.index(path) for path in blocks]
    assert positions[-1] == len(candidates) - 1
    gaps = np.diff([-1, *positions])
    assert gaps.min() >= 8 and gaps.max() <= 9  # 104 / 12 = 8.67 layers a run


# ------------------------------------------------------------------------------- the probe
def frame_of(frame, column):
    return dict(zip(frame["block_path"].str.rsplit("/", n=1).str[-1], frame[column], strict=True))


def fine_tune(model, digits, epochs=1):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(digits.x[:-256], digits.y[:-256], epochs=epochs, batch_size=32, verbose=0)


def test_frozen_prefix_reads_exactly_one_and_trained_blocks_less(digits):
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(f"{BASE}/conv1", True)
    tree.set_frozen(f"{BASE}/batch_norm1", True)
    probe = RepresentationProbe(tree, digits.x[-256:])
    probe.capture()
    before = probe._block_outputs()
    fine_tune(model, digits)
    frame = probe.compare()
    assert tuple(frame.columns) == REPRESENTATION_COLUMNS and probe.num_examples == 256
    cka = frame_of(frame, "cka")
    assert cka["conv1"] == 1.0 and cka["batch_norm1"] == 1.0
    assert all(cka[name] < 1.0 for name in CNN_BLOCKS[2:])
    assert frame_of(frame, "unchanged") == {name: name in CNN_BLOCKS[:2] for name in CNN_BLOCKS}
    assert frame_of(frame, "frozen") == frame_of(frame, "unchanged")
    assert frame_of(frame, "frozen_through") == frame_of(frame, "unchanged")
    assert frame_of(frame, "num_features") == {
        "conv1": 1024, "batch_norm1": 1024, "conv2": 2048, "batch_norm2": 2048,
        "conv3": 512, "batch_norm3": 512,
    }  # fmt: skip
    # The probe's summaries give what linear_cka gives on the raw outputs.
    after = probe._block_outputs()
    for name, first, second in zip(CNN_BLOCKS, before, after, strict=True):
        assert cka[name] == pytest.approx(linear_cka(first, second), rel=1e-9)


def test_a_frozen_layer_after_a_trained_one_changes_and_says_why(digits):
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(f"{BASE}/batch_norm2", True)
    tree.set_frozen(f"{BASE}/conv3", True)
    probe = RepresentationProbe(tree, digits.x[-128:])
    probe.capture()
    fine_tune(model, digits)
    frame = probe.compare()
    frozen, through = frame_of(frame, "frozen"), frame_of(frame, "frozen_through")
    assert frozen["conv3"] and not through["conv3"]
    assert frame_of(frame, "cka")["conv3"] < 1.0  # its input (conv2's output) moved


def test_whole_base_frozen_reads_exactly_one_everywhere(digits):
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(BASE, True)
    probe = RepresentationProbe(tree, digits.x[-64:], max_examples=32)
    probe.capture()
    fine_tune(model, digits)
    frame = probe.compare()
    assert probe.num_examples == 32
    assert (frame["cka"] == 1.0).all()
    assert frame[["unchanged", "frozen", "frozen_through"]].all().all()


def test_probe_reads_nan_for_diverged_or_dead_blocks(digits):
    model = build_default_transfer_model()
    tree = LayerTree(model)
    probe = RepresentationProbe(tree, digits.x[:64])
    probe.capture()
    kernel = tree.layer(f"{BASE}/conv3").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    cka = frame_of(probe.compare(), "cka")
    assert cka["conv2"] == 1.0 and np.isnan(cka["conv3"]) and np.isnan(cka["batch_norm3"])
    kernel.assign(np.zeros(kernel.shape, "float32"))  # conv3's output: its bias on every example
    assert np.isnan(frame_of(probe.compare(), "cka")["conv3"])


def test_probe_checks_its_inputs(digits):
    tree = LayerTree(build_default_transfer_model())
    with pytest.raises(ValueError, match=r"shape \(examples, 8, 8, 1\).*\(10, 28, 28, 1\)"):
        RepresentationProbe(tree, np.zeros((10, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="at least 2 examples"):
        RepresentationProbe(tree, digits.x[:1])
    with pytest.raises(ValueError, match="'transfer_model/classifier' is not called in the graph"):
        RepresentationProbe(tree, digits.x[:8], blocks=["transfer_model/classifier"])
    with pytest.raises(ValueError, match="max_examples"):
        RepresentationProbe(tree, digits.x[:8], max_examples=1)
    probe = RepresentationProbe(tree, digits.x[:8], blocks=[f"{BASE}/conv2"])
    assert probe.blocks == [f"{BASE}/conv2"] and not probe.captured
    with pytest.raises(RuntimeError, match=r"call probe.capture\(\) first"):
        probe.compare()


def test_base_inputs_is_the_input_itself_for_the_bundled_model(digits):
    tree = LayerTree(build_default_transfer_model())
    x = digits.x[:4]
    assert base_inputs(tree, x) is x


def test_mobilenet_base_behind_input_adaptation(mobilenet_model, digits):
    tree = LayerTree(mobilenet_model)
    x = base_inputs(tree, digits.x[:24])
    assert x.shape == (24, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6  # rescaled to [-1, 1]
    with pytest.raises(ValueError, match=r"shape \(examples, 8, 8, 1\).*\(4, 32, 32, 3\)"):
        base_inputs(tree, x[:4])
    probe = RepresentationProbe(tree, x)
    probe.capture()
    last = tree.layer(probe.blocks[-1])  # Conv_1_bn
    last.gamma.assign(last.gamma * 1.5 + 0.1)
    frame = probe.compare()
    assert (frame["cka"].iloc[:-1] == 1.0).all() and frame["unchanged"].iloc[:-1].all()
    assert frame["cka"].iloc[-1] < 1.0 and not frame["unchanged"].iloc[-1]


def test_attention_base_from_the_workspace(digits):
    from models.catalogue import bundled_template
    from models.workspace import Workspace

    workspace = Workspace(bundled_template("bundled_digits_attention"), digits)
    tree, base_path = workspace.tree, workspace.base_path
    blocks = representation_blocks(tree, base_path)
    assert blocks == tree.base_layer_paths(base_path) and len(blocks) == 12
    first_block = [path for path in blocks if "block2" not in path and "final" not in path]
    for path in first_block:
        tree.set_frozen(path, True)
    probe = RepresentationProbe(tree, digits.x[-128:], base_path)
    probe.capture()
    fine_tune(workspace.model, digits)
    frame = probe.compare()
    assert (frame["frozen_through"] == frame["block_path"].isin(first_block)).all()
    assert (frame.loc[frame["frozen_through"], "cka"] == 1.0).all()
    assert (frame.loc[~frame["frozen_through"], "cka"] < 1.0).all()


# ------------------------------------------------------------------------------------- JAX
SCRIPT = r"""
import json
import keras
import numpy as np
from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.representation import RepresentationProbe
from models.tree import LayerTree

BASE = "transfer_model/feature_extractor"
digits = load_bundled_dataset("digits_5_9")


def perturbed():
    tree = LayerTree(build_default_transfer_model())
    probe = RepresentationProbe(tree, digits.x[-128:])
    probe.capture()
    kernel = tree.layer(BASE + "/conv2").kernel
    pattern = np.random.default_rng(0).normal(1.0, 0.2, size=kernel.shape).astype("float32")
    kernel.assign(keras.ops.convert_to_numpy(kernel.value) * pattern)
    return probe.compare()["cka"].tolist()


def fine_tuned():
    model = build_default_transfer_model()
    tree = LayerTree(model)
    tree.set_frozen(BASE + "/conv1", True)
    tree.set_frozen(BASE + "/batch_norm1", True)
    probe = RepresentationProbe(tree, digits.x[-128:])
    probe.capture()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(digits.x[:-256], digits.y[:-256], epochs=1, batch_size=32, verbose=0)
    frame = probe.compare()
    return frame["cka"].tolist(), frame["frozen_through"].tolist()


if __name__ == "__main__":
    cka, through = fine_tuned()
    report = {"backend": keras.backend.backend(), "perturbed": perturbed(),
              "fine_tuned": cka, "frozen_through": through}
    print("RESULT " + json.dumps(report))
"""


def test_jax_agrees_with_tensorflow():
    skip_without_jax()
    report = run_on_backend(SCRIPT, "jax")
    assert report["backend"] == "jax"
    namespace = {"__name__": "here"}
    exec(compile(SCRIPT, "representation_script", "exec"), namespace)
    tensorflow = namespace["perturbed"]()
    assert tensorflow[:2] == [1.0, 1.0] and report["perturbed"][:2] == [1.0, 1.0]
    assert report["perturbed"] == pytest.approx(tensorflow, abs=1e-6)
    assert max(tensorflow[2:]) < 0.9999
    assert report["frozen_through"] == [True, True, False, False, False, False]
    assert report["fine_tuned"][:2] == [1.0, 1.0]
    assert all(value < 1.0 for value in report["fine_tuned"][2:]), json.dumps(report)
