"""AppTest checks of the diagnostics in the Drift step: gradients, updates, representation."""

from streamlit.testing.v1 import AppTest

from components.state import escape_markdown
from models.diagnostics import speed_verdicts
from tests.app_helpers import open_tab
from tests.test_app import APP, button, wait_for_run


def test_the_drift_step_shows_each_layers_update_ratio_and_names_the_fast_ones():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.select_slider[0].set_value(1e-1).run()  # a learning rate too high for some
    button(at, "▶ Train").click().run()
    wait_for_run(at)
    open_tab(at, "5 · Drift")
    assert not at.exception, [e.value for e in at.exception]
    assert any(h.value == "Gradients and updates per step" for h in at.subheader)
    frame = at.session_state["workspace"].latest_run.job.step_statistics_frame()
    verdicts = speed_verdicts(frame)
    assert verdicts["too_fast"], verdicts  # at 0.1, some layer moves more than 1e-2 a step
    warnings = " ".join(w.value for w in at.warning)
    for path in verdicts["too_fast"][:5]:  # the message names up to five
        assert escape_markdown(path) in warnings
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any("Update ratio of each layer that trains" in spec for spec in titles)
    assert any("Gradient norm of each layer that trains" in spec for spec in titles)
    # The representation change, from the same run: each block's CKA, frozen blocks exactly 1.
    assert any(h.value == "How much each block's features changed" for h in at.subheader)
    assert any("How much each block" in spec for spec in titles)
    report = at.session_state["workspace"].latest_run.job.representation()
    frame = report.frame
    assert not frame.empty and report.held_out
    assert frame.loc[frame.frozen_through, "cka"].eq(1.0).all()
    assert frame.loc[~frame.frozen, "cka"].lt(1.0).all()
    assert any(report.note in caption.value for caption in at.caption)
