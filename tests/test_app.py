"""AppTest checks of the dashboard: default flow, tree clicks, bulk actions, Stop, isolation."""

import ast
import json
import math
import time
from pathlib import Path

import keras
import pytest
from streamlit.testing.v1 import AppTest

from models import LayerTree, build_default_transfer_model
from tests.app_helpers import open_tab

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
BASE = "transfer_model/feature_extractor"


def keras_counts(model) -> tuple[int, int]:
    """Independent reference: Keras's own weight lists."""
    return (
        sum(math.prod(w.shape) for w in model.trainable_weights),
        sum(math.prod(w.shape) for w in model.non_trainable_weights),
    )


def metrics(at: AppTest) -> dict[str, str]:
    """The first metric of each label (the Freeze step's totals come before the lab's)."""
    values: dict[str, str] = {}
    for metric in at.metric:
        values.setdefault(metric.label, metric.value)
    return values


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; have {[b.label for b in at.button]}"
    return matches[0]


def tree_element(at: AppTest):
    elements = at.get("bidi_component")
    assert len(elements) == 1
    return elements[0]


def click_tree(at: AppTest, frozen: list[str]) -> AppTest:
    """Sends the plan exactly as the browser does (the on_change callback runs first)."""
    element = tree_element(at)
    states = at._tree.get_widget_states()
    widget = states.widgets.add()
    widget.id = element.proto.id
    widget.json_value = json.dumps({"frozen": sorted(frozen)})
    return at._run(states)


def wait_for_run(at: AppTest, timeout: float = 120) -> None:
    """AppTest neither waits for threads nor fires run_every: poll with reruns."""
    deadline = time.monotonic() + timeout
    workspace = at.session_state["workspace"]
    while not workspace.latest_run.job.progress().done:
        assert time.monotonic() < deadline, "training did not end in time"
        time.sleep(0.3)
    at.run()
    at.run()


def session_counts(at: AppTest) -> tuple[int, int]:
    return keras_counts(at.session_state["workspace"].model)


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    return at


def test_first_load_preselects_the_bundled_model_and_digits_task(app):
    assert app.radio(key="model_source").value == "Bundled (offline)"  # the Model tab opens
    assert app.session_state["workspace"].template.key == "bundled_digits_cnn"
    assert not button(app, "▶ Train").disabled
    # Closed tabs do not run: no layer tree, no Freeze totals yet.
    assert not app.get("bidi_component") and "Trainable params" not in metrics(app)
    values = metrics(open_tab(app, "2 · Freeze"))
    totals = LayerTree(build_default_transfer_model()).totals()
    assert values["Trainable params"] == f"{totals.trainable:,}"
    assert values["Non-trainable params"] == f"{totals.non_trainable:,}"
    payload = json.loads(tree_element(app).proto.json)
    assert any(node["path"] == BASE for node in payload["nodes"])
    open_tab(app, "3 · Data")
    assert metrics(app)["Classes"] == "5"
    assert app.selectbox(key="dataset_choice").value == "digits_5_9"


def test_default_flow_freeze_by_tree_click_train_and_verify(app):
    open_tab(app, "2 · Freeze")
    nodes = json.loads(tree_element(app).proto.json)["nodes"]
    plan = [node["path"] for node in nodes if node["path"].startswith(BASE)]
    click_tree(app, plan)
    assert not app.exception
    reference = build_default_transfer_model()
    reference.get_layer("feature_extractor").trainable = False
    trainable, non_trainable = keras_counts(reference)
    assert metrics(app)["Trainable params"] == f"{trainable:,}"
    assert metrics(app)["Non-trainable params"] == f"{non_trainable:,}"
    assert session_counts(app) == (trainable, non_trainable)

    app.sidebar.number_input[0].set_value(2).run()
    button(app, "▶ Train").click().run()
    assert not app.exception
    assert button(app, "■ Stop").disabled is False
    assert app.session_state["step_tab"] == "4 · Train"  # Train opens its live progress
    wait_for_run(app)
    assert not app.exception
    assert any("Finished 2 epoch(s)." in s.value for s in app.success)
    open_tab(app, "5 · Drift")
    assert any(s.value == "All 6 frozen layers are bitwise unchanged." for s in app.success)
    assert len(app.get("plotly_chart")) >= 4  # lines, heatmap, final bars, BatchNorm state
    assert app.get("download_button")
    run = app.session_state["workspace"].latest_run
    assert run.frozen_paths == frozenset(plan)
    assert run.job.verification().all_unchanged


def test_plan_set_through_session_state_is_applied(app):
    key = tree_element(open_tab(app, "2 · Freeze")).key
    app.session_state[key] = {"frozen": [f"{BASE}/conv1"]}
    app.run()
    assert not app.exception
    workspace = app.session_state["workspace"]
    assert workspace.tree.frozen_paths() == frozenset({f"{BASE}/conv1"})
    assert metrics(app)["Trainable params"] == f"{session_counts(app)[0]:,}"


def test_bulk_actions_match_keras_counts(app):
    open_tab(app, "2 · Freeze")
    for label, expected_trainable in [
        ("Freeze base (feature_extractor)", 165),
        ("Freeze all", 0),
        ("Unfreeze all", 14293),
        ("Freeze all BatchNorm", 14293 - 160),
    ]:
        button(app, label).click().run()
        assert not app.exception
        assert session_counts(app)[0] == expected_trainable, label
        assert metrics(app)["Trainable params"] == f"{expected_trainable:,}", label
    app.selectbox(key="freeze_up_to_target").set_value(f"{BASE}/batch_norm2").run()
    button(app, "Apply freeze up to").click().run()
    tree = app.session_state["workspace"].tree
    assert not tree.node(f"{BASE}/conv2").effectively_trainable
    assert tree.node(f"{BASE}/conv3").effectively_trainable
    app.number_input(key="unfreeze_top_count").set_value(3).run()
    button(app, "Apply unfreeze top N").click().run()
    assert [tree.node(p).trainable for p in tree.base_layer_paths(tree.default_base_path())][
        -4:
    ] == [False, True, True, True]
    assert metrics(app)["Trainable params"] == f"{session_counts(app)[0]:,}"


def test_stop_keeps_results_and_a_new_start_works(app):
    app.sidebar.number_input[0].set_value(200).run()
    button(app, "▶ Train").click().run()
    workspace = app.session_state["workspace"]
    deadline = time.monotonic() + 60
    while workspace.latest_run.job.progress().epoch < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    app.run()  # a widget click during training neither restarts nor stops it
    assert workspace.latest_run.run_id == 1 and workspace.is_training
    button(app, "■ Stop").click().run()
    wait_for_run(app)
    progress = workspace.latest_run.job.progress()
    assert progress.state.value == "cancelled" and 1 <= progress.epoch < 200
    assert any("Stopped by request" in w.value for w in app.warning)
    assert not workspace.latest_run.job.drift_frame().empty
    app.sidebar.number_input[0].set_value(1).run()
    button(app, "▶ Train").click().run()
    wait_for_run(app)
    assert workspace.latest_run.run_id == 2
    assert workspace.latest_run.job.progress().state.value == "finished"


def test_two_sessions_are_isolated():
    first = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    second = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    before = metrics(second)
    button(first, "Freeze base (feature_extractor)").click().run()
    first.sidebar.number_input[0].set_value(1).run()
    button(first, "▶ Train").click().run()
    wait_for_run(first)
    open_tab(first, "2 · Freeze")
    second.run()
    assert not first.exception and not second.exception
    assert metrics(first)["Trainable params"] == "165"
    assert metrics(second) == before
    other = second.session_state["workspace"]
    assert other.model is not first.session_state["workspace"].model
    assert other.tree.frozen_paths() == frozenset() and other.runs == []


def clear_session_calls(source: str) -> int:
    """Counts calls such as `clear_session()` or `keras.backend.clear_session()`."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            function = node.func
            name = (
                function.attr
                if isinstance(function, ast.Attribute)
                else getattr(function, "id", "")
            )
            count += name == "clear_session"
    return count


def test_the_app_never_resets_keras_for_everyone():
    sources = [
        ROOT / "app.py",
        *(ROOT / "components").rglob("*.py"),
        *(ROOT / "models").rglob("*.py"),
    ]
    assert clear_session_calls("import keras\nkeras.backend.clear_session()\n") == 1
    assert not [str(p) for p in sources if clear_session_calls(p.read_text())]
    # Streamlit itself calls clear_session() after every run; app.py must switch that off.
    AppTest.from_file(APP, default_timeout=120).run()
    assert getattr(keras.backend.clear_session, "_freezelab_guard", False)


def test_training_with_every_layer_frozen_is_explained_and_fixed_in_one_click(app):
    workspace = app.session_state["workspace"]
    workspace.bulk_action("freeze_all")  # as the tree's first checkbox does
    app.run()
    button(app, "▶ Train").click().run()
    assert not app.exception
    assert workspace.latest_run is None  # no fit that can change nothing
    assert any("Every layer is frozen" in w.value for w in app.sidebar.warning)
    button(app, "Freeze only the base and train").click().run()
    assert not app.exception
    run = workspace.latest_run
    assert run is not None and run.frozen_paths == workspace.tree.frozen_paths()
    reference = build_default_transfer_model()
    reference.get_layer("feature_extractor").trainable = False
    assert run.counts.trainable == keras_counts(reference)[0] > 0
    wait_for_run(app)
    assert not app.sidebar.warning
    # The proof shows where a newcomer looks, in the Train step, not only under Drift.
    assert app.session_state["step_tab"] == "4 · Train"
    assert any("frozen layers are bitwise unchanged" in s.value for s in app.success)


def test_keep_my_plan_dismisses_the_all_frozen_warning(app):
    app.session_state["workspace"].bulk_action("freeze_all")
    app.run()
    button(app, "▶ Train").click().run()
    button(app, "Keep my plan").click().run()
    assert not app.sidebar.warning and app.session_state["workspace"].latest_run is None


def test_every_tab_of_the_router_draws_without_an_error(app):
    from tests.app_helpers import TAB_KEY

    labels = ("1 · Model", "2 · Freeze", "3 · Data", "4 · Train", "5 · Drift", "Compare runs",
              "Export", "Pitfall lab", "Lessons")  # fmt: skip
    for label in labels:
        open_tab(app, label)
        assert not app.exception and not app.error, label
        assert app.session_state[TAB_KEY] == label


def test_a_run_that_cannot_start_says_why_at_once(app, monkeypatch):
    workspace = app.session_state["workspace"]

    def refuse(*args, **kwargs):
        raise ValueError("the data does not fit")

    monkeypatch.setattr(workspace, "start_run", refuse)
    button(app, "▶ Train").click().run()
    assert not app.exception
    assert any("Training could not start: the data does not fit" in e.value for e in app.error)
