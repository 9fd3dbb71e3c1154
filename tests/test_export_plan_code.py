"""Tests for models/export/plan_code.py: a freeze plan's counts, without touching the model."""

from models.export.plan_code import plan_counts
from models.workspace import Workspace


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
