"""Tests for models.workspace and models.catalogue: templates, session copies, runs."""

import numpy as np
import pytest

from models.catalogue import bundled_template, load_template
from models.datasets import load_bundled_dataset
from models.training import JobState, TrainingConfig
from models.workspace import MAX_RUNS_KEPT, Workspace


@pytest.fixture(scope="module")
def template():
    return bundled_template()


@pytest.fixture(scope="module")
def digits():
    return load_bundled_dataset("digits_5_9")


def test_template_is_read_only_and_copies_are_independent(template):
    first = template.instantiate()
    second = template.instantiate()
    assert first is not second
    assert all(not array.flags.writeable for array in template.weights)
    first.trainable = False
    first.layers[0].kernel.assign(np.zeros(first.layers[0].kernel.shape))
    assert second.trainable
    np.testing.assert_array_equal(second.layers[0].kernel.numpy(), template.weights[0])
    assert template.pretrained and template.input_shape == (8, 8, 1)
    assert template.num_params == 14288


def test_unknown_template_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        load_template("nope")


def test_two_workspaces_do_not_share_models_plans_or_counts(template, digits):
    first = Workspace(template, digits)
    second = Workspace(template, digits)
    before = second.tree.totals()
    first.bulk_action("freeze_base")
    run = first.start_run(TrainingConfig(epochs=1), background=False)
    assert run.job.progress().state is JobState.FINISHED
    assert second.tree.totals() == before
    assert second.tree.frozen_paths() == frozenset()
    assert first.tree.totals() != before
    base_weights = second.tree.layer(second.base_path).get_weights()
    for left, right in zip(base_weights, template.weights, strict=True):
        np.testing.assert_array_equal(left, right)


def test_runs_keep_their_plan_and_only_the_latest_few_are_kept(template, digits):
    workspace = Workspace(template, digits)
    workspace.bulk_action("freeze_base")
    first = workspace.start_run(TrainingConfig(epochs=1), background=False)
    workspace.bulk_action("unfreeze_all")
    second = workspace.start_run(TrainingConfig(epochs=1), background=False)
    assert first.frozen_paths and not second.frozen_paths
    assert first.counts.trainable < second.counts.trainable
    for _ in range(MAX_RUNS_KEPT - 1):
        workspace.start_run(TrainingConfig(epochs=1, validation_fraction=0), background=False)
    assert len(workspace.runs) == MAX_RUNS_KEPT
    assert [run.run_id for run in workspace.runs] == list(range(2, MAX_RUNS_KEPT + 2))


def test_changing_dataset_rebuilds_the_head_and_keeps_the_plan(template, digits):
    workspace = Workspace(template, digits)
    workspace.bulk_action("freeze_base")
    plan = workspace.tree.frozen_paths()
    shapes = load_bundled_dataset("shapes")
    workspace.set_dataset(shapes)
    assert workspace.model.output_shape[-1] == shapes.num_classes
    assert workspace.model.input_shape[1:] == shapes.input_shape
    assert plan <= workspace.tree.frozen_paths()
    run = workspace.start_run(TrainingConfig(epochs=1), background=False)
    assert run.job.progress().state is JobState.FINISHED, run.job.progress().message
    assert run.job.verification().all_unchanged


def test_no_plan_change_while_training(template, digits):
    workspace = Workspace(template, digits)
    workspace.start_run(TrainingConfig(epochs=50, batch_size=4))
    try:
        with pytest.raises(RuntimeError, match="while training runs"):
            workspace.bulk_action("freeze_all")
        with pytest.raises(RuntimeError, match="while training runs"):
            workspace.start_run(TrainingConfig(epochs=1))
    finally:
        workspace.stop()
        workspace.latest_run.job.wait(60)
    assert workspace.latest_run.job.progress().state is JobState.CANCELLED
    workspace.bulk_action("freeze_all")
    assert workspace.tree.totals().trainable == 0


def test_unknown_bulk_action_is_refused(template, digits):
    with pytest.raises(ValueError, match="Unknown bulk action 'melt'"):
        Workspace(template, digits).bulk_action("melt")


def test_a_dataset_the_base_cannot_take_leaves_the_workspace_as_it_was(template, digits):
    from models.upload_tables import load_csv_dataset

    workspace = Workspace(template, digits)
    workspace.bulk_action("freeze_base")
    model, plan, revision = workspace.model, workspace.tree.frozen_paths(), workspace.revision
    table, _ = load_csv_dataset(b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n", "label")
    with pytest.raises(ValueError, match="tabular"):
        workspace.set_dataset(table)
    assert workspace.model is model and workspace.dataset is digits
    assert workspace.tree.frozen_paths() == plan and workspace.revision == revision


def test_an_application_template_can_be_instantiated_by_many_sessions():
    from models.applications import application_template

    template = application_template("mobilenet_v2_035", 32, pretrained=False)
    first, second = template.instantiate(), template.instantiate()
    assert first is not second
    assert len(second.weights) == len(template.weights) > 0


def test_switching_between_float_and_uint8_data_of_one_shape_rebuilds_the_input(template, digits):
    from models.datasets import ImageDataset

    workspace = Workspace(template, digits)
    workspace.bulk_action("freeze_base")
    pixels = np.round(digits.x * 255).astype("uint8")
    uint8_digits = ImageDataset(
        name="uploaded_images", title="digits as uint8", description="the same digits, uint8",
        x=pixels, y=digits.y, class_names=digits.class_names,
    )  # fmt: skip
    assert uint8_digits.input_shape == digits.input_shape
    workspace.set_dataset(uint8_digits)
    # Keras would cast uint8 batches into a float32 input unscaled (values 0..255): the model
    # must be rebuilt for uint8, the freeze plan kept.
    assert workspace.model.inputs[0].dtype == "uint8"
    assert workspace.tree.node(workspace.base_path).trainable is False
    scaled = workspace.model.layers[1](pixels[:4])
    np.testing.assert_array_equal(np.asarray(scaled), pixels[:4] / np.float32(255))
    workspace.set_dataset(digits)
    assert workspace.model.inputs[0].dtype == "float32"
