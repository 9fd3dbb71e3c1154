"""The dashboard's handlers (components.actions), each run on its own in a Streamlit script.

Every test runs only a handler, not the page: `AppTest.from_function` gives it a real session.
Bad input must leave the workspace as it was and say why in the right place.
"""

import math

from streamlit.testing.v1 import AppTest

from models.bundled import build_default_transfer_model
from models.export import run_config, run_config_bytes
from models.training import TrainingConfig

BASE = "transfer_model/feature_extractor"


def keras_counts(model) -> tuple[int, int]:
    return (
        sum(math.prod(w.shape) for w in model.trainable_weights),
        sum(math.prod(w.shape) for w in model.non_trainable_weights),
    )


def run_script(script, **kwargs) -> AppTest:
    at = AppTest.from_function(script, default_timeout=120, kwargs=kwargs).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_broken_model_upload_is_explained_in_the_model_step_and_changes_nothing():
    def script():
        from components import actions, state
        from components.model_step import ModelRequest

        workspace = actions.open_workspace()
        before = workspace.template.key
        actions.handle_model_request(
            workspace, ModelRequest("upload", data=b"x", filename="a.keras")
        )
        state.put("kept", workspace.template.key == before)
        state.show_notices("model")

    at = run_script(script)
    assert at.session_state["kept"]
    assert at.error and "a.keras" in at.error[0].value
    assert not at.warning  # nothing leaks to the top of the page


def test_a_dataset_request_switches_data_and_a_csv_brings_its_dense_base():
    def script():
        from components import actions, state
        from components.data_step import DataRequest

        workspace = actions.open_workspace()
        actions.handle_data_request(workspace, DataRequest("bundled", key="shapes"))
        state.put("after_bundled", workspace.dataset.name)
        table = b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 3, b"xy"[i % 2 : i % 2 + 1])
                                          for i in range(40))  # fmt: skip
        actions.handle_data_request(
            workspace, DataRequest("csv", data=table, filename="t.csv", label_column="label")
        )
        state.put("after_csv", (workspace.dataset.input_shape, workspace.template.input_shape))

    at = run_script(script)
    assert at.session_state["after_bundled"] == "shapes"
    assert at.session_state["after_csv"] == ((2,), (2,))
    kept = at.session_state["url_session_values"]  # kept for the URL session, not the socket
    assert any("Dense base" in note for note in kept["data_notes"])


def test_restore_applies_the_plan_and_settings_and_a_bad_file_keeps_the_work(tmp_path):
    def script(good: bytes):
        from components import actions, state

        workspace = actions.open_workspace()
        actions.handle_restore(workspace, b"{not json")
        state.put("plan_after_bad", workspace.tree.frozen_paths())
        actions.handle_restore(workspace, good)
        state.put("plan_after_good", workspace.tree.frozen_paths())
        state.show_notices("export")
        state.show_notices()

    from models.catalogue import bundled_template
    from models.datasets import load_bundled_dataset
    from models.workspace import Workspace

    reference = Workspace(bundled_template(), load_bundled_dataset("digits_5_9"))
    reference.bulk_action("freeze_base")
    plan = reference.tree.frozen_paths()
    config = run_config(
        reference.template,
        "digits_5_9",
        "digits",
        plan,
        TrainingConfig(epochs=4, learning_rate=3e-3),
    )
    at = run_script(script, good=run_config_bytes(config))
    assert at.session_state["plan_after_bad"] == frozenset()
    assert at.session_state["plan_after_good"] == plan
    assert at.session_state["training_defaults"].epochs == 4
    assert any("JSON" in e.value for e in at.error)
    assert any("Restored the freeze plan" in s.value for s in at.success)


def test_training_with_nothing_trainable_waits_for_the_fix_then_trains():
    def script():
        from components import actions, state
        from components.train_step import TrainIntent
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        workspace.bulk_action("freeze_all")
        intent = TrainIntent(TrainingConfig(epochs=1, batch_size=64), start=True)
        state.put("first", (actions.handle_training(workspace, intent, None), workspace.runs[:]))
        state.put("warned", state.get(state.ALL_FROZEN_WARNING))
        idle = TrainIntent(TrainingConfig(epochs=1, batch_size=64))
        state.put("fixed", actions.handle_training(workspace, idle, "fix"))
        workspace.latest_run.job.wait()
        state.put("counts", workspace.latest_run.counts)

    at = run_script(script)
    assert at.session_state["first"] == (False, [])
    assert at.session_state["warned"] is True
    assert at.session_state["fixed"] is True and at.session_state["step_tab"] == "4 · Train"
    reference = build_default_transfer_model()
    reference.get_layer("feature_extractor").trainable = False
    counts = at.session_state["counts"]
    assert (counts.trainable, counts.non_trainable) == keras_counts(reference)


def test_a_batch_larger_than_the_data_is_reduced_with_a_notice():
    def script():
        from components import actions
        from components.train_step import TrainIntent
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        intent = TrainIntent(TrainingConfig(epochs=1, batch_size=4096), start=True)
        actions.handle_training(workspace, intent, None)
        workspace.latest_run.job.wait()

    at = run_script(script)
    run = at.session_state["workspace"].latest_run
    assert run.config.batch_size < 4096
    notices = at.session_state["notices"]
    assert any("batch size will be reduced" in notice.text for notice in notices)


def test_renames_reach_live_runs_and_runs_kept_on_disk():
    def script():
        from components import actions, state
        from components.resources import run_store
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
        stored, _ = run_store().load(actions.session_id())  # saved when it ended
        state.put(state.STORED_RUNS, stored)  # as after a refresh: run 1 is on disk
        workspace.runs.clear()
        workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
        actions.rename_runs(workspace, {1: "kept", 2: "live"})
        state.put("names", [s.display_name for s in actions.run_snapshots(workspace)])
        stored, _ = run_store().load(actions.session_id())
        state.put("on_disk", {s.run_id: s.display_name for s in stored})

    at = run_script(script)
    assert at.session_state["names"] == ["kept", "live"]
    assert at.session_state["on_disk"] == {1: "kept", 2: "live"}


def test_a_link_sets_up_the_workspace_and_explains_what_it_ignored():
    def script():
        from components import actions, state

        workspace = actions.open_workspace()
        actions.apply_preset(workspace, {"freeze": ["base"], "epochs": ["4"], "opt": ["lion"]})
        state.put("base_frozen", not workspace.tree.node(workspace.base_path).trainable)
        state.show_notices()

    at = run_script(script)
    assert at.session_state["base_frozen"]
    assert at.session_state["training_defaults"].epochs == 4
    assert [w.value for w in at.warning if "opt=" in w.value]
