"""Tests for models/upload_model.py and models/upload_data.py: every bad upload is explained."""

import io
import json
import stat
import warnings
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from models.bundled import BUNDLED_MODEL_PATH
from models.datasets import load_bundled_dataset
from models.training import TrainingConfig
from models.transfer import build_transfer_model
from models.tree import LayerTree
from models.upload_data import (
    TabularDataset,
    check_batch_fits,
    csv_columns,
    dense_base_for_features,
    dense_base_template,
    load_csv_dataset,
    load_image_zip,
)
from models.upload_model import (
    cut_layer_choices,
    default_cut_layer,
    load_uploaded_model,
    model_bytes,
    uploaded_template,
)
from models.workspace import Workspace

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def tiny_classifier(name="tiny"):
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    x = keras.layers.Dense(3, name="logits")(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def h5_bytes(model, tmp_path):
    path = tmp_path / "model.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path.read_bytes()


# ----------------------------------------------------------------------------- models
def test_a_good_keras_model_loads_and_its_default_cut_is_before_the_classifier():
    model = load_uploaded_model(BUNDLED_MODEL_PATH.read_bytes(), "digits_cnn.keras")
    assert model.name == "digits_cnn"
    assert cut_layer_choices(model) == ["feature_extractor", "classifier"]
    assert default_cut_layer(model) == "feature_extractor"

    template = uploaded_template(model, "feature_extractor", "uploads/digits_cnn.keras")
    assert template.pretrained
    assert template.key == "upload:digits_cnn.keras:feature_extractor"
    assert template.title == "Uploaded: digits_cnn.keras (cut at feature_extractor)"
    assert "dropped ['classifier']" in template.description
    # The base keeps the uploaded weights, bitwise.
    feature_extractor = model.get_layer("feature_extractor")
    for expected, received in zip(feature_extractor.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)
    workspace = Workspace(template, load_bundled_dataset("shapes"))
    names = [layer.name for layer in workspace.model.layers]
    assert names[:3] == ["image", "to_grayscale", "resize"]
    assert names[-1] == "classifier"
    assert workspace.model.output_shape == (None, 4)


def test_default_cut_skips_softmax_dense_and_dropout_and_keeps_feature_extractors_whole():
    assert default_cut_layer(tiny_classifier()) == "pool"
    features = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")], name="features"
    )
    assert default_cut_layer(features) == "conv"
    only_dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    assert default_cut_layer(only_dense) == "dense"


def test_a_model_compiled_with_a_custom_loss_loads_without_compiling():
    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred))

    model = tiny_classifier()
    model.compile(optimizer="adam", loss=my_loss)
    loaded = load_uploaded_model(model_bytes(model), "compiled.keras")
    assert loaded.name == "tiny" and not loaded.compiled


def test_an_h5_model_loads_in_safe_mode(tmp_path):
    model = tiny_classifier()
    loaded = load_uploaded_model(h5_bytes(model, tmp_path), "legacy.h5")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded.get_layer("conv").get_weights()[0], model.get_weights()[0])


def test_freezelab_layers_load_from_keras_and_h5_files(tmp_path):
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="base")
    model = build_transfer_model(base, (8, 8, 3), 2)
    assert "to_grayscale" in [layer.name for layer in model.layers]
    for data, filename in ((model_bytes(model), "m.keras"), (h5_bytes(model, tmp_path), "m.h5")):
        loaded = load_uploaded_model(data, filename)
        assert type(loaded.get_layer("to_grayscale")).__name__ == "RGBToGrayscale"


def lambda_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Lambda(lambda tensor: tensor * 2, name="times_two")(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_and_the_message_says_why(extension, tmp_path):
    model = lambda_model()
    data = model_bytes(model) if extension == ".keras" else h5_bytes(model, tmp_path)
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(data, f"evil{extension}")
    message = str(raised.value)
    assert "Lambda layer(s) ['times_two']" in message
    assert "would run that code on this server" in message
    assert "safe mode" in message


def test_a_lambda_activation_is_refused_too():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation=lambda x: x)])
        data = model_bytes(model)
    with pytest.raises(ValueError, match="stores a Python lambda function"):
        load_uploaded_model(data, "activation.keras")


def test_keras_safe_mode_itself_refuses_lambdas(tmp_path):
    """The independent reference: Keras's own loader refuses what FreezeLab refuses."""
    path = tmp_path / "evil.keras"
    lambda_model().save(path)
    with pytest.raises(ValueError, match="arbitrary code execution"):
        keras.saving.load_model(path, safe_mode=True)


def test_unknown_custom_classes_are_named(tmp_path):
    archive_bytes = model_bytes(tiny_classifier())
    source = zipfile.ZipFile(io.BytesIO(archive_bytes))
    config = json.loads(source.read("config.json"))
    pool = next(layer for layer in config["config"]["layers"] if layer["name"] == "pool")
    pool.update(module="my_package.layers", class_name="MysteryPool", registered_name="me>Mystery")
    edited = io.BytesIO()
    with zipfile.ZipFile(edited, "w") as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "config.json":
                content = json.dumps(config).encode()
            target.writestr(info.filename, content)
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(edited.getvalue(), "custom.keras")
    message = str(raised.value)
    assert "custom classes FreezeLab does not know: ['MysteryPool']" in message
    assert "the code of a custom class is not in the file" in message


@pytest.mark.parametrize(
    ("data", "filename", "fragment"),
    [
        (b"hello, I am text", "corrupt.keras", "this file is not a zip archive"),
        (b"hello, I am text", "corrupt.h5", "it is not a valid HDF5 file"),
        (b"", "empty.keras", "'empty.keras' is empty (0 bytes)"),
        (b"x" * 200, "big.keras", "the limit is 100 bytes"),
        (b"weights", "model.pt", "has the extension '.pt'; FreezeLab loads Keras models"),
        (b"weights", "model.weights.h5", "holds weights only"),
    ],
)
def test_corrupt_or_wrong_files_are_explained(data, filename, fragment):
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(data, filename, max_bytes=100)
    assert fragment in str(raised.value)


def test_a_zip_that_is_not_a_keras_archive_is_explained():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(buffer.getvalue(), "notes.keras")
    message = str(raised.value)
    assert "is a zip archive but not a Keras model: it has no config.json" in message
    assert "notes.txt" in message


def test_a_keras_archive_without_its_weights_file_is_explained():
    source = zipfile.ZipFile(io.BytesIO(model_bytes(tiny_classifier())))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name in ("metadata.json", "config.json"):
            target.writestr(name, source.read(name))
    with pytest.raises(ValueError, match="could not be loaded as a Keras model"):
        load_uploaded_model(buffer.getvalue(), "no_weights_file.keras")


def test_multi_input_and_multi_output_models_are_refused():
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(image))
    joined = keras.layers.Concatenate()([features, extra])
    two_inputs = keras.Model([image, extra], keras.layers.Dense(2)(joined), name="two_in")
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(model_bytes(two_inputs), "two_in.keras")
    message = str(raised.value)
    assert "FreezeLab needs a model with one input and one output" in message
    assert "has 2 input(s) (shapes (None, 8, 8, 1), (None, 3)) and 1 output(s)" in message

    two_outputs = keras.Model(image, [features, keras.layers.Dense(2)(features)], name="two_out")
    with pytest.raises(ValueError, match=r"1 input\(s\) .* and 2 output\(s\)"):
        load_uploaded_model(model_bytes(two_outputs), "two_out.keras")


def test_a_model_without_weights_is_refused():
    weightless = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Activation("relu")]
    )
    with pytest.raises(ValueError) as raised:
        load_uploaded_model(model_bytes(weightless), "empty.keras")
    assert "has no weights: none of its 2 layers has variables" in str(raised.value)
    assert "nothing pretrained to transfer" in str(raised.value)


def test_bad_cut_layers_are_explained():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="'nope' cannot end the base"):
        uploaded_template(model, "nope", "tiny.keras")
    flat = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="leaves a base without weights"):
        uploaded_template(flat, "flat", "flat.keras")


def odd_names_classifier():
    """A model whose names Keras accepts and TensorFlow refuses as scope names while training."""
    inputs = keras.Input((8, 8, 1), name="in put")
    x = keras.layers.Conv2D(4, 3, name="odd names")(inputs)
    x = keras.layers.BatchNormalization(name="")(x)
    x = keras.layers.Conv2D(4, 3, name="<img src=x onerror=alert(1)>")(x)
    inner = keras.Sequential(
        [keras.Input((4, 4, 4)), keras.layers.Conv2D(4, 1, name="ünï ∑")], name="inner model"
    )
    x = keras.layers.GlobalAveragePooling2D(name="_pool")(inner(x))
    outputs = keras.layers.Dense(3, activation="softmax", name="old head")(x)
    return keras.Model(inputs, outputs, name="odd model")


def test_a_model_with_names_tensorflow_refuses_trains_and_keeps_its_names():
    loaded = load_uploaded_model(model_bytes(odd_names_classifier()), "odd names.keras")
    assert default_cut_layer(loaded) == "_pool"
    template = uploaded_template(loaded, "_pool", "odd names.keras")
    assert "7 layer name(s) TensorFlow cannot train under" in template.description
    uploaded_base = keras.Model(loaded.inputs, loaded.get_layer("_pool").output)
    for expected, received in zip(uploaded_base.get_weights(), template.weights, strict=True):
        np.testing.assert_array_equal(expected, received)

    workspace = Workspace(template, load_bundled_dataset("shapes"))
    base = workspace.base_path
    tree = workspace.tree
    # The tree shows (and its paths use) the names of the uploaded file.
    children = [node.name for node in tree.nodes() if node.parent_path == base]
    assert children == [
        "in put",
        "odd names",
        "",
        "<img src=x onerror=alert(1)>",
        "inner model",
        "_pool",
    ]
    assert f"{base}/inner model/ünï ∑" in tree.paths()
    frozen = [f"{base}/odd names", f"{base}/", f"{base}/inner model/ünï ∑"]
    for path in frozen:
        tree.set_frozen(path, True)
    trained = f"{base}/<img src=x onerror=alert(1)>"
    before = {path: [w.numpy().copy() for w in tree.layer(path).weights] for path in frozen}
    trained_before = [w.numpy().copy() for w in tree.layer(trained).weights]

    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)

    progress = run.job.progress()
    assert progress.state == "finished", progress.message
    for path in frozen:
        for old, new in zip(before[path], tree.layer(path).weights, strict=True):
            np.testing.assert_array_equal(old, new.numpy())
    assert any(
        not np.array_equal(old, new.numpy())
        for old, new in zip(trained_before, tree.layer(trained).weights, strict=True)
    )
    assert run.job.verification().all_unchanged
    drift = run.job.drift_frame()
    assert {"odd names", "", "<img src=x onerror=alert(1)>"} <= set(drift.layer_name)
    assert f"{base}/odd names" in set(drift.layer_path)

    # Frozen as a whole, the base's outputs are computed once and only the head trains.
    workspace.bulk_action("freeze_base")
    base_before = [w.numpy().copy() for w in tree.layer(base).weights]
    run = workspace.start_run(TrainingConfig(epochs=1, batch_size=64), background=False)
    assert run.job.progress().state == "finished", run.job.progress().message
    assert run.job.execution_plan.cached
    for old, new in zip(base_before, tree.layer(base).weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


# ----------------------------------------------------------------------------- zip of images
def png_bytes(colour, size=(10, 6), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpg_bytes(colour, size=(12, 12)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def make_zip(entries, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries.items():
            if isinstance(content, zipfile.ZipInfo):
                archive.writestr(content, b"target.png")
            else:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                archive.writestr(info, content)
    return buffer.getvalue()


def symlink_info(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_a_zip_of_class_folders_becomes_a_dataset_and_skipped_files_are_named():
    entries = {
        "pets/cats/1.png": png_bytes((255, 0, 0)),
        "pets/cats/2.png": png_bytes((250, 10, 0)),
        "pets/cats/notes.txt": b"hello",
        "pets/cats/broken.png": b"\x89PNG not really",
        "pets/dogs/1.jpg": jpg_bytes((0, 0, 255)),
        "pets/.DS_Store": b"x",
        "__MACOSX/pets/cats/._1.png": b"x",
        "pets/dogs/link.png": symlink_info("pets/dogs/link.png"),
    }
    dataset, notes = load_image_zip(make_zip(entries), image_size=16, filename="pets.zip")
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.x.shape == (3, 16, 16, 3)
    assert dataset.class_counts().to_dict() == {"cats": 2, "dogs": 1}
    assert dataset.x.min() >= 0.0 and dataset.x.max() <= 1.0
    # A solid red PNG stays exactly red after resizing and scaling.
    red = dataset.x[dataset.y == 0][0]
    np.testing.assert_array_equal(red[..., 0], 1.0)
    np.testing.assert_array_equal(red[..., 1:], 0.0)
    text = "\n".join(notes)
    assert "Skipped 'pets/cats/notes.txt': not an image file (extension .txt" in text
    assert "Skipped 'pets/cats/broken.png': it cannot be decoded as an image" in text
    assert "object at 0x" not in text  # the file's name, never Pillow's buffer repr
    assert "Ignored 'pets/dogs/link.png': it is a symbolic link." in text
    assert "Ignored 2 hidden or system entries" in text


def test_grayscale_images_give_one_channel_and_rgb_gray_counts_as_gray():
    entries = {
        "a/1.png": png_bytes(30, mode="L"),
        "a/2.png": png_bytes((90, 90, 90)),
        "b/1.png": png_bytes(200, mode="L"),
    }
    dataset, notes = load_image_zip(make_zip(entries), image_size=8)
    assert dataset.x.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(dataset.x[0], 30 / 255, rtol=1e-6)
    assert notes == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil/1.png", "points outside the archive ('..' in its path"),
        ("cats/../../evil.png", "path traversal"),
        ("/etc/cats/1.png", "has an absolute path"),
        ("C:\\cats\\1.png", "has an absolute path"),
    ],
)
def test_path_traversal_and_absolute_paths_refuse_the_zip(name, fragment):
    data = make_zip({"cats/1.png": png_bytes(1, mode="L"), name: png_bytes(2, mode="L")})
    with pytest.raises(ValueError) as raised:
        load_image_zip(data)
    assert fragment in str(raised.value)
    assert "The zip was refused" in str(raised.value)


def test_a_zip_bomb_is_refused_by_its_ratio():
    data = make_zip({"a/1.png": png_bytes(1, mode="L"), "a/bomb.png": bytes(20 * 1024 * 1024)})
    assert len(data) < 100_000
    with pytest.raises(ValueError) as raised:
        load_image_zip(data)
    message = str(raised.value)
    assert "possible zip bomb: 'a/bomb.png' expands from" in message
    assert "the limit is 100:1" in message


def bmp_bytes(value, size=(64, 64)):
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="BMP")
    return buffer.getvalue()


def test_size_and_file_count_limits_are_enforced():
    entries = {f"c{index % 2}/{index}.bmp": bmp_bytes(index) for index in range(6)}
    with pytest.raises(ValueError, match="more than 3 files; the limit is 3"):
        load_image_zip(make_zip(entries), max_files=3)
    data = make_zip(entries)
    with pytest.raises(ValueError, match="the limit is 200 bytes"):
        load_image_zip(data, max_total_bytes=200)
    declared_total = sum(len(content) for content in entries.values())
    assert len(data) < declared_total // 4
    with pytest.raises(ValueError) as raised:
        load_image_zip(data, max_total_bytes=declared_total - 1)
    assert str(raised.value).startswith(
        f"The zip unpacks to {declared_total:,} bytes, more than the limit of "
        f"{declared_total - 1:,} bytes."
    )
    dataset, _ = load_image_zip(data, max_total_bytes=declared_total, image_size=8)
    assert dataset.num_samples == 6


def test_a_zip_with_one_class_is_refused():
    data = make_zip({"cats/1.png": png_bytes(1, mode="L"), "cats/2.png": png_bytes(2, mode="L")})
    with pytest.raises(ValueError) as raised:
        load_image_zip(data)
    message = str(raised.value)
    assert "images in only 1 class folder ('cats': 2 image(s))" in message
    assert "at least 2 classes" in message


def test_a_class_of_only_broken_files_does_not_count():
    data = make_zip({"cats/1.png": png_bytes(1, mode="L"), "dogs/1.png": b"broken"})
    with pytest.raises(ValueError, match="only 1 class folder"):
        load_image_zip(data)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (make_zip({}), "The zip is empty: it holds no files"),
        (make_zip({"a/": b"", "b/": b""}), "holds no decodable images"),
        (make_zip({"a/x.txt": b"text", "b/y.csv": b"1,2"}), "holds no decodable images"),
        (b"this is not a zip", "is not a valid zip archive"),
        (b"", "The upload is empty"),
    ],
)
def test_empty_and_non_zip_uploads_are_explained(data, fragment):
    with pytest.raises(ValueError) as raised:
        load_image_zip(data)
    assert fragment in str(raised.value)
    assert "one folder per class" in str(raised.value) or "empty" in str(raised.value)


def test_non_image_files_in_class_folders_are_skipped_by_name():
    entries = {
        "a/1.png": png_bytes(1, mode="L"),
        "b/1.png": png_bytes(2, mode="L"),
        "b/readme.md": b"# hi",
        "b/archive.zip": make_zip({}),
        "loose.png": png_bytes(3, mode="L"),
    }
    dataset, notes = load_image_zip(make_zip(entries))
    assert dataset.num_samples == 2
    text = "\n".join(notes)
    assert "'b/readme.md': not an image file (extension .md" in text
    assert "'b/archive.zip': not an image file" in text
    assert "'loose.png': it is not inside a class folder" in text


def test_class_imbalance_is_reported():
    entries = {f"big/{index}.png": png_bytes(index, mode="L") for index in range(6)}
    entries["small/1.png"] = png_bytes(9, mode="L")
    dataset, notes = load_image_zip(make_zip(entries))
    assert dataset.class_counts().to_dict() == {"big": 6, "small": 1}
    assert any("imbalanced: 'big' has 6 images, 'small' only 1" in note for note in notes)


def test_a_dataset_too_large_for_memory_is_refused_before_decoding():
    entries = {f"c{index % 2}/{index}.png": b"not decoded" for index in range(1400)}
    with pytest.raises(ValueError, match=r"1400 images of 256x256 pixels would take 1050\.00 MiB"):
        load_image_zip(make_zip(entries), image_size=256)


def test_bad_zip_arguments_are_explained():
    with pytest.raises(ValueError, match="image_size must be an integer >= 8 and <= 256"):
        load_image_zip(make_zip({}), image_size=4)
    with pytest.raises(TypeError, match="received str"):
        load_image_zip("cats.zip")


# ----------------------------------------------------------------------------- CSV tables
IRIS_LIKE = (
    b"sepal length;sepal width;species\n"
    b"5.1;3.5;setosa\n4.9;3.0;setosa\n6.2;2.9;versicolor\n5.9;3.0;versicolor\n"
    b"6.3;3.3;virginica\n5.8;2.7;virginica\n"
)


def test_a_csv_becomes_a_tabular_dataset():
    assert csv_columns(IRIS_LIKE) == ["sepal length", "sepal width", "species"]
    dataset, notes = load_csv_dataset(IRIS_LIKE, "species", filename="iris.csv")
    assert isinstance(dataset, TabularDataset)
    assert dataset.input_shape == (2,)
    assert dataset.class_names == ("setosa", "versicolor", "virginica")
    assert dataset.feature_names == ("sepal length", "sepal width")
    np.testing.assert_array_equal(dataset.y, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(dataset.x[0], [5.1, 3.5], rtol=1e-6)
    assert dataset.class_counts().to_dict() == {"setosa": 2, "versicolor": 2, "virginica": 2}
    assert notes == []
    assert not dataset.x.flags.writeable


def test_the_label_column_defaults_to_the_last_and_numeric_labels_are_named():
    dataset, _ = load_csv_dataset(b"a,b,label\n1,2,0\n3,4,1\n5,6,1\n")
    assert dataset.class_names == ("0", "1")
    assert dataset.feature_names == ("a", "b")


def test_text_in_a_feature_column_is_named_with_a_sample():
    data = b"height,colour,label\n1.0,red,a\n2.0,blue,b\n3.0,5,a\n"
    with pytest.raises(ValueError) as raised:
        load_csv_dataset(data, "label")
    message = str(raised.value)
    assert "Feature columns must hold numbers" in message
    assert "'colour' (2 value(s), e.g. 'red' in row 2)" in message
    assert "Choose such a column as the label column (now 'label')" in message


def test_a_csv_with_one_label_is_refused():
    with pytest.raises(ValueError) as raised:
        load_csv_dataset(b"a,label\n1,x\n2,x\n3,x\n", "label")
    assert "holds only one value ('x'); a classifier needs at least 2 classes" in str(raised.value)


def test_missing_values_are_dropped_and_reported_per_column():
    data = b"a,b,label\n1,,x\n2,3,y\n,4,x\n5,6,\n7,8,y\n9,10,x\n"
    dataset, notes = load_csv_dataset(data, "label")
    assert dataset.num_samples == 3
    assert notes[0] == (
        "Dropped 3 of 6 rows with missing values (missing per column: 'a': 1, 'b': 1, 'label': 1)."
    )
    with pytest.raises(ValueError, match="Every row of the CSV file has a missing value"):
        load_csv_dataset(b"a,b,label\n1,,x\n,3,y\n", "label")


@pytest.mark.parametrize(
    ("data", "label", "fragment"),
    [
        (b"", None, "The CSV file is empty"),
        (b"a,b\n1,x\n2,y\n", "c", "no column 'c'; its columns are ['a', 'b']"),
        (b"label\nx\ny\n", None, "it needs at least one feature column and a label column"),
        (b"a,label\n1,x\n", "label", "has 1 data row(s)"),
        (b"a,a,label\n1,2,x\n3,4,y\n", "label", "repeats column names"),
        (b"a,label\n1,x\ninf,y\n", "label", "hold infinite values"),
        (b"a,label\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(150)), "label", "150"),
        (b"\xff\xfe\x00a", None, "not UTF-8"),
    ],
)
def test_bad_csv_files_are_explained(data, label, fragment):
    with pytest.raises(ValueError) as raised:
        load_csv_dataset(data, label)
    assert fragment in str(raised.value)


def test_dense_base_trains_on_a_csv_dataset_in_a_workspace():
    rows = ["x1,x2,x3,label"]
    rng = np.random.default_rng(0)
    for index in range(60):
        label = index % 2
        values = rng.normal(loc=100 * label, scale=5, size=3)
        rows.append(",".join(f"{value:.3f}" for value in values) + f",{'ab'[label]}")
    dataset, _ = load_csv_dataset("\n".join(rows).encode(), "label")
    template = dense_base_template(dataset)
    assert not template.pretrained and "not pretrained" in template.title
    workspace = Workspace(template, dataset)
    names = [layer.name for layer in workspace.model.layers]
    assert names == ["features", "dense_base", "head_dropout", "classifier"]
    # The standardising layer maps the raw columns to mean 0, variance 1.
    standardize = workspace.model.get_layer("dense_base").get_layer("standardize")
    standardized = np.asarray(standardize(dataset.x))
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=0), 1, atol=1e-3)
    run = workspace.start_run(TrainingConfig(epochs=3, batch_size=16), background=False)
    assert run.job.progress().state == "finished"
    assert LayerTree(workspace.model).totals().total == (
        sum(int(np.prod(w.shape)) for w in workspace.model.weights)
    )


def test_tabular_data_and_image_models_do_not_mix():
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="cnn")
    with pytest.raises(ValueError, match=r"expects images of shape \(8, 8, 1\).*feature vectors"):
        build_transfer_model(base, (5,), 2)
    dense = dense_base_for_features(4)
    with pytest.raises(ValueError, match="expects feature vectors of shape"):
        build_transfer_model(dense, (8, 8, 1), 2)
    with pytest.raises(ValueError, match="expects 4 features per sample, but the data has 5"):
        build_transfer_model(dense, (5,), 2)
    with pytest.raises(ValueError, match="needs both mean and variance"):
        dense_base_for_features(4, mean=[0, 0, 0, 0])


# ----------------------------------------------------------------------------- batches
def test_a_dataset_smaller_than_a_batch_reduces_the_batch_size_with_a_message():
    fit = check_batch_fits(20, 32, validation_fraction=0.2)
    assert (fit.batch_size, fit.num_train_samples, fit.reduced) == (16, 16, True)
    assert "fewer than the batch size 32: the batch size will be reduced to 16" in fit.message
    assert check_batch_fits(100, 32).message == ""
    with pytest.raises(ValueError, match="none is left for training"):
        check_batch_fits(1, 8, validation_fraction=0.5)
