"""Tests for models/upload_images.py: a zip of class folders, and every bad zip explained."""

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from models import upload_images
from models.datasets import ImageDataset
from models.upload_images import PROGRESS_REPORTS, largest_useful_image_size, load_image_zip

pytestmark = pytest.mark.usefixtures("offline_keras_home")


def png_bytes(colour, size=(10, 6), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def png_from_array(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
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
    assert dataset.x.dtype == np.uint8  # pixels 0..255: the model scales each batch
    # A solid red PNG stays exactly red after resizing.
    red = dataset.x[dataset.y == 0][0]
    np.testing.assert_array_equal(red[..., 0], 255)
    np.testing.assert_array_equal(red[..., 1:], 0)
    assert "stored as uint8 pixels 0..255" in dataset.description
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
    np.testing.assert_array_equal(dataset.x[0], 30)
    assert dataset.x.flags.c_contiguous and dataset.x.base is None  # no 3-channel array kept
    assert dataset.nbytes == 3 * 8 * 8 * 1 + 3 * 8
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


def test_a_dataset_too_large_for_memory_is_refused_before_decoding(monkeypatch):
    def never_decode(*args):
        raise AssertionError("an image was decoded before the memory check")

    monkeypatch.setattr(upload_images, "_decode_image", never_decode)
    entries = {f"c{index % 2}/{index}.png": b"not decoded" for index in range(1400)}
    reports = []
    with pytest.raises(ValueError) as raised:
        load_image_zip(
            make_zip(entries),
            image_size=256,
            max_dataset_bytes=100 * 1024 * 1024,
            on_progress=lambda *report: reports.append(report),
        )
    # uint8 bytes at the stored size, 3 channels: 1400 x 256 x 256 x 3.
    assert str(raised.value) == (
        "1400 images of 256x256 pixels would take 262.50 MiB in memory; this server allows "
        "100.00 MiB per dataset now. Upload fewer images or choose a smaller image size."
    )
    assert reports == []  # not even the first progress report: nothing was read


def test_the_memory_estimate_counts_the_stored_size_not_the_asked_one(monkeypatch):
    entries = {f"c{index % 2}/{index}.png": b"not decoded" for index in range(1400)}
    data = make_zip(entries)
    with pytest.raises(ValueError, match="would take"):
        load_image_zip(data, image_size=256, max_dataset_bytes=1024 * 1024)
    # Stored at 8x8 (the model's input size): 1400 x 8 x 8 x 3 bytes fit in 1 MiB.
    with pytest.raises(ValueError, match="holds no decodable images"):
        load_image_zip(data, image_size=256, max_stored_size=8, max_dataset_bytes=1024 * 1024)


def test_ten_thousand_digit_images_are_stored_as_uint8_at_the_model_size():
    """The workshop's measured case: 10,000 28x28 digits, a model that sees 8x8."""
    rng = np.random.default_rng(0)
    strokes = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    entries = {}
    for index in range(10_000):
        digit = index % 10
        pixels = np.roll(strokes[digit], index % 7, axis=1)
        entries[f"digits/{digit}/{index}.png"] = png_from_array(pixels)
    data = make_zip(entries, compression=zipfile.ZIP_STORED)
    dataset, notes = load_image_zip(data, image_size=64, max_stored_size=8, filename="d.zip")
    assert notes == []
    assert dataset.x.dtype == np.uint8 and dataset.x.shape == (10_000, 8, 8, 1)
    # 640,000 bytes of pixels + 80,000 of int64 labels, against 163,840,000 bytes for the
    # float32 images at 64x64 this zip used to take (and 4x that while loading).
    assert dataset.nbytes == 10_000 * 8 * 8 + 10_000 * 8 <= 3 * 1024 * 1024
    assert "resized to 8x8 (the model's input size; 64x64 was asked)" in dataset.description
    # Decoded straight to 8x8, as Pillow resizes the 28x28 image.
    original = Image.fromarray(np.roll(strokes[3], 3, axis=1))  # entry digits/3/3.png
    expected = np.asarray(original.convert("RGB").resize((8, 8), Image.BILINEAR))[..., 0]
    first_three = np.flatnonzero(dataset.y == 3)[0]
    np.testing.assert_array_equal(dataset.x[first_three, ..., 0], expected)


def test_an_uploaded_zip_trains_to_bitwise_the_weights_of_its_float_twin(bundled):
    """Workspace.start_run on the uint8 upload == on the same images stored as x / 255."""
    from models.training import TrainingConfig
    from models.workspace import Workspace

    rng = np.random.default_rng(2)
    entries = {
        f"{name}/{index}.png": png_from_array(rng.integers(0, 256, (20, 20), dtype=np.uint8))
        for name in ("cats", "dogs", "owls")
        for index in range(12)
    }
    uploaded, _ = load_image_zip(make_zip(entries), image_size=16, max_stored_size=16)
    twin = ImageDataset(
        "float_twin", "Twin", "", uploaded.x.astype("float32") / 255, uploaded.y,
        uploaded.class_names,
    )  # fmt: skip
    config = TrainingConfig(epochs=2, batch_size=8, validation_fraction=0.25, seed=4)
    models = []
    for dataset in (uploaded, twin):
        workspace = Workspace(bundled, dataset)
        run = workspace.start_run(config, background=False)
        assert run.job.progress().state.value == "finished", run.job.progress().message
        models.append(workspace.model)
    uint8_model, float_model = models
    assert uint8_model.inputs[0].dtype == "uint8" and float_model.inputs[0].dtype == "float32"
    for uint8_weight, float_weight in zip(
        uint8_model.get_weights(), float_model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(uint8_weight, float_weight)


@pytest.mark.parametrize(
    ("input_shape", "expected"),
    [((8, 8, 1), 8), ((96, 128, 3), 128), ((None, None, 3), None), ((4,), None), (None, None)],
)
def test_largest_useful_image_size_is_the_base_input_side(input_shape, expected):
    assert largest_useful_image_size(input_shape) == expected


def test_a_stored_size_larger_than_asked_changes_nothing():
    entries = {"a/1.png": png_bytes(30, mode="L"), "b/1.png": png_bytes(200, mode="L")}
    dataset, _ = load_image_zip(make_zip(entries), image_size=16, max_stored_size=224)
    assert dataset.input_shape == (16, 16, 1)
    assert "was asked" not in dataset.description
    with pytest.raises(ValueError, match=r"`max_stored_size` must be None or a whole number >= 1"):
        load_image_zip(make_zip(entries), max_stored_size=0)


@pytest.mark.parametrize("value", [True, 2.0, 7, 257, "64"])
def test_image_sizes_outside_the_range_bools_and_other_types_are_refused(value):
    with pytest.raises(ValueError, match=r"`image_size` must be a whole number from 8 to 256"):
        load_image_zip(make_zip({}), image_size=value)


def test_bad_zip_arguments_are_explained():
    with pytest.raises(ValueError, match=r"`max_files` must be a whole number >= 1\. Received: "):
        load_image_zip(make_zip({}), max_files=0)
    with pytest.raises(TypeError, match="received str"):
        load_image_zip("cats.zip")


def test_reading_reports_progress_in_files_up_to_the_total():
    entries = {f"{name}/{index}.png": png_bytes((index, 0, 0)) for name in ("a", "b")
               for index in range(120)}  # fmt: skip
    reports = []
    dataset, _ = load_image_zip(
        make_zip(entries), image_size=8, on_progress=lambda *report: reports.append(report)
    )
    assert dataset.num_samples == 240
    assert reports[0] == (0, 240) and reports[-1] == (240, 240)
    done = [files for files, _ in reports]
    assert done == sorted(done) and len(reports) <= PROGRESS_REPORTS + 2
