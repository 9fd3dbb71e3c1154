"""AppTest checks of the workshop features: instructor links, Export (code, config restore)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from models.export import run_config, run_config_bytes
from models.layer_rates import LayerRates
from models.lora import LoraSetting
from models.training import TrainingConfig
from tests.app_helpers import open_tab
from tests.test_app import keras_counts, metrics

APP = str(Path(__file__).resolve().parents[1] / "app.py")
BASE = "transfer_model/feature_extractor"


def app_with_link(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_an_instructor_link_sets_up_the_room_and_hides_controls():
    at = app_with_link(
        data="shapes", freeze="base", epochs="2", lr="0.003", hide="model,settings",
        title="Room 1", opt="adamax",
    )  # fmt: skip
    assert not at.exception
    workspace = at.session_state["workspace"]
    assert workspace.dataset.name == "shapes"
    assert not workspace.tree.node(BASE).trainable
    assert any(h.value == "Room 1" for h in at.header)
    [notice] = [w.value for w in at.warning if "adamax" in w.value]
    assert "opt=" in notice and notice.count("ignored") == 1 and "''" not in notice
    assert "model_source" not in [r.key for r in at.radio]  # the Model tab opens first
    assert "data_source" in [r.key for r in open_tab(at, "3 · Data").radio]
    assert not at.sidebar.number_input  # settings hidden: the instructor's are used
    assert any("2 epochs" in c.value and "0.003" in c.value for c in at.sidebar.caption)


def test_without_a_link_nothing_is_hidden_and_no_notice_shows():
    at = app_with_link()
    assert not at.warning
    assert "model_source" in {r.key for r in at.radio}
    assert "data_source" in {r.key for r in open_tab(at, "3 · Data").radio}


def test_export_shows_runnable_code_and_restores_an_uploaded_config():
    at = open_tab(app_with_link(), "Export")
    workspace = at.session_state["workspace"]
    code = next(c.value for c in at.code if "import keras" in c.value)
    assert "compile(" in code and "fit(" in code
    workspace.bulk_action("freeze_base")
    plan = workspace.tree.frozen_paths()
    config = run_config(
        workspace.template,
        "digits_5_9",
        "digits",
        plan,
        TrainingConfig(epochs=4, learning_rate=3e-3),
    )
    workspace.bulk_action("unfreeze_all")
    at.run()
    at.file_uploader(key="config_upload").set_value(
        ("plan.json", run_config_bytes(config), "application/json")
    ).run()
    assert not at.exception
    assert workspace.tree.frozen_paths() == plan
    assert at.session_state["training_defaults"].epochs == 4
    assert at.sidebar.number_input[0].value == 4
    assert any("Restored the freeze plan and settings" in s.value for s in at.success)
    assert not any("Restored" in w.value for w in at.warning)


def test_a_broken_config_upload_is_explained():
    at = open_tab(app_with_link(), "Export")
    at.file_uploader(key="config_upload").set_value(
        ("plan.json", b"{not json", "application/json")
    ).run()
    assert not at.exception
    assert at.error and "JSON" in " ".join(e.value for e in at.error)
    assert at.session_state["workspace"].tree.frozen_paths() == frozenset()


def test_finished_runs_survive_a_refresh_through_the_session_id_in_the_url():
    first = app_with_link()
    session = first.query_params["session"]
    session = session[0] if isinstance(session, list) else session
    workspace = first.session_state["workspace"]
    workspace.bulk_action("freeze_base")
    workspace.start_run(TrainingConfig(epochs=1), background=False)
    first.run()  # the rerun after the run ends keeps it on disk
    again = app_with_link(session=session)  # a refresh: a new browser session, same URL
    assert not again.exception
    open_tab(again, "Compare runs")
    compared = next(f.value for f in again.dataframe if "Run" in f.value.columns)
    assert list(compared["Run"]) == ["Run 1"]  # the run from before the refresh
    stored = again.session_state["stored_runs"]
    assert [run.run_id for run in stored] == [1]
    assert stored[0].verification.all_unchanged
    run = again.session_state["workspace"].start_run(TrainingConfig(epochs=1), background=False)
    assert run.run_id == 2  # numbering continues after the restored runs
    other = app_with_link(session="../../etc")
    assert other.session_state["stored_runs"] == []


def test_a_two_phase_schedule_runs_from_the_sidebar_and_marks_the_phase_boundary():
    at = app_with_link()
    at.sidebar.number_input[0].set_value(1).run()
    at.radio(key="schedule_mode").set_value("Two phases").run()
    at.number_input(key="fine_tune_epochs_Two phases").set_value(1).run()
    next(b for b in at.button if b.label == "▶ Train").click().run()
    run = at.session_state["workspace"].latest_run
    assert run.job.wait(120).state.value == "finished", run.job.progress().message
    at.run()
    at.run()
    assert not at.exception
    assert [name for name, _, _ in run.job.phase_plans] == ["feature extraction", "fine-tuning"]
    assert any("Finished 2 phases" in s.value for s in at.success)
    assert run.job.verification().num_checked == 0  # the whole base trained in phase 2


def test_gradual_unfreezing_runs_from_the_sidebar():
    at = app_with_link()
    at.sidebar.number_input[0].set_value(1).run()
    at.radio(key="schedule_mode").set_value("Gradual unfreezing").run()
    at.number_input(key="gradual_steps").set_value(2).run()
    next(b for b in at.button if b.label == "▶ Train").click().run()
    run = at.session_state["workspace"].latest_run
    assert run.job.wait(120).state.value == "finished", run.job.progress().message
    at.run()
    assert not at.exception
    assert [name for name, _, _ in run.job.phase_plans] == [
        "feature extraction", "unfreeze top 3", "unfreeze top 6",
    ]  # fmt: skip


def test_a_link_with_lora_and_layer_rates_sets_up_adapters_with_keras_counts():
    conv2, head = f"{BASE}/conv2", "transfer_model/classifier"
    at = app_with_link(
        lora=f"{conv2}:2:4,{head}:3,{BASE}/batch_norm1:2,{BASE}/conv1:0",
        freeze="base", decay="0.5", decay_block="2", rates=f"{head}:2",
    )  # fmt: skip
    assert not at.exception, [e.value for e in at.exception]
    workspace = at.session_state["workspace"]
    assert workspace.lora_plan() == {conv2: LoraSetting(2, 4.0), head: LoraSetting(3, 3.0)}
    assert not workspace.tree.node(BASE).trainable  # the plan after the adapters
    totals = workspace.tree.totals()
    assert keras_counts(workspace.model) == (totals.trainable, totals.non_trainable)
    # Shown once, on the first page (as Markdown: the underscores are escaped).
    warnings = " ".join(w.value for w in at.warning).replace("\\", "")
    assert "batch_norm1' was skipped" in warnings and "BatchNormalization" in warnings
    assert "lora=" in warnings and "conv1:0" in warnings and "from 1 to 512" in warnings
    open_tab(at, "2 · Freeze")
    assert metrics(at)["Trainable params"] == f"{totals.trainable:,}"
    rates = at.session_state["training_defaults"].layer_rates
    assert rates == LayerRates({head: 2.0}, decay_factor=0.5, layers_per_block=2)
    # The Export tab's code and link carry both.
    open_tab(at, "Export")
    code = next(c.value for c in at.code if "import keras" in c.value)
    assert 'base.get_layer("conv2").enable_lora(2, lora_alpha=4.0)' in code
    assert "class LayerRateAdam(keras.optimizers.Adam):" in code
    link = next(c.value for c in at.code if "?" in c.value and "lora=" in c.value)
    assert f"lora={conv2}:2:4.0,{head}:3:3.0" in link and "decay=0.5" in link


def test_restoring_a_config_with_adapters_puts_them_on_the_model():
    at = open_tab(app_with_link(), "Export")
    workspace = at.session_state["workspace"]
    adapters = {f"{BASE}/conv3": LoraSetting(4, 8.0)}
    rates = LayerRates({BASE: 0.1}, base_path=BASE)
    config = run_config(
        workspace.template,
        "digits_5_9",
        "digits",
        [f"{BASE}/conv1"],
        TrainingConfig(epochs=2, learning_rate=3e-3, layer_rates=rates),
        adapters=adapters,
    )
    at.file_uploader(key="config_upload").set_value(
        ("plan.json", run_config_bytes(config), "application/json")
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert workspace.lora_plan() == adapters
    assert workspace.tree.frozen_paths() == {f"{BASE}/conv1"}
    totals = workspace.tree.totals()
    assert keras_counts(workspace.model) == (totals.trainable, totals.non_trainable)
    assert at.session_state["training_defaults"].layer_rates == rates
    assert any(
        "Restored the freeze plan, LoRA adapters and settings" in s.value for s in at.success
    )
