"""Tests for models/export/lora_code.py and rates_code.py: LoRA and layer rates in the script.

The generated script is executed, and its model compared with FreezeLab's: the counts (against
FreezeLab's tree and Keras's own weight lists), each weight's trainable flag, and, for the
per-layer learning rates, every weight after training both models from the same start on the
same data (bitwise, on TensorFlow here and on JAX in a subprocess).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from models.bundled import BUNDLED_MODEL_PATH
from models.catalogue import bundled_template
from models.export.lora_code import lora_adapters
from models.export.plan_code import plan_counts
from models.export.rates_code import rate_multipliers
from models.export.script import generate_code
from models.layer_rates import LayerRates, layer_rate_optimizer, variable_multipliers
from models.lora import LoraSetting
from models.training import OPTIMIZERS, TrainingConfig
from models.workspace import Workspace
from tests.backend_subprocess import run_on_backend, skip_without_jax

BASE = "transfer_model/feature_extractor"
HEAD = "transfer_model/classifier"
RATES = LayerRates({HEAD: 2.0, f"{BASE}/conv3": 0.0}, decay_factor=0.5, layers_per_block=2)


def keras_counts(model: keras.Model) -> tuple[int, int]:
    """Independent reference: Keras's own weight lists."""
    return (
        sum(math.prod(weight.shape) for weight in model.trainable_weights),
        sum(math.prod(weight.shape) for weight in model.non_trainable_weights),
    )


def flags(model: keras.Model) -> list[tuple[str, bool]]:
    return [(weight.path, bool(weight.trainable)) for weight in model.weights]


def execute(code: str) -> dict:
    """Runs a generated script as if saved next to the downloaded bundled model file."""
    folder = BUNDLED_MODEL_PATH.parent
    namespace = {"__name__": "freezelab_export", "__file__": str(folder / "freezelab_setup.py")}
    exec(compile(code, "freezelab_export.py", "exec"), namespace)
    return namespace


def code_of(workspace: Workspace, config: TrainingConfig | None = None, **options) -> str:
    return generate_code(
        workspace.template,
        workspace.dataset.input_shape,
        workspace.dataset.num_classes,
        workspace.tree.frozen_paths(),
        config or TrainingConfig(),
        tree=workspace.tree,
        **options,
    )


def assert_same_lora_model(workspace: Workspace) -> str:
    """Generates and runs the code (no fit); counts and every weight's flag equal FreezeLab's."""
    code = code_of(workspace, include_training=False)
    model = execute(code)["model"]
    totals = workspace.tree.totals()
    assert keras_counts(model) == (totals.trainable, totals.non_trainable)
    assert keras_counts(model) == keras_counts(workspace.model)
    assert flags(model) == flags(workspace.model)
    assert plan_counts(workspace.tree, workspace.tree.frozen_paths()) == totals
    adapted = [layer for layer in model._flatten_layers() if getattr(layer, "lora_enabled", 0)]
    assert len(adapted) == len(workspace.lora_plan())
    return code


@pytest.mark.parametrize(
    ("plan", "argument"),
    [
        ("unfreeze_all", None),
        ("freeze_base", None),
        ("freeze_up_to", f"{BASE}/batch_norm2"),
        ("freeze_all", None),
    ],
)
def test_lora_on_the_bundled_cnn_gives_freezelabs_counts_and_flags(bundled, digits, plan, argument):
    workspace = Workspace(bundled, digits)
    workspace.set_lora(
        {
            f"{BASE}/conv1": LoraSetting(2),
            f"{BASE}/conv3": LoraSetting(4, 8.0),
            HEAD: LoraSetting(3),
        }
    )
    workspace.bulk_action(plan, argument)
    code = assert_same_lora_model(workspace)
    assert 'base.get_layer("conv3").enable_lora(4, lora_alpha=8.0)' in code
    assert 'model.get_layer("classifier").enable_lora(3, lora_alpha=3.0)' in code
    # The adapters come after every `trainable` statement: a later one would unfreeze kernels.
    lines = code.splitlines()
    flag_lines = [i for i, line in enumerate(lines) if ".trainable = " in line]
    lora_lines = [i for i, line in enumerate(lines) if ".enable_lora(" in line]
    assert max(flag_lines, default=-1) < min(lora_lines)


def test_a_lora_layer_re_enabled_inside_a_frozen_base_keeps_its_kernel_frozen(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.set_lora({f"{BASE}/conv2": LoraSetting(2), f"{BASE}/conv1": LoraSetting(2)})
    workspace.bulk_action("freeze_base")
    workspace.tree.set_frozen(f"{BASE}/conv2", False)
    assert_same_lora_model(workspace)
    states = {v.name: v.trains for v in workspace.tree.node(f"{BASE}/conv2").variables}
    assert states == {"kernel": False, "lora_kernel_a": True, "lora_kernel_b": True}
    states = {v.name: v.trains for v in workspace.tree.node(f"{BASE}/conv1").variables}
    assert not any(states.values())  # frozen: adapters too


def lora_before_the_plan(code: str) -> str:
    """The script with its LoRA block moved before the freeze plan: the wrong order."""
    lines = code.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# LoRA:"))
    end = lines.index("", start)
    block = lines[start : end + 1]
    del lines[start : end + 1]
    plan = next(i for i, line in enumerate(lines) if line.startswith("# Freeze plan:"))
    return "\n".join(lines[:plan] + block + lines[plan:]) + "\n"


def nested_lora_workspace(bundled, digits) -> Workspace:
    """A frozen LoRA layer (conv1), one re-enabled inside the frozen base (conv2), the head."""
    workspace = Workspace(bundled, digits)
    workspace.set_lora(
        {
            f"{BASE}/conv1": LoraSetting(2),
            f"{BASE}/conv2": LoraSetting(2, 4.0),
            HEAD: LoraSetting(3),
        }
    )
    workspace.bulk_action("freeze_base")
    workspace.tree.set_frozen(f"{BASE}/conv2", False)
    return workspace


def test_lora_before_the_plan_would_let_a_re_enabled_kernel_train(bundled, digits):
    workspace = nested_lora_workspace(bundled, digits)
    assert keras_counts(workspace.model) == (468, 14_498)
    code = code_of(workspace, include_training=False)
    assert keras_counts(execute(code)["model"]) == (468, 14_498)
    wrong = execute(lora_before_the_plan(code))["model"]
    assert keras_counts(wrong) == (5_076, 9_890)  # conv2's 4,608-parameter kernel trains
    assert ("conv2/kernel", True) in flags(wrong)


def test_the_attention_recipe_reaches_projections_inside_attention_layers(digits):
    workspace = Workspace(bundled_template("bundled_digits_attention"), digits)
    assert workspace.lora_bulk("attention", LoraSetting(4)) > 0
    workspace.set_layer_lora(f"{BASE}/patch_embedding", LoraSetting(2, 0.5))
    workspace.bulk_action("unfreeze_top", 3)
    code = assert_same_lora_model(workspace)
    assert '.get_layer("block1_attention")._query_dense.enable_lora(4, lora_alpha=4.0)' in code


def test_many_lora_layers_of_one_parent_become_a_loop_and_keep_the_counts(mobilenet, digits):
    workspace = Workspace(mobilenet, digits)
    convs = [
        path
        for path in workspace.tree.paths()
        if path.startswith(f"{workspace.base_path}/")
        and workspace.tree.node(path).class_name == "Conv2D"
        and workspace.tree.node(path).supports_lora
    ][:6]
    workspace.set_lora(dict.fromkeys(convs, LoraSetting(2)))
    workspace.bulk_action("unfreeze_top", 10)
    code = assert_same_lora_model(workspace)
    assert "    base.get_layer(name).enable_lora(2, lora_alpha=2.0)" in code


def test_without_adapters_the_script_has_no_lora_lines(bundled, digits):
    workspace = Workspace(bundled, digits)
    code = code_of(workspace, include_training=False)
    assert "enable_lora" not in code and "LoRA" not in code
    assert lora_adapters(workspace.tree) == {}


# ------------------------------------------------------------------------ layer rates
def rates_workspace(bundled, digits) -> Workspace:
    """LoRA on conv2 and the head, the first block frozen: rates meet adapters and flags."""
    workspace = Workspace(bundled, digits)
    workspace.set_lora({f"{BASE}/conv2": LoraSetting(2, 4.0), HEAD: LoraSetting(3)})
    workspace.bulk_action("freeze_up_to", f"{BASE}/batch_norm1")
    return workspace


def rates_config(optimizer: str) -> TrainingConfig:
    return TrainingConfig(
        epochs=1, batch_size=64, learning_rate=0.01, optimizer=optimizer, layer_rates=RATES
    )


def train_both(workspace: Workspace, namespace: dict, optimizer: str) -> tuple[list, list, list]:
    """Trains FreezeLab's model with FreezeLab's optimizer and the script's with its own.

    Both start from FreezeLab's values (every variable, the dropout seed included) and see the
    same batches in the same order. Returns the start and both ends, as NumPy arrays.
    """
    freezelab, script = workspace.model, namespace["model"]
    assert [v.path for v in freezelab.weights] == [v.path for v in script.weights]
    for source, target in zip(freezelab.variables, script.variables, strict=True):
        target.assign(keras.ops.convert_to_numpy(source))  # a copy: JAX donates buffers
    start = [keras.ops.convert_to_numpy(v) for v in freezelab.weights]
    reference = layer_rate_optimizer(
        OPTIMIZERS[optimizer], variable_multipliers(RATES, workspace.tree), learning_rate=0.01
    )
    exported = namespace[f"LayerRate{OPTIMIZERS[optimizer].__name__}"](
        namespace["variable_multipliers"], learning_rate=0.01
    )
    x, y = workspace.dataset.x[:256], workspace.dataset.y[:256]
    for model, chosen in ((freezelab, reference), (script, exported)):
        model.compile(optimizer=chosen, loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    ends = [[keras.ops.convert_to_numpy(v) for v in m.weights] for m in (freezelab, script)]
    return start, ends[0], ends[1]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_the_scripts_layer_rate_optimizer_makes_freezelabs_updates_bitwise(
    bundled, digits, optimizer
):
    workspace = rates_workspace(bundled, digits)
    code = code_of(workspace, rates_config(optimizer), dataset_key="digits_5_9")
    assert "models." not in code  # self-contained: runs without FreezeLab
    namespace = execute(code)  # builds, freezes, adds LoRA and trains one epoch itself
    assert keras_counts(namespace["model"]) == keras_counts(workspace.model)
    start, freezelab, script = train_both(workspace, namespace, optimizer)
    for weight, expected, got in zip(workspace.model.weights, freezelab, script, strict=True):
        assert np.array_equal(expected.view(np.uint8), got.view(np.uint8)), weight.path
    # The multipliers mattered: conv3 (x0) stayed bitwise, the scaled layers moved.
    paths = [weight.path for weight in workspace.model.weights]
    before, after = dict(zip(paths, start, strict=True)), dict(zip(paths, script, strict=True))
    assert np.array_equal(before["conv3/kernel"], after["conv3/kernel"])
    for moved in ("classifier/lora_kernel_b", "conv2/lora_kernel_b", "batch_norm2/gamma"):
        assert not np.array_equal(before[moved], after[moved]), moved


def test_the_multipliers_are_freezelabs_by_weight_path(bundled, digits):
    workspace = rates_workspace(bundled, digits)
    multipliers = rate_multipliers(rates_config("adam"), workspace.tree)
    # Top block (conv3 + batch_norm3): x0 explicitly; the next block x0.5, then x0.25.
    assert multipliers["conv3/kernel"] == 0.0 and "batch_norm3/gamma" not in multipliers
    assert multipliers["conv2/lora_kernel_a"] == 0.5 and multipliers["conv1/kernel"] == 0.25
    assert multipliers["classifier/lora_kernel_b"] == 2.0
    assert not any(path.endswith(("moving_mean", "moving_variance")) for path in multipliers)
    expected = {
        variable.path: multiplier
        for variable, multiplier in variable_multipliers(RATES, workspace.tree)
    }
    assert all(expected[path] == value for path, value in multipliers.items())
    assert {path for path, value in expected.items() if value != 1.0} - set(multipliers) == {
        "batch_norm1/moving_mean",
        "batch_norm1/moving_variance",
        "batch_norm2/moving_mean",
        "batch_norm2/moving_variance",
    }  # state never reaches an optimizer
    assert rate_multipliers(TrainingConfig(), workspace.tree) == {}
    identity = TrainingConfig(layer_rates=LayerRates({HEAD: 1.0}))
    assert rate_multipliers(identity, workspace.tree) == {}
    assert "LayerRate" not in code_of(workspace, identity)  # plain optimizer, as FreezeLab's


def test_rates_naming_a_layer_the_model_lacks_are_refused(bundled, digits):
    workspace = Workspace(bundled, digits)
    config = TrainingConfig(layer_rates=LayerRates({"transfer_model/nope": 0.5}))
    with pytest.raises(ValueError, match="nope"):
        code_of(workspace, config)


def test_the_script_says_so_when_its_model_lacks_a_listed_weight(bundled, digits):
    workspace = rates_workspace(bundled, digits)
    code = code_of(workspace, rates_config("sgd"), dataset_key="digits_5_9")
    broken = code.replace('"conv1/kernel": 0.25', '"conv9/kernel": 0.25')
    with pytest.raises(ValueError, match=r"no weight at \['conv9/kernel'\]"):
        execute(broken)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_generated_lora_and_rates_code_passes_ruff(bundled, digits, optimizer):
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.is_file():
        pytest.skip("ruff is not installed next to this Python")
    workspace = rates_workspace(bundled, digits)
    code = code_of(workspace, rates_config(optimizer), dataset_key="digits_5_9")
    assert ("def _apply_weight_decay" in code) == (optimizer == "adamw")
    arguments = [str(ruff), "format", "--isolated", "--line-length", "100", "-"]
    formatted = subprocess.run(arguments, input=code, capture_output=True, text=True, check=True)
    assert formatted.stdout == code
    arguments = [str(ruff), "check", "--isolated", "--select", "E,W,F,I,B,UP", "-"]
    arguments[-1:-1] = ["--line-length", "100"]
    checked = subprocess.run(arguments, input=code, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


JAX_SCRIPT = """
import json
import keras
import numpy as np
from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from tests.backend_subprocess import RESULT_PREFIX
from tests.test_export_lora import (
    code_of, execute, flags, keras_counts, lora_before_the_plan, nested_lora_workspace,
    rates_config, rates_workspace, train_both,
)

# A frozen LoRA layer (conv1) and one re-enabled inside the frozen base (conv2).
nested = nested_lora_workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
nested_code = code_of(nested, include_training=False)
rebuilt = execute(nested_code)["model"]
wrong = execute(lora_before_the_plan(nested_code))["model"]

workspace = rates_workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
namespace = execute(code_of(workspace, rates_config("adamw"), dataset_key="digits_5_9"))
_, freezelab, script = train_both(workspace, namespace, "adamw")
print(RESULT_PREFIX + json.dumps({
    "nested_counts": [keras_counts(nested.model), keras_counts(rebuilt)],
    "nested_tree": [nested.tree.totals().trainable, nested.tree.totals().non_trainable],
    "nested_same_flags": flags(nested.model) == flags(rebuilt),
    "wrong_order_counts": keras_counts(wrong),
    "backend": keras.backend.backend(),
    "counts": [keras_counts(workspace.model), keras_counts(namespace["model"])],
    "tree": [workspace.tree.totals().trainable, workspace.tree.totals().non_trainable],
    "same_flags": flags(workspace.model) == flags(namespace["model"]),
    "bitwise": all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                   for a, b in zip(freezelab, script, strict=True)),
}))
"""


def test_lora_and_layer_rates_export_on_jax_too():
    skip_without_jax()
    result = run_on_backend(JAX_SCRIPT, "jax", timeout=600)
    assert result["backend"] == "jax"
    assert result["counts"][0] == result["counts"][1] == result["tree"]
    assert result["same_flags"] and result["bitwise"]
    assert result["nested_counts"][0] == result["nested_counts"][1] == result["nested_tree"]
    assert result["nested_same_flags"]
    assert result["nested_tree"] == [468, 14_498] and result["wrong_order_counts"] == [5_076, 9_890]


def test_the_exported_lora_and_rates_script_runs_as_a_program_without_freezelab(
    bundled, digits, tmp_path
):
    workspace = rates_workspace(bundled, digits)
    code = code_of(workspace, rates_config("rmsprop"), dataset_key="digits_5_9")
    assert "models." not in code
    script = tmp_path / "freezelab_setup.py"
    script.write_text(code, encoding="utf-8")
    (tmp_path / BUNDLED_MODEL_PATH.name).write_bytes(BUNDLED_MODEL_PATH.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    totals = workspace.tree.totals()
    assert f"Trainable: {totals.trainable:,} (FreezeLab: {totals.trainable:,})" in completed.stdout
    assert "'val_accuracy'" in completed.stdout
