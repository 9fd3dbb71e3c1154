"""AppTest checks of the dashboard page."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from models import LayerTree, build_default_transfer_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_page_loads_the_bundled_model_and_shows_keras_counts():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    totals = LayerTree(build_default_transfer_model()).totals()
    values = {metric.label: metric.value for metric in at.metric}
    assert values["Trainable params"] == f"{totals.trainable:,}"
    assert values["Non-trainable params"] == f"{totals.non_trainable:,}"
