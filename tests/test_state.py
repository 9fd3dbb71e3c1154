"""User settings made in one tab survive while another tab is open (components.state)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_helpers import open_tab

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    return at


def test_validation_split_survives_other_tabs_and_reaches_training(app):
    open_tab(app, "3 · Data")
    app.slider(key="validation_fraction").set_value(0.5).run()
    open_tab(app, "2 · Freeze")  # the slider is not drawn in this run
    open_tab(app, "1 · Model")
    [start] = [button for button in app.button if button.label == "▶ Train"]
    start.click().run()
    assert not app.exception
    run = app.session_state["workspace"].latest_run
    assert run.config.validation_fraction == 0.5
    app.session_state["workspace"].stop()
    run.job.wait(timeout=120)  # no training thread outlives the test (TensorFlow aborts at exit)
    open_tab(app, "3 · Data")
    assert app.slider(key="validation_fraction").value == 0.5


def test_every_tab_setting_is_kept_while_its_tab_is_closed(app):
    open_tab(app, "1 · Model")
    app.radio(key="model_source").set_value("keras.applications").run()
    app.selectbox(key="application_key").set_value("resnet50").run()
    app.checkbox(key="application_pretrained").uncheck().run()
    open_tab(app, "2 · Freeze")
    app.number_input(key="unfreeze_top_count").set_value(3).run()
    target = app.selectbox(key="freeze_up_to_target")
    target.set_value(target.options[1]).run()
    chosen_target = app.selectbox(key="freeze_up_to_target").value
    open_tab(app, "3 · Data")
    app.radio(key="data_source").set_value("keras.datasets").run()
    app.number_input(key="keras_dataset_subset").set_value(3_500).run()
    app.sidebar.radio(key="schedule_mode").set_value("Gradual unfreezing").run()
    app.sidebar.number_input(key="gradual_steps").set_value(5).run()
    app.sidebar.radio(key="schedule_mode").set_value("One run").run()  # steps not drawn

    open_tab(app, "4 · Train")
    open_tab(app, "1 · Model")
    assert app.radio(key="model_source").value == "keras.applications"
    assert app.selectbox(key="application_key").value == "resnet50"
    assert app.checkbox(key="application_pretrained").value is False
    open_tab(app, "2 · Freeze")
    assert app.number_input(key="unfreeze_top_count").value == 3
    assert app.selectbox(key="freeze_up_to_target").value == chosen_target
    open_tab(app, "3 · Data")
    assert app.radio(key="data_source").value == "keras.datasets"
    assert app.number_input(key="keras_dataset_subset").value == 3_500
    app.sidebar.radio(key="schedule_mode").set_value("Gradual unfreezing").run()
    assert app.sidebar.number_input(key="gradual_steps").value == 5
