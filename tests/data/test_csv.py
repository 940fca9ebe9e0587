import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import DataError, DataWarning, csv_class_names, csv_dataset


def read_all(path, image_dir, **kwargs):
    """(records, DataWarning messages) of one table."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = list(csv_dataset(path, image_dir, **kwargs).as_numpy_iterator())
    return result, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


ROWS = [
    "a.jpg,0,0,20,15,dog",
    "sub/b.png,2,1,6,5,cat",
    "empty.jpg,,,,,",  # keras-retinanet: an image without objects
    "./a.jpg,10,6,40,30,cat",  # a's second box, not adjacent to its first
]


@pytest.mark.parametrize("header", [None, "path,xmin,ymin,xmax,ymax,class"])
def test_reads_rows_per_box_with_exact_counts(table, header):
    table.image("a.jpg")  # 40 x 30
    table.image("sub/b.png", size=(20, 10))
    table.image("empty.jpg")
    path = table.table(([header] if header else []) + ROWS)

    assert csv_class_names(path) == ["cat", "dog"]
    result, warned = read_all(path, table.image_dir)
    assert warned == []
    assert [r["image_id"] for r in result] == [b"a.jpg", b"sub/b.png", b"empty.jpg"]
    assert sum(len(r["boxes"]) for r in result) == 3
    a, b, empty = result
    assert a["image"].shape == (30, 40, 3) and b["image"].shape == (10, 20, 3)
    np.testing.assert_allclose(a["boxes"], [[0, 0, 0.5, 0.5], [0.2, 0.25, 1.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(a["labels"], [2, 1])
    np.testing.assert_allclose(b["boxes"], [[0.1, 0.1, 0.5, 0.3]], rtol=1e-6)
    np.testing.assert_array_equal(b["labels"], [1])
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert not a["difficult"].any() and not a["iscrowd"].any() and len(a["difficult"]) == 2


def test_record_spec_is_the_shared_one(table):
    table.image("a.jpg")
    spec = csv_dataset(table.table(["a.jpg,0,0,20,15,dog"]), table.image_dir).element_spec
    assert spec["image"] == tf.TensorSpec([None, None, 3], tf.uint8)
    assert spec["boxes"] == tf.TensorSpec([None, 4], tf.float32)
    assert spec["labels"] == tf.TensorSpec([None], tf.int32)
    assert spec["difficult"] == spec["iscrowd"] == tf.TensorSpec([None], tf.bool)


def test_header_columns_are_found_by_name(table):
    # The TensorFlow object-detection CSV: extra width/height columns, another order.
    table.image("a.jpg")
    path = table.table(
        [
            "filename,width,height,class,xmin,ymin,xmax,ymax",
            "a.jpg,40,30,dog,0,0,20,15",
            "a.jpg,40,30,cat,10,6,40,30",
        ]
    )
    ((record,), _) = read_all(path, table.image_dir)
    np.testing.assert_allclose(record["boxes"], [[0, 0, 0.5, 0.5], [0.2, 0.25, 1, 1]], rtol=1e-6)
    np.testing.assert_array_equal(record["labels"], [2, 1])
    bad = table.table(["filename,xmin,ymin,xmax,ymax", "a.jpg,0,0,20,15"], name="bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv:1: .*one column named class or label"):
        csv_dataset(bad, table.image_dir)


def test_given_class_names_set_the_labels_and_refuse_others(table):
    table.image("a.jpg")
    path = table.table(["a.jpg,0,0,20,15,dog", "a.jpg,1,1,9,9,cat"])
    ((record,), _) = read_all(path, table.image_dir, class_names=["bird", "dog", "cat"])
    np.testing.assert_array_equal(record["labels"], [2, 3])
    with pytest.raises(DataError, match=r"boxes\.csv:2: unknown class 'cat'; known .*'dog'"):
        csv_dataset(path, table.image_dir, class_names=["dog"])


def test_bad_boxes_are_dropped_or_clipped_in_one_warning(table):
    table.image("a.jpg")  # 40 x 30
    path = table.table(
        [
            "a.jpg,0,0,20,15,dog",  # fine
            "a.jpg,20,5,10,15,dog",  # xmin > xmax: dropped
            "a.jpg,5,5,5,15,dog",  # zero width: dropped
            "a.jpg,30,20,60,45,cat",  # reaches outside: clipped to [20/30, 30/40, 1, 1]
            "a.jpg,nan,1,9,9,cat",  # NaN: dropped
        ]
    )
    ((record,), warned) = read_all(path, table.image_dir)
    np.testing.assert_allclose(
        record["boxes"], [[0, 0, 0.5, 0.5], [20 / 30, 0.75, 1, 1]], rtol=1e-6
    )
    np.testing.assert_array_equal(record["labels"], [2, 1])
    assert len(warned) == 1 and "dropped 3 boxes" in warned[0] and "clipped 1 boxes" in warned[0]


@pytest.mark.parametrize(
    "line, match",
    [
        ("a.jpg,0,zero,20,15,dog", r"boxes\.csv:2: 'zero' is not a number"),
        ("a.jpg,0,0,20,15", r"boxes\.csv:2: expected path, xmin, ymin, xmax, ymax, class, got 5"),
        ("a.jpg,0,0,20,15,dog,extra", r"boxes\.csv:2: .*got 7 fields"),
        ("a.jpg,0,0,,15,dog", r"boxes\.csv:2: the box and class fields must all be filled"),
        ("a.jpg,0,0,20,15,", r"boxes\.csv:2: the box and class fields must all be filled"),
        ("missing.jpg,0,0,20,15,dog", r"boxes\.csv:2: image file not found: .*missing\.jpg"),
        ("../outside.jpg,0,0,20,15,dog", r"boxes\.csv:2: path '\.\./outside\.jpg' points outside"),
        (",0,0,20,15,dog", r"boxes\.csv:2: path '' is not a file name"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(table, line, match):
    table.image("a.jpg")
    table.image("../outside.jpg")  # it exists: the refusal is not a "not found"
    path = table.table(["a.jpg,0,0,20,15,dog", line])
    with pytest.raises(DataError, match=match):
        csv_dataset(path, table.image_dir)


def test_absolute_path_is_refused(table):
    outside = table.root / "elsewhere.jpg"
    table.image("a.jpg")
    table.image(str(outside))
    with pytest.raises(DataError, match=r"boxes\.csv:1: path .*elsewhere\.jpg' points outside"):
        csv_dataset(table.table([f"{outside},0,0,20,15,dog"]), table.image_dir)


def test_empty_or_missing_table_is_an_error(table):
    for lines in ([], ["path,xmin,ymin,xmax,ymax,class"], ["", " , "]):
        path = table.table(lines)
        with pytest.raises(DataError, match=r"CSV file .*boxes\.csv lists no images"):
            csv_dataset(path, table.image_dir)
    with pytest.raises(DataError, match=r"CSV annotation file not found: .*nope\.csv"):
        csv_class_names(table.root / "nope.csv")


def test_line_numbers_count_blank_and_multi_line_rows(table):
    table.image("a.jpg")
    path = table.table(
        [
            "",
            "path,xmin,ymin,xmax,ymax,class",
            '"a.jpg",0,0,20,15,"two\nlines"',
            "a.jpg,0,x,20,15,dog",
        ]
    )
    with pytest.raises(DataError, match=r"boxes\.csv:5: 'x' is not a number"):
        csv_dataset(path, table.image_dir)
    bad = table.table(["", "file,xmin,ymin,xmax,ymax"], name="bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv:2: the header"):
        csv_dataset(bad, table.image_dir)


def test_byte_order_mark_and_quoted_paths(table):
    table.image("a, b.jpg")
    path = table.root / "boxes.csv"
    path.write_bytes(
        '\ufeffpath,xmin,ymin,xmax,ymax,class\n"a, b.jpg",0,0,20,15,dog\n'.encode("utf-8")
    )
    ((record,), _) = read_all(path, table.image_dir)
    assert record["image_id"] == b"a, b.jpg" and len(record["boxes"]) == 1


def test_corrupt_images_are_skipped_with_a_warning_or_strict_errors(table):
    table.image("good.jpg")
    table.image("corrupt.jpg", kind="corrupt")
    table.image("truncated.jpg", kind="truncated")
    path = table.table(
        [
            "good.jpg,0,0,20,15,dog",
            "corrupt.jpg,0,0,20,15,dog",
            "truncated.jpg,0,0,20,15,dog",
            "good.jpg,1,1,5,5,dog",
        ]
    )
    result, warned = read_all(path, table.image_dir)
    assert [(r["image_id"], len(r["boxes"])) for r in result] == [(b"good.jpg", 2)]
    assert any("corrupt.jpg" in m for m in warned) and any("truncated.jpg" in m for m in warned)
    with pytest.raises(DataError, match=r"corrupt\.jpg"):
        csv_dataset(path, table.image_dir, strict=True)


def test_config_source_takes_the_training_table_for_train_split_else_the_eval_table(table):
    from tf_frcnn.config import ConfigError, config_from_dict
    from tf_frcnn.data import inputs

    table.image("a.jpg")
    train = table.table(["a.jpg,0,0,20,15,dog", "a.jpg,1,1,9,9,cat"], name="train.csv")
    evaluation = table.table(["a.jpg,0,0,20,15,dog"], name="test.csv")
    data = {"source": "csv", "root": str(table.image_dir), "annotations": str(train)}
    config = config_from_dict({"model": {"num_classes": 2}, "data": data})
    records, names = inputs.source(config, "train")
    assert names == ["cat", "dog"]
    assert [list(r["labels"]) for r in records.as_numpy_iterator()] == [[2, 1]]
    with pytest.raises(ConfigError, match=r"'data\.eval_annotations' must be set"):
        inputs.source(config, "test")

    data["eval_annotations"] = str(evaluation)
    config = config_from_dict({"model": {"num_classes": 2}, "data": data})
    for split in ("test", "valid"):  # eval_split or a named val_split: the eval table
        records, names = inputs.source(config, split)
        assert names == ["cat", "dog"]  # the training table's names, for both
        assert [list(r["labels"]) for r in records.as_numpy_iterator()] == [[2]]
