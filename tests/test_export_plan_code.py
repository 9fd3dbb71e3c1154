"""Tests for models/export/plan_code.py: a freeze plan's counts, without touching the model."""

import copy
import dataclasses

import pytest

from models.catalogue import load_template
from models.datasets import load_bundled_dataset
from models.export.plan_code import plan_counts
from models.workspace import Workspace


@pytest.fixture(scope="module")
def shapes():
    return load_bundled_dataset("shapes")


@pytest.fixture(scope="module")
def mobilenet_template():
    return load_template("mobilenet_v2_035", input_size=32, pretrained=False)


@pytest.fixture
def mobilenet(mobilenet_template):
    # A private copy of the config: Keras's Functional.from_config empties the dict it gets,
    # so ModelTemplate.instantiate() works once per template (reported to the lead).
    return dataclasses.replace(mobilenet_template, config=copy.deepcopy(mobilenet_template.config))


def test_plan_counts_match_keras_without_touching_the_model(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    tree = workspace.tree
    block = next(path for path in tree.paths() if path.endswith("/block_3_project_BN"))
    before = tree.totals()
    for action, argument in (("freeze_up_to", block), ("freeze_batch_norm", None)):
        workspace.bulk_action(action, argument)
        plan = tree.frozen_paths()
        workspace.bulk_action("unfreeze_all")
        assert plan_counts(tree, plan) != before
        assert tree.totals() == before
        tree.apply_frozen_paths(plan)
        assert plan_counts(tree, plan) == tree.totals()
        workspace.bulk_action("unfreeze_all")
