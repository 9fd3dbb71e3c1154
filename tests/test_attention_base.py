"""The second bundled base (a tiny Transformer) everywhere a base is chosen: the Model step,
instructor links, the exported script and its base file, LoRA on its attention layers."""

import math

from streamlit.testing.v1 import AppTest

from models.catalogue import bundled_template
from models.datasets import load_bundled_dataset
from models.export.files import base_model_file
from models.export.script import generate_code
from models.lora import LoraSetting
from models.presets import parse_query, preset_for, preset_link
from models.template import BUNDLED_ATTENTION_KEY
from models.training import TrainingConfig
from models.tree import LayerTree
from models.workspace import Workspace
from tests.app_helpers import open_tab
from tests.test_app import APP, button, keras_counts, metrics
from tests.test_export_script import _execute


def test_the_model_step_switches_to_the_attention_base_and_counts_follow():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="bundled_model_key").set_value(BUNDLED_ATTENTION_KEY).run()
    button(at, "Use this bundled model").click().run()
    assert not at.exception, [e.value for e in at.exception]
    workspace = at.session_state["workspace"]
    assert workspace.template.key == BUNDLED_ATTENTION_KEY
    open_tab(at, "2 · Freeze")
    trainable, _ = keras_counts(workspace.model)
    assert metrics(at)["Trainable params"] == f"{trainable:,}"
    # Both recipes name the attention layers of its two blocks.
    assert button(at, "LoRA on attention q, v (4)").disabled is False
    button(at, "LoRA on attention q, v (4)").click().run()
    assert not at.exception
    assert len(workspace.lora_plan()) == 4
    assert metrics(at)["Trainable params"] == f"{keras_counts(workspace.model)[0]:,}"


def test_an_instructor_link_carries_the_attention_base():
    workspace = Workspace(
        bundled_template(BUNDLED_ATTENTION_KEY), load_bundled_dataset("digits_5_9")
    )
    preset, notices = preset_for(workspace.template.key, workspace.dataset.name)
    link = preset_link(preset, "http://workshop:8501/")
    assert not notices
    assert f"model={BUNDLED_ATTENTION_KEY}" in link
    preset, notices = parse_query({"model": [BUNDLED_ATTENTION_KEY]})
    assert preset.model == BUNDLED_ATTENTION_KEY and not notices
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = BUNDLED_ATTENTION_KEY
    at.run()
    assert not at.exception
    assert at.session_state["workspace"].template.key == BUNDLED_ATTENTION_KEY


def test_the_exported_script_loads_the_attention_file_and_rebuilds_the_same_model(tmp_path):
    template = bundled_template(BUNDLED_ATTENTION_KEY)
    workspace = Workspace(template, load_bundled_dataset("digits_5_9"))
    workspace.bulk_action("freeze_base")
    file = base_model_file(template)
    assert file.name == "bundled_digits_attention.keras"
    code = generate_code(
        template,
        workspace.dataset.input_shape,
        workspace.dataset.num_classes,
        workspace.tree.frozen_paths(),
        TrainingConfig(),
        dataset_key="digits_5_9",
        tree=workspace.tree,
        include_training=False,
    )
    model = _execute(code, file.parent)["model"]
    assert keras_counts(model) == keras_counts(workspace.model)

    # MultiHeadAttention names its softmax and dropout sublayers with a process-wide counter
    # ("softmax_6", "softmax_8"), so only the layers with weights keep their paths.
    def frozen_with_weights(tree: LayerTree) -> set[str]:
        return {path for path in tree.frozen_paths() if tree.node(path).total_params}

    assert frozen_with_weights(LayerTree(model)) == frozen_with_weights(workspace.tree)
    assert 'BASE_MODEL_FILE = "bundled_digits_attention.keras"' in code
    assert "attention" in code.split("BASE_MODEL_FILE")[0].lower()


def test_lora_on_its_query_and_value_trains_only_adapters_and_biases():
    template = bundled_template(BUNDLED_ATTENTION_KEY)
    workspace = Workspace(template, load_bundled_dataset("digits_5_9"))
    assert workspace.lora_target_counts() == {"dense": 13, "attention": 4}
    workspace.bulk_action("freeze_base")
    workspace.lora_bulk("attention", LoraSetting(2))
    adapted = workspace.lora_plan()
    assert sorted(path.rsplit("/", 1)[-1] for path in adapted) == [
        "query",
        "query",
        "value",
        "value",
    ]
    # Freezing the base froze the adapters too; unfreezing it trains adapters, not kernels.
    workspace.bulk_action("unfreeze_all")
    trains = {id(variable) for variable in workspace.model.trainable_weights}
    for path in adapted:
        layer = workspace.tree.layer(path)
        assert id(layer._kernel) not in trains
        assert {id(layer.lora_kernel_a), id(layer.lora_kernel_b)} <= trains
    counts = workspace.tree.totals()
    assert (counts.trainable, counts.non_trainable) == keras_counts(workspace.model)
    assert counts.non_trainable == sum(
        math.prod(workspace.tree.layer(path)._kernel.shape) for path in adapted
    )
