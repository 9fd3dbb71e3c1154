"""Tests for models/export/plan_code.py: a freeze plan's counts, without touching the model."""

import math

from models.export.plan_code import plan_counts
from models.lora import LoraSetting
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


def test_plan_counts_keep_lora_kernels_frozen_as_keras_does(bundled, digits):
    base = "transfer_model/feature_extractor"
    workspace = Workspace(bundled, digits)
    workspace.set_lora(
        {f"{base}/conv2": LoraSetting(2), "transfer_model/classifier": LoraSetting(3)}
    )
    tree = workspace.tree
    for action, argument in (("unfreeze_all", None), ("freeze_up_to", f"{base}/batch_norm1")):
        workspace.bulk_action(action, argument)
        plan = tree.frozen_paths()
        workspace.bulk_action("freeze_all")
        assert plan_counts(tree, plan) != tree.totals()
        tree.apply_frozen_paths(plan)
        keras_counts = (
            sum(math.prod(weight.shape) for weight in workspace.model.trainable_weights),
            sum(math.prod(weight.shape) for weight in workspace.model.non_trainable_weights),
        )
        assert plan_counts(tree, plan) == tree.totals()
        assert (tree.totals().trainable, tree.totals().non_trainable) == keras_counts
