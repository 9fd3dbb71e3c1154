"""A page that refreshes or comes back finds its URL session (components.url_session).

Each AppTest below is a new page (a new socket) of the same link: same `session` query
parameter. The server's registry is shared by them, as by the pages of a real server.
"""

from streamlit.testing.v1 import AppTest

from models.run_store import new_session_id


def page(script, session_id: str, **kwargs) -> AppTest:
    at = AppTest.from_function(script, default_timeout=120, kwargs=kwargs)
    at.query_params["session"] = session_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_refreshed_page_reattaches_to_its_running_job_and_keeps_plan_and_settings():
    def first_page():
        from components import actions, state
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        workspace.bulk_action("freeze_base")
        state.set_setting("validation_fraction", 0.35)
        state.put(state.CHOSEN_CONFIG, TrainingConfig(epochs=1000, batch_size=8))
        workspace.start_run(TrainingConfig(epochs=1000, batch_size=8))
        state.put("plan", sorted(workspace.tree.frozen_paths()))

    def refreshed_page():
        from components import actions, state

        workspace = actions.open_workspace()
        state.put("training", workspace.is_training)
        state.put("plan", sorted(workspace.tree.frozen_paths()))
        state.put("split", state.setting("validation_fraction"))
        state.put("epochs", actions.training_defaults().epochs)
        state.show_notices()
        workspace.stop()  # Stop works on the reattached job
        workspace.latest_run.job.wait(60)
        state.put("ending", workspace.latest_run.ending.value)

    session_id = new_session_id()
    before = page(first_page, session_id)
    after = page(refreshed_page, session_id)
    assert after.session_state["training"]
    assert after.session_state["plan"] == before.session_state["plan"] != []
    assert after.session_state["split"] == 0.35 and after.session_state["epochs"] == 1000
    assert after.session_state["step_tab"] == "4 · Train"  # the page opens on its live run
    assert any("still training" in info.value for info in after.info)
    assert after.session_state["ending"] == "stopped"


def test_a_released_session_is_rebuilt_from_its_record_with_model_data_plan_and_runs():
    def first_page():
        from components import actions, state, url_session
        from components.data_step import DataRequest
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        actions.handle_data_request(workspace, DataRequest("bundled", key="shapes"))
        workspace.bulk_action("freeze_base")
        from models.lora import LoraSetting

        conv = f"{workspace.base_path}/conv2"
        workspace.set_layer_lora(conv, LoraSetting(2, alpha=4))
        state.set_setting("validation_fraction", 0.25)
        workspace.start_run(TrainingConfig(epochs=1, batch_size=32), background=False)
        url_session.remember_session(workspace)  # as the page does after every run
        state.put("plan", sorted(workspace.tree.frozen_paths()))
        state.put("adapters", {p: s.to_dict() for p, s in workspace.lora_plan().items()})

    def release():
        from components import url_session
        from components.resources import session_registry

        session_registry().get(url_session.session_id()).workspace = None  # as make_room does

    session_id = new_session_id()
    before = page(first_page, session_id)
    page(release, session_id)

    def returning():
        from components import actions, state
        from models.training import TrainingConfig

        workspace = actions.open_workspace()
        state.put("dataset", workspace.dataset.name)
        state.put("plan", sorted(workspace.tree.frozen_paths()))
        state.put("adapters", {p: s.to_dict() for p, s in workspace.lora_plan().items()})
        state.put("split", state.setting("validation_fraction"))
        state.put("stored", [run.run_id for run in state.get(state.STORED_RUNS)])
        run = workspace.start_run(TrainingConfig(epochs=1, batch_size=32), background=False)
        state.put("next_run_id", run.run_id)

    after = page(returning, session_id)
    assert after.session_state["dataset"] == "shapes"
    assert after.session_state["plan"] == before.session_state["plan"] != []
    assert after.session_state["adapters"] == before.session_state["adapters"] != {}
    assert after.session_state["split"] == 0.25
    assert after.session_state["stored"] == [1]
    assert after.session_state["next_run_id"] == 2


def digit_zip(count: int = 60) -> bytes:
    import io
    import zipfile

    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            image = io.BytesIO()
            Image.new("L", (28, 28), (index * 37) % 256).save(image, format="PNG")
            archive.writestr(f"{'ab'[index % 2]}/{index}.png", image.getvalue())
    return buffer.getvalue()


def test_an_uploaded_zip_is_stored_at_the_models_size_and_rebuilt_after_a_release():
    def first_page(data):
        from components import actions, state, url_session
        from components.data_step import DataRequest

        workspace = actions.open_workspace()
        request = DataRequest("zip", data=data, filename="digits.zip", image_size=64)
        actions.handle_data_request(workspace, request)
        url_session.remember_session(workspace)
        state.put("stored", (workspace.dataset.x.shape, str(workspace.dataset.x.dtype)))

    def release():
        from components import url_session
        from components.resources import session_registry

        session_registry().get(url_session.session_id()).workspace = None

    def returning():
        from components import actions, state

        workspace = actions.open_workspace()
        state.put("stored", (workspace.dataset.x.shape, str(workspace.dataset.x.dtype)))

    session_id = new_session_id()
    before = page(first_page, session_id, data=digit_zip())
    assert before.session_state["stored"] == ((60, 8, 8, 1), "uint8")  # the CNN sees 8x8
    page(release, session_id)
    after = page(returning, session_id)
    assert after.session_state["stored"] == before.session_state["stored"]


def test_an_upload_over_the_memory_budget_is_refused_before_decoding_and_changes_nothing():
    def script(data):
        from components import actions, state
        from components.data_step import DataRequest
        from components.resources import session_registry
        from models.sessions import model_bytes

        workspace = actions.open_workspace()
        registry = session_registry()
        kept_budget = registry.memory_budget
        # Idle sessions could be released, so only this session's own model counts: 1000
        # bytes are left, and 60 8x8x3 images need 11,520 (estimated before decoding).
        registry.memory_budget = model_bytes(workspace.model) + 1000
        try:
            request = DataRequest("zip", data=data, filename="digits.zip", image_size=64)
            actions.handle_data_request(workspace, request)
        finally:
            registry.memory_budget = kept_budget
        state.put("dataset", workspace.dataset.name)
        state.show_notices("data")

    at = page(script, new_session_id(), data=digit_zip())
    assert at.session_state["dataset"] == "digits_5_9"
    assert at.error and "allows" in at.error[0].value, [e.value for e in at.error]
