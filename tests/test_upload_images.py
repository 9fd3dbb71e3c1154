"""Tests for models/upload_images.py: a zip of class folders, and every bad zip explained."""

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from models.upload_images import PROGRESS_REPORTS, load_image_zip

pytestmark = pytest.mark.usefixtures("offline_keras_home")


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
