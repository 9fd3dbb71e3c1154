"""AppTest checks of what people bring: applications, uploads, keras.datasets, bad input.

Each bad input must show a clear message in the page, keep the app running, and leave the
session's model, freeze plan and runs as they were.
"""

import io
import zipfile
from pathlib import Path

import keras
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.app_helpers import open_tab

pytestmark = pytest.mark.usefixtures("offline_keras_home")

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture
def trained_app() -> AppTest:
    """A session with a freeze plan and one finished run, to prove bad input keeps them."""
    at = open_tab(AppTest.from_file(APP, default_timeout=120).run(), "2 · Freeze")
    button(at, "Freeze base (feature_extractor)").click().run()
    at.sidebar.number_input[0].set_value(1).run()
    workspace = at.session_state["workspace"]
    workspace.start_run(
        workspace.latest_run.config if workspace.runs else _config(), background=False
    )
    at.run()
    return at


def _config():
    from models.training import TrainingConfig

    return TrainingConfig(epochs=1)


def button(at: AppTest, label: str, prefix: bool = False):
    """The button with this label (or label prefix)."""
    for candidate in at.button:
        if candidate.label == label or (prefix and candidate.label.startswith(label)):
            return candidate
    raise AssertionError(f"no button {label!r}; have {[b.label for b in at.button]}")


def snapshot(at: AppTest):
    workspace = at.session_state["workspace"]
    return workspace.model, workspace.tree.frozen_paths(), [run.run_id for run in workspace.runs]


def errors(at: AppTest) -> str:
    return " ".join(error.value for error in at.error)


def choose_model_source(at: AppTest, source: str) -> None:
    open_tab(at, "1 · Model")
    at.radio(key="model_source").set_value(source).run()


def choose_data_source(at: AppTest, source: str) -> None:
    open_tab(at, "3 · Data")
    at.radio(key="data_source").set_value(source).run()


def upload(at: AppTest, key: str, name: str, data: bytes, mime: str = "application/octet-stream"):
    at.file_uploader(key=key).set_value((name, data, mime)).run()


def keras_file(model: keras.Model, tmp_path: Path, name: str) -> bytes:
    path = tmp_path / name
    model.save(path)
    return path.read_bytes()


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), color).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ models
def test_corrupt_model_file_is_refused_and_the_session_keeps_its_work(trained_app, tmp_path):
    before = snapshot(trained_app)
    choose_model_source(trained_app, "Your own .keras / .h5 file")
    upload(trained_app, "model_upload", "notes.keras", b"this is not a model")
    assert not trained_app.exception
    assert "not a Keras model file" in errors(trained_app)
    assert snapshot(trained_app) == before


def test_model_with_a_lambda_layer_is_refused_with_the_reason(trained_app, tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Lambda(lambda x: x * 2, name="double")(inputs))
    data = keras_file(keras.Model(inputs, outputs), tmp_path, "lambda.keras")
    before = snapshot(trained_app)
    choose_model_source(trained_app, "Your own .keras / .h5 file")
    upload(trained_app, "model_upload", "lambda.keras", data)
    assert "Lambda" in errors(trained_app) and "safe mode" in errors(trained_app)
    assert snapshot(trained_app) == before


def test_multi_input_model_is_refused(trained_app, tmp_path):
    left, right = keras.Input((4,)), keras.Input((3,))
    merged = keras.layers.Concatenate()([left, right])
    data = keras_file(
        keras.Model([left, right], keras.layers.Dense(2)(merged)), tmp_path, "two.keras"
    )
    choose_model_source(trained_app, "Your own .keras / .h5 file")
    upload(trained_app, "model_upload", "two.keras", data)
    assert "one input and one output" in errors(trained_app)


def test_own_model_is_cut_before_its_classifier_and_trains(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_classifier")(x)
    data = keras_file(keras.Model(inputs, outputs, name="mine"), tmp_path, "mine.keras")
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_model_source(at, "Your own .keras / .h5 file")
    upload(at, "model_upload", "mine.keras", data)
    assert not at.error, errors(at)
    assert at.selectbox(key="cut_layer").value == "pool"
    button(at, "Use as base model").click().run()
    assert not at.exception and not at.error, errors(at)
    workspace = at.session_state["workspace"]
    assert "mine.keras" in workspace.template.title
    assert "old_classifier" not in " ".join(workspace.tree.paths())
    run = workspace.start_run(_config(), background=False)
    assert run.job.progress().state.value == "finished", run.job.progress().message


def test_applications_offline_explain_the_missing_file_and_offer_random_init():
    at = AppTest.from_file(APP, default_timeout=300).run()
    choose_model_source(at, "keras.applications")
    at.selectbox(key="application_key").set_value("mobilenet_v2_035").run()
    button(at, "Load ", prefix=True).click().run()
    message = errors(at)
    assert "mobilenet\\_v2\\_weights" in message or "mobilenet_v2_weights" in message
    assert "random initialisation" in message
    assert at.session_state["workspace"].template.key == "bundled_digits_cnn"
    button(at, "Continue with random", prefix=True).click().run()
    assert not at.exception
    template = at.session_state["workspace"].template
    assert not template.pretrained and "not pretrained" in template.title
    assert any("not pretrained" in md.value for md in at.markdown)


# ------------------------------------------------------------------------------------- data
def test_zip_with_path_traversal_is_refused(trained_app):
    before = snapshot(trained_app)
    choose_data_source(trained_app, "Zip of class folders")
    upload(trained_app, "zip_upload", "evil.zip", zip_bytes({"../evil/a.png": png((1, 2, 3))}))
    button(trained_app, "Load images").click().run()
    assert "path traversal" in errors(trained_app) or "outside the archive" in errors(trained_app)
    assert snapshot(trained_app) == before


def test_zip_with_one_class_and_empty_zip_are_refused(trained_app):
    choose_data_source(trained_app, "Zip of class folders")
    for name, entries, expected in [
        ("one.zip", {"cats/a.png": png((9, 9, 9)), "cats/b.png": png((1, 1, 1))}, "only 1 class"),
        ("empty.zip", {}, "empty"),
    ]:
        upload(trained_app, "zip_upload", name, zip_bytes(entries))
        button(trained_app, "Load images").click().run()
        assert expected in errors(trained_app), errors(trained_app)
        assert not trained_app.exception


def test_zip_of_two_class_folders_loads_and_reports_skipped_files():
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_data_source(at, "Zip of class folders")
    entries = {f"red/{i}.png": png((200 + i, 0, 0)) for i in range(6)}
    entries |= {f"blue/{i}.png": png((0, 0, 200 + i)) for i in range(6)}
    entries["blue/readme.md"] = b"not an image"
    upload(at, "zip_upload", "photos.zip", zip_bytes(entries))
    button(at, "Load images").click().run()
    assert not at.error, errors(at)
    workspace = at.session_state["workspace"]
    assert workspace.dataset.num_classes == 2 and workspace.dataset.num_samples == 12
    assert any("readme.md" in text.value for text in at.text)
    assert workspace.model.output_shape[-1] == 2
    # Stored as uint8 pixels, and the Data step says how much memory they take.
    assert workspace.dataset.x.dtype == "uint8" and workspace.model.inputs[0].dtype == "uint8"
    memory = [caption.value for caption in at.caption if "In memory:" in caption.value]
    assert memory and "uint8" in memory[0], [caption.value for caption in at.caption]


def test_csv_bad_inputs_are_explained():
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_data_source(at, "CSV table")
    for name, data, expected in [
        ("text.csv", b"a,colour,label\n1,red,x\n2,blue,y\n3,red,x\n4,blue,y\n", "hold text"),
        ("one.csv", b"a,b,label\n1,2,x\n3,4,x\n5,6,x\n", "only one value"),
    ]:
        upload(at, "csv_upload", name, data, "text/csv")
        at.selectbox(key="csv_label").set_value("label").run()
        button(at, "Load table").click().run()
        assert expected in errors(at).replace("\\", ""), errors(at)
        assert at.session_state["workspace"].dataset.name == "digits_5_9"


def test_csv_trains_a_dense_base_and_a_too_large_batch_is_reduced():
    rows = ["x1,x2,label"] + [f"{i % 7},{(i * 3) % 5},{'ab'[i % 2]}" for i in range(20)]
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_data_source(at, "CSV table")
    upload(at, "csv_upload", "table.csv", "\n".join(rows).encode(), "text/csv")
    button(at, "Load table").click().run()
    assert not at.error, errors(at)
    workspace = at.session_state["workspace"]
    assert workspace.dataset.input_shape == (2,) and len(workspace.template.input_shape) == 1
    at.sidebar.selectbox[0].set_value(128).run()  # batch size larger than the 16 training rows
    at.sidebar.number_input[0].set_value(1).run()
    button(at, "▶ Train").click().run()
    assert any("batch size will be reduced" in w.value for w in at.warning)
    workspace.latest_run.job.wait(60)
    at.run()
    assert workspace.latest_run.config.batch_size < 128
    assert workspace.latest_run.job.progress().state.value == "finished"


def test_keras_datasets_offline_say_where_the_files_go():
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_data_source(at, "keras.datasets")
    button(at, "Load dataset").click().run()
    message = errors(at).replace("\\", "")
    assert "mnist.npz" in message and "bundled" in message
    assert not at.exception
    assert at.session_state["workspace"].dataset.name == "digits_5_9"


def test_nan_loss_during_training_shows_a_clear_message(tmp_path):
    inputs = keras.Input((8, 8, 1))
    huge = keras.initializers.Constant(3e38)
    x = keras.layers.Flatten(name="flat")(inputs)
    x = keras.layers.Dense(4, kernel_initializer=huge, name="overflowing")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="old_classifier")(x)
    data = keras_file(keras.Model(inputs, outputs), tmp_path, "overflow.keras")
    at = AppTest.from_file(APP, default_timeout=120).run()
    choose_model_source(at, "Your own .keras / .h5 file")
    upload(at, "model_upload", "overflow.keras", data)
    button(at, "Use as base model").click().run()
    assert not at.error, errors(at)
    at.sidebar.number_input[0].set_value(2).run()
    button(at, "▶ Train").click().run()
    workspace = at.session_state["workspace"]
    workspace.latest_run.job.wait(60)
    at.run()
    assert workspace.latest_run.job.progress().state.value == "failed"
    assert "training diverged" in errors(at).replace("\\", "")
    assert not at.exception


def test_download_progress_shows_a_bar_only_once_bytes_arrive():
    def page():
        from components.common import download_progress

        quiet = download_progress()  # a cached file: the callback is never called
        del quiet
        report = download_progress()
        report(0, 2_000_000)
        report(500_000, 2_000_000)

    at = AppTest.from_function(page).run()
    assert not at.exception
    [bar] = at.get("progress")
    assert bar.proto.value == 25 and "500.0 kB of 2.0 MB" in bar.proto.text


def test_reading_a_zip_shows_how_many_images_are_read():
    def page():
        from components.common import count_progress

        report = count_progress("images")
        report(0, 10_000)
        report(2_500, 10_000)

    at = AppTest.from_function(page).run()
    assert not at.exception
    [bar] = at.get("progress")
    assert bar.proto.value == 25 and "2,500 of 10,000" in bar.proto.text
