"""AppTest of the pitfall lab and lessons sections, rendered standalone."""

import pytest
from streamlit.testing.v1 import AppTest

# Freezing the top model leaves nothing to train; Keras warns, and the lab shows it.
pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")


def pitfall_lab_script():
    from components.pitfall_lab import render_pitfall_lab

    render_pitfall_lab()


def lessons_script():
    from components.lessons import render_lessons

    render_lessons()


def button(at, label):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; have {[b.label for b in at.button]}"
    return matches[0]


def test_pitfall_lab_runs_one_pitfall_and_shows_both_verdicts():
    at = AppTest.from_function(pitfall_lab_script, default_timeout=120).run()
    assert not at.exception
    assert "Click **Run experiment**" in at.info[0].value
    at.selectbox(key="pitfall_choice").set_value("child_under_frozen_parent").run()
    assert not at.exception
    button(at, "▶ Run experiment").click().run()
    assert not at.exception
    assert not at.error
    warnings = [w.value for w in at.warning]
    infos = [i.value for i in at.info]
    assert any("'conv3' trained" in text for text in warnings)
    assert any("bitwise unchanged" in text for text in infos)
    labels = {metric.label for metric in at.metric}
    assert {"Really trains", "'conv3' flag"} <= labels
    assert len(at.get("plotly_chart")) == 2
    result = at.session_state["pitfall_results"][("child_under_frozen_parent", 0)]
    # A rerun shows the same result again without recomputing it.
    at.run()
    assert at.session_state["pitfall_results"][("child_under_frozen_parent", 0)] is result
    assert any("'conv3' trained" in w.value for w in at.warning)


def test_pitfall_lab_draws_the_shared_layer_save_and_load_and_custom_loop_pitfalls():
    at = AppTest.from_function(pitfall_lab_script, default_timeout=240).run()
    for key in ("shared_layer", "save_and_load", "custom_loop"):
        at.selectbox(key="pitfall_choice").set_value(key).run()
        button(at, "▶ Run experiment").click().run()
        assert not at.exception, key
        failures = [e.value for e in at.error if "could not" in e.value]
        assert not failures, failures
        result = at.session_state["pitfall_results"][(key, 0)]
        banners = [b.value for b in (*at.error, *at.warning, *at.success, *at.info)]
        assert all(variant.verdict in banners for variant in result.variants), key
        labels = {metric.label for metric in at.metric}
        for variant in result.variants:
            assert {measurement.label for measurement in variant.measurements} <= labels, key
        captions = " ".join(caption.value for caption in at.caption)
        assert result.right.verification.message() in captions, key
        assert len(at.get("plotly_chart")) == 2, key


def test_lessons_show_keras_numbers_and_react_to_controls():
    at = AppTest.from_function(lessons_script, default_timeout=120).run()
    assert not at.exception
    values = [(m.label, m.value) for m in at.metric]
    assert values[:3] == [
        ("len(layer.weights)", "2"),
        ("len(layer.trainable_weights)", "2"),
        ("len(layer.non_trainable_weights)", "0"),
    ]
    assert values[3:6] == [
        ("len(layer.weights)", "4"),
        ("len(layer.trainable_weights)", "2"),
        ("len(layer.non_trainable_weights)", "2"),
    ]
    assert values[6:9] == [
        ("len(layer.weights)", "2"),
        ("len(layer.trainable_weights)", "0"),
        ("len(layer.non_trainable_weights)", "2"),
    ]
    at.checkbox(key="lessons_dense_trainable").check().run()
    assert [m.value for m in at.metric][6:9] == ["2", "2", "0"]
    at.checkbox(key="lessons_outer_trainable").check()
    at.checkbox(key="lessons_child_trainable").check()
    at.radio(key="lessons_inner_trainable").set_value("False").run()
    assert not at.exception
    assert any("Surprise" in w.value for w in at.warning)
    button(at, "▶ Train 3 epochs").click().run()
    assert not at.exception and not at.error
    assert any("bitwise unchanged" in s.value for s in at.success)


def test_the_diagnostics_lesson_shows_live_numbers_from_one_run():
    at = AppTest.from_function(lessons_script, default_timeout=120).run()
    at.select_slider(key="lessons_diagnostics_rate").set_value(1e-1).run()
    button(at, "▶ Run the diagnostics").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = at.session_state["lessons_diagnostics"]
    assert result.learning_rate == 0.1
    markdown = " ".join(m.value for m in at.markdown)
    assert result.plan_message in markdown
    fast = int(result.statistics.verdict.eq("too fast").sum())
    assert f"{fast} layer(s) above 1e-2 per step" in markdown and fast > 0
    shown = [frame.value for frame in at.dataframe]
    assert any(list(frame.columns) == list(result.statistics.columns) for frame in shown)
    assert any("cka" in frame.columns for frame in shown)
