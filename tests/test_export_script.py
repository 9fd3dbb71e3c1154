"""Tests for models/export/script.py and base_code.py: the generated Keras script."""

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from models.bundled import BUNDLED_MODEL_PATH
from models.catalogue import bundled_template
from models.datasets import ImageDataset
from models.dense_base import dense_base_template
from models.export.files import BASE_MODEL_BUTTON, base_model_file
from models.export.plan_code import freeze_statements
from models.export.script import generate_code
from models.template import parse_model_key
from models.training import TrainingConfig
from models.tree import LayerTree
from models.upload_model import uploaded_template
from models.upload_tables import load_csv_dataset
from models.workspace import Workspace

BASE = "transfer_model/feature_extractor"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def _counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    frozen = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)
    return trainable, frozen


def _execute(code: str, folder: Path = BUNDLED_MODEL_PATH.parent) -> dict:
    """Runs a generated script as if it were saved in `folder` (where it looks for files).

    The default is the folder of the bundled model file, as if the learner had put the
    downloaded base model next to the script.
    """
    namespace = {"__name__": "freezelab_export", "__file__": str(folder / "freezelab_setup.py")}
    exec(compile(code, "freezelab_export.py", "exec"), namespace)
    return namespace


def _assert_same_model(
    workspace: Workspace, dataset_key: str | None = None, folder: Path = BUNDLED_MODEL_PATH.parent
) -> str:
    """Generates the code of a workspace, runs it (no fit) and compares counts and flags."""
    plan = workspace.tree.frozen_paths()
    code = generate_code(
        workspace.template,
        workspace.dataset.input_shape,
        workspace.dataset.num_classes,
        plan,
        TrainingConfig(),
        dataset_key=dataset_key,
        tree=workspace.tree,
        include_training=False,
    )
    model = _execute(code, folder)["model"]
    counts = workspace.tree.totals()
    assert _counts(model) == (counts.trainable, counts.non_trainable)
    assert _counts(model) == _counts(workspace.model)  # Keras's own counts, independently
    rebuilt = LayerTree(model)
    assert rebuilt.paths() == workspace.tree.paths()
    assert rebuilt.frozen_paths() == plan
    return code


def test_bundled_base_frozen_rebuilds_the_same_model(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    code = _assert_same_model(workspace, "digits_5_9")
    assert "base.trainable = False" in code
    assert 'get_layer("feature_extractor")' in code
    assert code.count(".trainable = ") == 1


def test_child_re_enabled_under_a_frozen_base(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    workspace.tree.set_frozen(f"{BASE}/batch_norm2", False)
    code = _assert_same_model(workspace)
    lines = [line for line in code.splitlines() if ".trainable = " in line]
    assert lines == [
        "base.trainable = False",
        'base.get_layer("batch_norm2").trainable = True  # re-enabled inside a frozen parent',
    ]


def test_bundled_base_on_rgb_shapes_uses_freezelab_layers(bundled, shapes):
    workspace = Workspace(bundled, shapes)  # 32x32x3 -> grayscale, resized to 8x8
    workspace.bulk_action("freeze_batch_norm")
    code = _assert_same_model(workspace, "shapes")
    assert "from models.layers import RGBToGrayscale" in code
    assert 'keras.layers.Resizing(8, 8, antialias=True, name="resize")' in code
    # The script adapts the images exactly as FreezeLab does (32x32 RGB -> gray 8x8).
    model = _execute(code)["model"]
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")

    def seen_by_base(built):
        adaptation = keras.Model(built.inputs[0], built.get_layer("resize").output)
        return keras.ops.convert_to_numpy(adaptation(images))

    np.testing.assert_allclose(seen_by_base(model), seen_by_base(workspace.model), atol=1e-6)


def test_mobilenet_base_frozen_on_digits(mobilenet, digits):
    workspace = Workspace(mobilenet, digits)  # 8x8x1 -> resized to 32x32, 3 channels
    workspace.bulk_action("freeze_base")
    code = _assert_same_model(workspace, "digits_5_9")
    assert "keras.applications.MobileNetV2(" in code
    assert "weights=None" in code and "alpha=0.35" in code
    assert 'Concatenate(axis=-1, name="to_rgb")' in code
    assert 'Rescaling(2.0, -1.0, name="preprocess")' in code  # ImagenetPreprocessing("tf")
    assert "models.layers" not in code  # only built-in layers: runs without FreezeLab


def test_mobilenet_freeze_up_to_plan_uses_a_loop(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    block = next(path for path in workspace.tree.paths() if path.endswith("/block_2_add"))
    workspace.bulk_action("freeze_up_to", block)
    code = _assert_same_model(workspace, "shapes")
    assert "for name in [" in code
    assert len(freeze_statements(workspace.tree, workspace.tree.frozen_paths())) > 20


def test_mobilenet_unfreeze_top_plan(mobilenet, shapes):
    workspace = Workspace(mobilenet, shapes)
    workspace.bulk_action("unfreeze_top", 5)
    _assert_same_model(workspace)


def test_whole_model_frozen_is_one_statement(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_all")
    code = _assert_same_model(workspace)
    assert [line for line in code.splitlines() if ".trainable = " in line] == [
        "model.trainable = False"
    ]


def test_uploaded_model_with_hostile_names(tmp_path, monkeypatch, digits):
    hostile = 'conv"); import os; os.system("echo hacked'
    inputs = keras.Input((8, 8, 1), name="pixels")
    features = keras.layers.Conv2D(4, 3, name=hostile)(inputs)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = keras.layers.Dense(3, activation="softmax", name="old_head")(features)
    model = keras.Model(inputs, outputs, name="uploaded")
    file_name = "my model\n# evil.keras"
    template = uploaded_template(model, "pool", file_name)
    saved_name = parse_model_key(template.key).filename
    model.save(tmp_path / saved_name)
    monkeypatch.chdir(tmp_path)
    workspace = Workspace(template, digits)
    workspace.tree.set_frozen(f"transfer_model/uploaded_base/{hostile}", True)
    code = _assert_same_model(workspace, folder=tmp_path)  # the upload lies next to the script
    ast.parse(code)
    assert "hacked" not in "".join(
        line for line in code.splitlines() if not line.lstrip().startswith("#") and '"' not in line
    )


def test_dense_base_for_a_csv_table():
    table = b"a,b,c,label\n" + b"".join(
        f"{i},{i * 2 % 7},{i % 3},{i % 2}\n".encode() for i in range(40)
    )
    dataset, _ = load_csv_dataset(table, "label")
    workspace = Workspace(dense_base_template(dataset), dataset)
    workspace.bulk_action("freeze_batch_norm")
    code = _assert_same_model(workspace)
    assert "keras.layers.Normalization(" in code
    assert "x, y = ...  # replace with your arrays" in generate_code(
        workspace.template, (3,), 2, [], TrainingConfig(), tree=workspace.tree
    )


def test_training_part_parses_and_runs_with_the_settings(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    config = TrainingConfig(
        epochs=1, batch_size=64, learning_rate=0.003, optimizer="rmsprop", validation_fraction=0.25
    )
    code = generate_code(
        bundled,
        digits.input_shape,
        digits.num_classes,
        workspace.tree.frozen_paths(),
        config,
        dataset_key="digits_5_9",
        tree=workspace.tree,
    )
    tree = ast.parse(code)
    assert ast.get_docstring(tree).startswith("Rebuilds a FreezeLab setup")
    assert "keras.optimizers.RMSprop(learning_rate=0.003)" in code
    assert "epochs=1," in code and "batch_size=64," in code and "test_size=0.25," in code
    assert max(len(line) for line in code.splitlines()) <= 100
    namespace = _execute(code)
    assert len(namespace["x_validation"]) == math.ceil(0.25 * digits.num_samples)
    assert set(namespace["history"].history) >= {"loss", "val_accuracy"}
    # The frozen base did not move: compile came after the flags.
    original = keras.saving.load_model(namespace["BASE_MODEL_PATH"], compile=False)
    for before, after in zip(
        original.get_layer("feature_extractor").get_weights(),
        namespace["base"].get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(before, after)


def _bundled_code(bundled, digits, **config) -> tuple[Workspace, str]:
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    code = generate_code(
        bundled,
        digits.input_shape,
        digits.num_classes,
        workspace.tree.frozen_paths(),
        TrainingConfig(**config),
        dataset_key="digits_5_9",
        tree=workspace.tree,
    )
    return workspace, code


def test_exported_script_names_no_path_of_the_server(bundled, digits, tmp_path):
    _, code = _bundled_code(bundled, digits)
    assert str(REPOSITORY_ROOT) not in code
    assert str(BUNDLED_MODEL_PATH) not in code and "models/" not in code
    assert 'BASE_MODEL_FILE = "bundled_digits_cnn.keras"' in code
    assert f'"{BASE_MODEL_BUTTON}" button' in code  # the instruction says what to download
    # An uploaded model is looked for next to the script as well, never by the server's path.
    inputs = keras.Input((8, 8, 1), name="pixels")
    features = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(features), name="mine")
    template = uploaded_template(model, "pool", "mine.keras")
    workspace = Workspace(template, digits)
    code = generate_code(template, (8, 8, 1), 5, [], TrainingConfig(), tree=workspace.tree)
    assert str(REPOSITORY_ROOT) not in code and str(tmp_path) not in code
    assert 'BASE_MODEL_FILE = "mine.keras"' in code
    assert "BASE_MODEL_PATH = SCRIPT_FOLDER / BASE_MODEL_FILE" in code


def test_exported_script_runs_on_another_machine_from_another_folder(bundled, digits, tmp_path):
    """The learner's machine: the script and the downloaded base model, no FreezeLab."""
    _, code = _bundled_code(bundled, digits, epochs=1, batch_size=64)
    assert "models." not in code  # nothing of FreezeLab's to import
    downloads, elsewhere = tmp_path / "downloads", tmp_path / "elsewhere"
    downloads.mkdir()
    elsewhere.mkdir()
    script = downloads / "freezelab_setup.py"
    script.write_text(code, encoding="utf-8")
    environment = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PWD")
    }
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"

    def run_script() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=environment,
            timeout=300,
        )

    # Before the base model is downloaded: a clear message, not a path of the server.
    missing = run_script()
    assert missing.returncode != 0
    message = missing.stderr.strip().splitlines()[-1]
    assert message.startswith("FileNotFoundError: The base model file ")
    assert str(downloads / "bundled_digits_cnn.keras") in message
    assert f"with the '{BASE_MODEL_BUTTON}' button in FreezeLab's Export tab" in message
    assert f"put it in {downloads}, next to this script." in message

    # As the instructions say: the base model file downloaded next to the script.
    file = base_model_file(bundled)
    (downloads / file.name).write_bytes(file.read_bytes())
    completed = run_script()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Trainable: 165 (FreezeLab: 165)" in completed.stdout
    assert "'val_accuracy'" in completed.stdout


def _uint8_digits(num_samples: int = 80) -> ImageDataset:
    """An uploaded-like dataset: 16x16 grayscale pixels stored as uint8, 4 classes."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (num_samples, 16, 16, 1), dtype=np.uint8)
    classes = ("a", "b", "c", "d")
    labels = np.arange(num_samples) % len(classes)
    return ImageDataset("uploaded_images", "Uploaded images", "", pixels, labels, classes)


def test_exported_script_of_a_uint8_dataset_run_runs(bundled, tmp_path):
    """A run on an upload (uint8 pixels): the script takes uint8 and scales batch by batch."""
    dataset = _uint8_digits()
    workspace = Workspace(bundled, dataset)
    workspace.bulk_action("freeze_base")
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=16), background=False)
    assert run.job.progress().state.value == "finished", run.job.progress().message
    _assert_same_model(workspace, dataset_key="uploaded_images")  # paths, counts, flags
    code = generate_code(
        bundled,
        dataset.input_shape,
        dataset.num_classes,
        workspace.tree.frozen_paths(),
        run.config,
        dataset_key="uploaded_images",
        tree=workspace.tree,
    )
    assert 'inputs = keras.Input(shape=(16, 16, 1), dtype="uint8", name="image")' in code
    assert 'x = keras.layers.Rescaling(1 / 255, name="from_uint8")(x)' in code
    assert "#   x: uint8 array of shape (num_samples, 16, 16, 1), pixels 0..255" in code
    assert "models." not in code  # plain Keras: runs without FreezeLab
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.is_file():
        arguments = [str(ruff), "format", "--isolated", "--line-length", "100", "-"]
        formatted = subprocess.run(arguments, input=code, capture_output=True, text=True)
        assert formatted.stdout == code

    # The learner's side: their uint8 arrays in place of the placeholder, the base model
    # file next to the script, run as a program.
    arrays = tmp_path / "pixels.npz"
    np.savez(arrays, x=dataset.x, y=dataset.y)
    placeholder = "x, y = ...  # replace with your arrays"
    assert code.count(placeholder) == 1
    loading = f'import numpy as np\n\ndata = np.load(r"{arrays}")\nx, y = data["x"], data["y"]'
    script = tmp_path / "freezelab_setup.py"
    script.write_text(code.replace(placeholder, loading), encoding="utf-8")
    file = base_model_file(bundled)
    (tmp_path / file.name).write_bytes(file.read_bytes())
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    counts = workspace.tree.totals()
    assert f"Trainable: {counts.trainable:,} (FreezeLab: {counts.trainable:,})" in completed.stdout
    assert "'val_accuracy'" in completed.stdout


def test_missing_base_model_file_is_explained_in_a_notebook_too(bundled, digits, tmp_path):
    _, code = _bundled_code(bundled, digits)
    with pytest.raises(FileNotFoundError) as caught:
        _execute(code, folder=tmp_path)  # nothing downloaded into tmp_path
    assert "bundled_digits_cnn.keras" in str(caught.value) and str(tmp_path) in str(caught.value)
    namespace = {"__name__": "notebook"}  # a notebook cell has no __file__: the current folder
    with pytest.raises(FileNotFoundError, match=r"next to this script"):
        exec(compile(code, "<cell>", "exec"), namespace)


def test_generated_code_is_formatted_as_ruff_formats_it(mobilenet, digits):
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.is_file():
        pytest.skip("ruff is not installed next to this Python")
    workspace = Workspace(mobilenet, digits)
    block = next(path for path in workspace.tree.paths() if path.endswith("/block_1_project_BN"))
    workspace.bulk_action("freeze_up_to", block)
    code = generate_code(
        mobilenet,
        digits.input_shape,
        digits.num_classes,
        workspace.tree.frozen_paths(),
        TrainingConfig(),
        dataset_key="digits_5_9",
        tree=workspace.tree,
    )
    _, bundled_code = _bundled_code(bundled_template(), digits)  # loads a file next to it
    for source in (code, bundled_code):
        arguments = [str(ruff), "format", "--isolated", "--line-length", "100", "-"]
        formatted = subprocess.run(
            arguments, input=source, capture_output=True, text=True, check=True
        )
        assert formatted.stdout == source
        arguments = [str(ruff), "check", "--isolated", "--select", "E,W,F,I,B,UP", "-"]
        arguments[-1:-1] = ["--line-length", "100"]
        checked = subprocess.run(arguments, input=source, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout


def test_generate_code_refuses_bad_input(bundled, digits):
    workspace = Workspace(bundled, digits)
    with pytest.raises(ValueError, match="not in model"):
        generate_code(bundled, (8, 8, 1), 5, ["nope"], TrainingConfig(), tree=workspace.tree)
    with pytest.raises(TypeError, match="single string"):
        generate_code(bundled, (8, 8, 1), 5, BASE, TrainingConfig(), tree=workspace.tree)
    with pytest.raises(TypeError, match="TrainingConfig"):
        generate_code(bundled, (8, 8, 1), 5, [], {"epochs": 3})


def test_generate_code_builds_the_model_when_no_tree_is_given(bundled, digits):
    workspace = Workspace(bundled, digits)
    workspace.bulk_action("freeze_base")
    plan = workspace.tree.frozen_paths()  # a plan lists every flag that is False
    code = generate_code(bundled, (8, 8, 1), 5, plan, TrainingConfig(), include_training=False)
    counts = workspace.tree.totals()
    assert _counts(_execute(code)["model"]) == (counts.trainable, counts.non_trainable)
    assert counts.trainable == 32 * 5 + 5


@pytest.mark.parametrize(
    ("dataset_key", "expected"),
    [
        ("mnist", "(x, y), _ = keras.datasets.mnist.load_data()"),
        ("cifar10", 'x = (x.astype("float32") / 255.0)\n'),
        ("digits_0_4", "DIGITS = (0, 1, 2, 3, 4)"),
        ("shapes", "from models.datasets import generate_shapes"),
        ("uploaded_images", "x, y = ...  # replace with your arrays"),
        (None, "#   y: integer labels 0..4 of shape (num_samples,)"),
    ],
)
def test_data_loading_code_for_each_kind_of_dataset(bundled, digits, dataset_key, expected):
    workspace = Workspace(bundled, digits)
    code = generate_code(
        bundled, (8, 8, 1), 5, [], TrainingConfig(), dataset_key=dataset_key, tree=workspace.tree
    )
    ast.parse(code)
    assert expected in code
    assert "# Freeze plan: nothing is frozen, every layer trains." in code
