"""Tests for models/checks.py: an upload's bytes, checked, and their size in words."""

import pytest

from models.checks import checked_bytes, human_size


def test_sizes_read_in_bytes_below_one_mebibyte_then_in_mebibytes_then_gibibytes():
    assert human_size(2048) == "2,048 bytes"
    assert human_size(1024 * 1024 - 1) == "1,048,575 bytes"
    assert human_size(3 * 1024 * 1024 // 2) == "1.50 MiB"
    assert human_size(1024**3 - 1) == "1024.00 MiB"
    assert human_size(1.25 * 1024**3) == "1.25 GiB"


def test_bytes_like_content_is_accepted_and_anything_else_is_named():
    assert checked_bytes(memoryview(b"a,b"), "load_csv_dataset") == b"a,b"
    with pytest.raises(TypeError, match="load_image_zip expects the file's bytes; received str"):
        checked_bytes("cats.zip", "load_image_zip")
