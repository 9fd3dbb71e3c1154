"""Tests for components/data_step.py's plain helpers: memory line, thumbnails, the size help."""

import numpy as np

from components.data_step import _image_size_help, _thumbnail, memory_text
from models.datasets import ImageDataset, load_bundled_dataset
from models.upload_tables import load_csv_dataset


def test_the_memory_line_gives_bytes_dtype_and_sample_shape():
    assert memory_text(load_bundled_dataset("digits_5_9")) == (
        "In memory: 236,544 bytes, float32 8×8×1"
    )
    pixels = np.zeros((10_000, 8, 8, 3), dtype=np.uint8)
    uploaded = ImageDataset("up", "Up", "", pixels, np.arange(10_000) % 2, ("a", "b"))
    assert memory_text(uploaded) == "In memory: 1.91 MiB, uint8 8×8×3"
    table, _ = load_csv_dataset(b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n", "label")
    assert memory_text(table) == "In memory: 64 bytes, float32 2 features"


def test_thumbnails_show_uint8_and_float_images_alike():
    gray = np.full((8, 8, 1), 51, dtype=np.uint8)
    from_pixels = np.asarray(_thumbnail(gray, size=16))
    from_floats = np.asarray(_thumbnail(gray.astype("float32") / 255, size=16))
    assert from_pixels.shape == (16, 16)
    np.testing.assert_array_equal(from_pixels, 51)
    np.testing.assert_array_equal(from_floats, from_pixels)


def test_the_image_size_help_says_images_are_stored_at_most_at_the_model_size():
    assert "at most at the model's input size, here 8×8" in _image_size_help(8)
    assert "8×8 for the bundled CNN" in _image_size_help(None)
