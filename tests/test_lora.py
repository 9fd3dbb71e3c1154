"""LoRA adapters as a third layer state (models.lora, Workspace.set_lora): Keras's own facts,
freezing that composes with LoRA, and counts equal to Keras's under random mixed plans."""

import math
import random

import keras
import numpy as np
import pytest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.drift import EFFECTIVE_KERNEL_KIND
from models.freezing import set_trainable
from models.lora import (
    LoraSetting,
    adapter_parameters,
    effective_kernel,
    enable_lora,
    is_lora,
    lora_targets,
    supports_lora,
    why_not_lora,
)
from models.training import TrainingConfig
from models.tree import LayerTree, ParameterCounts
from models.workspace import Workspace
from tests.backend_subprocess import run_on_backend, skip_without_jax


def keras_counts(model: keras.Model) -> ParameterCounts:
    """The independent reference: Keras's own trainable / non-trainable weight lists."""
    return ParameterCounts(
        trainable=sum(math.prod(w.shape) for w in model.trainable_weights),
        non_trainable=sum(math.prod(w.shape) for w in model.non_trainable_weights),
    )


def nested_dense_model() -> keras.Model:
    layers = [keras.layers.Dense(5, name="dense_a"), keras.layers.Dense(4, name="dense_b")]
    inner = keras.Sequential([keras.Input((6,)), *layers], name="inner")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="head")(inner(inputs))
    return keras.Model(inputs, outputs, name="outer")


@pytest.fixture(scope="module")
def digits():
    return load_bundled_dataset("digits_5_9")


# ------------------------------------------------------------------------ Keras's facts
def test_enable_lora_freezes_the_kernel_adds_two_adapters_and_keeps_the_function():
    model = nested_dense_model()
    dense = model.get_layer("inner").get_layer("dense_a")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    before = np.asarray(model(x))
    enable_lora(dense, LoraSetting(2))
    trainable = {id(v) for v in model.trainable_weights}
    assert id(dense._kernel) not in trainable
    assert {id(dense.bias), id(dense.lora_kernel_a), id(dense.lora_kernel_b)} <= trainable
    assert dense.lora_kernel_a.shape == (6, 2) and dense.lora_kernel_b.shape == (2, 5)
    assert not np.any(np.asarray(dense.lora_kernel_b))  # b starts at zero
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    assert adapter_parameters(dense, LoraSetting(2)) == 6 * 2 + 2 * 5
    assert LayerTree(model).totals() == keras_counts(model)


def test_unfreezing_a_parent_reenables_a_lora_kernel_in_keras_but_not_in_freezelab():
    reference, ours = nested_dense_model(), nested_dense_model()
    for model in (reference, ours):
        enable_lora(model.get_layer("inner").get_layer("dense_a"), LoraSetting(2))
    # Keras's own setter, as in two-phase training: freeze the base, then unfreeze it.
    inner = reference.get_layer("inner")
    inner.trainable = False
    inner.trainable = True
    keras_kernel_trains = inner.get_layer("dense_a")._kernel.trainable
    # FreezeLab's freezing, the same two steps.
    set_trainable(ours.get_layer("inner"), False)
    set_trainable(ours.get_layer("inner"), True)
    dense = ours.get_layer("inner").get_layer("dense_a")
    assert keras_kernel_trains, "Keras no longer re-enables the kernel: update models/lora.py"
    assert not dense._kernel.trainable
    assert dense.lora_kernel_a.trainable and dense.bias.trainable
    tree = LayerTree(ours)
    tree.set_frozen("outer/inner", True)  # the layer and everything under it
    trains = {id(variable) for variable in ours.trainable_weights}
    assert id(dense.lora_kernel_a) not in trains  # a frozen LoRA layer freezes its adapters too
    assert tree.node("outer/inner/dense_a").state == "frozen"
    tree.set_frozen("outer/inner", False)
    assert tree.node("outer/inner/dense_a").state == "lora"
    assert not dense._kernel.trainable
    assert tree.totals() == keras_counts(ours)


def test_which_layers_support_lora_and_why_not():
    conv = keras.layers.Conv2D(3, 3)
    conv.build((None, 8, 8, 1))
    assert supports_lora(conv)
    assert "not on BatchNormalization" in why_not_lora(keras.layers.BatchNormalization())
    depthwise = keras.layers.DepthwiseConv2D(3)
    depthwise.build((None, 8, 8, 2))
    assert not supports_lora(depthwise)
    assert "not built" in why_not_lora(keras.layers.Dense(2))
    constrained = keras.layers.Dense(2, kernel_constraint="non_neg")
    constrained.build((None, 3))
    assert "constraint" in why_not_lora(constrained)
    with pytest.raises(ValueError, match="constraint"):
        enable_lora(constrained, LoraSetting(1))


def test_lora_settings_are_validated_and_round_trip():
    assert LoraSetting(4).to_dict() == {"rank": 4, "alpha": 4.0}
    assert LoraSetting.from_dict({"rank": 8, "alpha": 16}) == LoraSetting(8, 16.0)
    assert LoraSetting(8, 16).scale == 2.0
    with pytest.raises(ValueError, match=r"`rank` must be a whole number from 1 to 512"):
        LoraSetting(0)
    with pytest.raises(ValueError, match="alpha"):
        LoraSetting(4, alpha=-1)
    with pytest.raises(ValueError, match="'rank'"):
        LoraSetting.from_dict({"alpha": 2})


# ------------------------------------------------------------ counts under mixed plans
def random_mixed_plans(tree: LayerTree, count: int, seed: int):
    """Random (LoRA paths, frozen paths) pairs: all three states mixed."""
    generator = random.Random(seed)
    paths = tree.paths()
    adaptable = [path for path in paths if supports_lora(tree.layer(path))]
    for _ in range(count):
        share = generator.choice([0.1, 0.4, 0.8])
        lora = {path for path in adaptable if generator.random() < share}
        frozen = {path for path in paths if generator.random() < generator.choice([0.05, 0.3])}
        yield lora, frozen


def check_against_keras(tree: LayerTree, model: keras.Model) -> None:
    assert tree.totals() == keras_counts(model)
    trains = {id(variable) for variable in model.trainable_weights}
    for node in tree.nodes():
        for (variable, _kind), state in zip(
            tree.own_variables(node.path), node.variables, strict=True
        ):
            assert state.trains == (id(variable) in trains), (node.path, state.name)
        if node.lora_rank and node.effectively_trainable:
            assert [s.trains for s in node.variables if s.name == "kernel"] == [False]


@pytest.mark.parametrize(
    "builder",
    [
        lambda: keras.applications.MobileNetV2(
            weights=None, input_shape=(32, 32, 3), classes=4, alpha=0.35
        ),
        lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=4),
        lambda: Workspace(bundled_template(), load_bundled_dataset("digits_5_9")).model,
        lambda: (
            Workspace(
                bundled_template("bundled_digits_attention"), load_bundled_dataset("digits_5_9")
            ).model
        ),
    ],
    ids=["MobileNetV2", "EfficientNetB0", "bundled CNN", "bundled attention"],
)
def test_counts_equal_keras_for_random_plans_mixing_frozen_trainable_and_lora(builder):
    for index in range(3):
        model = builder()  # adapters cannot be removed: a fresh model per plan
        tree = LayerTree(model)
        lora, frozen = next(random_mixed_plans(tree, 1, seed=11 + index))
        for path in sorted(lora):
            enable_lora(tree.layer(path), LoraSetting(1 + index, alpha=2.0))
        tree = LayerTree(model)
        check_against_keras(tree, model)
        tree.apply_frozen_paths(frozen)
        check_against_keras(tree, model)
        tree.freeze_batch_norm()
        check_against_keras(tree, model)
        tree.unfreeze_all()  # Keras's setter on everything: the LoRA kernels stay frozen
        check_against_keras(tree, model)
        assert sum(1 for node in tree.nodes() if node.state == "lora") == len(lora)


# ------------------------------------------------------------------------- the workspace
def test_the_workspace_adds_adapters_in_place_and_counts_follow(digits):
    workspace = Workspace(bundled_template(), digits)
    x = digits.x[:16]
    before = np.asarray(workspace.model(x, training=False))
    workspace.bulk_action("freeze_base")
    head = workspace.tree.canonical_path(f"{workspace.tree.root_path}/classifier")
    revision, frozen = workspace.revision, workspace.tree.frozen_paths()
    workspace.set_layer_lora(head, LoraSetting(2))
    assert workspace.revision == revision + 1
    assert workspace.lora_plan() == {head: LoraSetting(2, 2.0)}
    np.testing.assert_array_equal(np.asarray(workspace.model(x, training=False)), before)
    assert workspace.tree.frozen_paths() == frozen  # the plan is kept
    check_against_keras(workspace.tree, workspace.model)
    assert workspace.tree.node(head).state == "lora"
    with pytest.raises(ValueError, match="not on BatchNormalization"):
        batch_norm = next(p for p in workspace.tree.paths() if "batch_norm" in p)
        workspace.set_layer_lora(batch_norm, LoraSetting(2))


def test_training_with_lora_keeps_the_kernel_and_moves_the_adapters(digits):
    workspace = Workspace(bundled_template(), digits)
    count = workspace.lora_bulk("dense", LoraSetting(2))
    assert count == 0  # the CNN's base has no Dense layer: a recipe may name nothing
    convolutions = [p for p in workspace.tree.paths() if supports_lora(workspace.tree.layer(p))]
    conv = convolutions[0]
    workspace.set_lora({conv: LoraSetting(2)})
    layer = workspace.tree.layer(conv)
    kernel_before = np.array(layer._kernel.numpy(), copy=True)
    effective_before = effective_kernel(layer)
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    assert run.adapters == {conv: LoraSetting(2, 2.0)}
    assert workspace.run_config(run)["lora_adapters"] == {conv: {"rank": 2, "alpha": 2.0}}
    np.testing.assert_array_equal(layer._kernel.numpy(), kernel_before)  # bitwise
    assert np.any(np.asarray(layer.lora_kernel_b.numpy()))  # the adapter learned
    assert not np.array_equal(effective_kernel(layer), effective_before)
    assert run.counts == keras_counts(workspace.model)


def test_removing_an_adapter_rebuilds_with_the_trained_adapter_merged(digits):
    workspace = Workspace(bundled_template(), digits)
    convolutions = [p for p in workspace.tree.paths() if supports_lora(workspace.tree.layer(p))]
    first, second = convolutions[:2]
    workspace.set_lora({first: LoraSetting(2), second: LoraSetting(4, alpha=8)})
    workspace.bulk_action("freeze_batch_norm")
    frozen = workspace.tree.frozen_paths()
    workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    x = digits.x[:32]
    trained = np.asarray(workspace.model(x, training=False))
    merged_first = effective_kernel(workspace.tree.layer(first))
    old_model = workspace.model
    workspace.set_layer_lora(second, None)
    assert workspace.model is not old_model  # Keras cannot remove an adapter: a rebuild
    assert workspace.lora_plan() == {first: LoraSetting(2, 2.0)}
    assert not is_lora(workspace.tree.layer(second))
    assert workspace.tree.frozen_paths() == frozen
    # Same function: the trained adapters live on in the kernels.
    np.testing.assert_allclose(np.asarray(workspace.model(x, training=False)), trained, atol=1e-5)
    np.testing.assert_allclose(
        effective_kernel(workspace.tree.layer(first)), merged_first, atol=1e-6
    )
    assert not np.any(np.asarray(workspace.tree.layer(first).lora_kernel_b.numpy()))
    check_against_keras(workspace.tree, workspace.model)
    workspace.reset_weights()  # keeps plan and adapters
    assert workspace.lora_plan() == {first: LoraSetting(2, 2.0)}


def test_the_attention_recipe_names_query_and_value_only():
    inputs = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="attention")
    hidden = attention(inputs, inputs)
    outputs = keras.layers.Dense(3, name="projection")(hidden)
    base = keras.Model(inputs, outputs, name="base")
    names = [layer.name for layer in lora_targets(base, "attention")]
    assert names == ["query", "value"]
    dense_names = sorted(layer.name for layer in lora_targets(base, "dense"))
    assert dense_names == ["attention_output", "key", "projection", "query", "value"]
    with pytest.raises(ValueError, match="recipe"):
        lora_targets(base, "everything")


def test_the_proof_checks_a_lora_layers_kernel_bitwise_next_to_the_frozen_layers(digits):
    workspace = Workspace(bundled_template(), digits)
    convolutions = [p for p in workspace.tree.paths() if supports_lora(workspace.tree.layer(p))]
    workspace.set_lora({path: LoraSetting(2) for path in convolutions[:2]})
    workspace.bulk_action("freeze_batch_norm")
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    proof = run.job.verification()
    kernels = [check.path for check in proof.checks if check.lora_kernel]
    assert kernels == convolutions[:2] and proof.all_unchanged
    assert proof.message() == "All 3 frozen layers and 2 LoRA kernels are bitwise unchanged."
    # The proof is a real check: a kernel moved behind FreezeLab's back is caught.
    kernel = workspace.tree.layer(convolutions[0])._kernel
    kernel.assign(kernel.numpy() + 1e-7)
    changed = run.job.recorder.verify()
    assert changed.changed_paths == (convolutions[0],)
    assert "kernel under LoRA" in changed.message()


# ------------------------------------------------------------ drift of the effective kernel
EFFECTIVE_KERNEL_SCRIPT = """
import json
import keras
import numpy as np
from models import build_default_transfer_model
from models.datasets import load_bundled_dataset
from models.drift import EFFECTIVE_KERNEL_KIND, DriftRecorder
from models.lora import LoraSetting, effective_kernel, enable_lora
from models.tree import LayerTree

keras.utils.set_random_seed(0)
model = build_default_transfer_model()
tree = LayerTree(model)
tree.set_frozen("transfer_model/feature_extractor", True)
conv = "transfer_model/feature_extractor/conv3"
enable_lora(tree.layer(conv), LoraSetting(2, alpha=4))
tree.set_frozen(conv, False)
tree = LayerTree(model)  # the adapters' variables are new
layer = tree.layer(conv)
start = effective_kernel(layer).astype(np.float64)
data = load_bundled_dataset("digits_5_9")
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
recorder = DriftRecorder(tree, every_n_batches=7)
model.fit(data.x[:256], data.y[:256], epochs=2, batch_size=32, callbacks=[recorder], verbose=0)
end = effective_kernel(layer).astype(np.float64)  # Keras's own `layer.kernel`
rows = recorder.frame()
rows = rows[(rows.layer_path == conv) & (rows.kind == EFFECTIVE_KERNEL_KIND)]
result = {
    "recorded": float(rows.relative_change.iloc[-1]),
    "recorded_max": float(rows.max_abs_change.iloc[-1]),
    "keras": float(np.linalg.norm(end - start) / np.linalg.norm(start)),
    "keras_max": float(np.max(np.abs(end - start))),
    "steps": rows.step.tolist(),
    "start_unchanged": bool(rows.unchanged.iloc[0]),
    "proof": recorder.verify().message(),
    "num_params": int(rows.num_params.iloc[0]),
}
print("RESULT " + json.dumps(result))
"""


def _check_effective_kernel_report(report: dict) -> None:
    # Against Keras's own effective kernel (`layer.kernel`) before and after, in NumPy.
    assert report["recorded"] == pytest.approx(report["keras"], rel=1e-4)
    assert report["recorded_max"] == pytest.approx(report["keras_max"], rel=1e-4)
    assert report["recorded"] > 0
    assert report["start_unchanged"]
    assert report["steps"] == [0, 7, 8, 14, 16]  # start, batch records, the two epoch ends
    assert report["num_params"] == 3 * 3 * 16 * 64  # the kernel's size, not the adapters'
    assert report["proof"] == "All 5 frozen layers and 1 LoRA kernel are bitwise unchanged."


def test_the_drift_of_a_lora_layers_effective_kernel_is_the_one_keras_computes_with():
    namespace: dict = {}
    exec(EFFECTIVE_KERNEL_SCRIPT.replace('print("RESULT " + json.dumps(result))', ""), namespace)
    _check_effective_kernel_report(namespace["result"])


def test_the_effective_kernel_drift_is_the_same_on_jax():
    skip_without_jax()
    _check_effective_kernel_report(run_on_backend(EFFECTIVE_KERNEL_SCRIPT, "jax"))


def test_a_frozen_lora_layer_has_an_unchanged_effective_kernel_and_no_extra_proof(digits):
    workspace = Workspace(bundled_template(), digits)
    conv = "transfer_model/feature_extractor/conv2"
    workspace.set_lora({conv: LoraSetting(2)})
    workspace.bulk_action("freeze_base")  # freezes the base, adapters included
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    rows = run.job.drift_frame()
    rows = rows[(rows.layer_path == conv) & (rows.kind == EFFECTIVE_KERNEL_KIND)]
    assert len(rows) == 2 and rows.unchanged.all() and rows.frozen.all()
    proof = run.job.proof()
    assert proof.all_unchanged and not any(check.lora_kernel for check in proof.checks)
    assert conv in {check.path for check in proof.checks}
