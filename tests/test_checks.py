"""Tests for models/checks.py: the argument checks the upload and dataset modules share."""

import pytest

from models.checks import checked_bytes, checked_int, human_size


def test_sizes_read_in_bytes_below_one_mebibyte_and_in_mebibytes_from_it():
    assert human_size(2048) == "2,048 bytes"
    assert human_size(1024 * 1024 - 1) == "1,048,575 bytes"
    assert human_size(3 * 1024 * 1024 // 2) == "1.50 MiB"


def test_bytes_like_content_is_accepted_and_anything_else_is_named():
    assert checked_bytes(memoryview(b"a,b"), "load_csv_dataset") == b"a,b"
    with pytest.raises(TypeError, match="load_image_zip expects the file's bytes; received str"):
        checked_bytes("cats.zip", "load_image_zip")


@pytest.mark.parametrize("value", [True, 2.0, 7, 257, "64"])
def test_integers_outside_the_range_bools_and_other_types_are_refused(value):
    with pytest.raises(ValueError, match=r"image_size must be an integer >= 8 and <= 256"):
        checked_int("image_size", value, 8, 256)


def test_an_integer_in_range_comes_back_as_int_and_no_high_means_no_upper_bound():
    assert checked_int("num_samples", 0, 0) == 0
    assert checked_int("max_files", 10**9, 1) == 10**9
    with pytest.raises(ValueError, match=r"max_files must be an integer >= 1; received 0\."):
        checked_int("max_files", 0, 1)
