"""Tests for models/upload_tables.py: a CSV table, and every bad table explained."""

import numpy as np
import pytest

from models.upload_tables import TabularDataset, csv_columns, load_csv_dataset

pytestmark = pytest.mark.usefixtures("offline_keras_home")


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
    assert dataset.nbytes == 6 * 2 * 4 + 6 * 8  # float32 features, int64 labels


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
