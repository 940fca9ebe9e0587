import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import DataError, DataWarning, yolo_class_names, yolo_dataset


def records(dataset):
    return list(dataset.as_numpy_iterator())


def read_all(root, split, **kwargs):
    """(records, DataWarning messages) of one split."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = records(yolo_dataset(root, split, **kwargs))
    return result, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("layout", ["roboflow", "ultralytics"])
def test_reads_both_layouts_with_exact_counts_and_backgrounds(yolo_writer, layout):
    yolo = yolo_writer(layout=layout)
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.5, 0.5), (1, 0.25, 0.75, 0.25, 0.5)])
    yolo.add("train", "b", ["1 0.125 0.25 0.25 0.5"], size=(20, 10), suffix=".png")
    yolo.add("train", "empty", [])  # empty label file: a background image
    yolo.add("train", "unlabelled", label=False)  # no label file: a background image too
    yolo.add("valid", "other", [(0, 0.5, 0.5, 0.2, 0.2)])
    (yolo.dirs("train")[0] / "notes.md").write_text("not an image")

    result, warned = read_all(yolo.root, "train")
    assert [r["image_id"] for r in result] == [b"a", b"b", b"empty", b"unlabelled"]
    assert sum(len(r["boxes"]) for r in result) == 3
    a, b, empty, unlabelled = result
    assert a["image"].shape == (30, 40, 3) and b["image"].shape == (10, 20, 3)
    # [cy - h/2, cx - w/2, cy + h/2, cx + w/2]: already normalised, whatever the image size.
    np.testing.assert_allclose(a["boxes"], [[0.25, 0.25, 0.75, 0.75], [0.5, 0.125, 1.0, 0.375]])
    np.testing.assert_array_equal(a["labels"], [1, 2])
    np.testing.assert_allclose(b["boxes"], [[0.0, 0.0, 0.5, 0.25]])
    np.testing.assert_array_equal(b["labels"], [2])
    for record in (empty, unlabelled):
        assert record["boxes"].shape == (0, 4) and record["labels"].shape == (0,)
    assert not a["difficult"].any() and not a["iscrowd"].any() and len(a["iscrowd"]) == 2
    assert len(warned) == 1 and "1 images have no label file" in warned[0]
    assert "unlabelled.txt" in warned[0]
    assert len(records(yolo_dataset(yolo.root, "valid"))) == 1


def test_record_spec_is_the_shared_one(yolo):
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.5, 0.5)])
    spec = yolo_dataset(yolo.root, "train").element_spec
    assert spec["image"] == tf.TensorSpec([None, None, 3], tf.uint8)
    assert spec["boxes"] == tf.TensorSpec([None, 4], tf.float32)
    assert spec["labels"] == tf.TensorSpec([None], tf.int32)
    assert spec["image_id"] == tf.TensorSpec([], tf.string)
    assert spec["difficult"] == spec["iscrowd"] == tf.TensorSpec([None], tf.bool)


def test_images_in_subfolders_keep_their_relative_path(yolo):
    yolo.add("train", "day/a", [(0, 0.5, 0.5, 0.5, 0.5)])
    yolo.add("train", "night/a", [(1, 0.5, 0.5, 0.5, 0.5), (1, 0.5, 0.5, 0.25, 0.25)])
    result, _ = read_all(yolo.root, "train")
    assert [(r["image_id"], len(r["boxes"])) for r in result] == [(b"day/a", 1), (b"night/a", 2)]


def test_zero_size_dropped_and_outside_clipped_in_one_warning(yolo):
    yolo.add(
        "train",
        "a",
        [
            (0, 0.5, 0.5, 0.5, 0.5),  # fine
            (0, 0.5, 0.5, 0, 0.2),  # zero width: dropped
            (1, 0.5, 0.5, 0.2, -0.2),  # negative height (inverted): dropped
            (1, 0.9, 0.1, 0.4, 0.4),  # reaches past the right and top: clipped
        ],
    )
    yolo.add("train", "b", [(0, 1.5, 1.5, 0.2, 0.2)])  # entirely outside: dropped
    result, warned = read_all(yolo.root, "train")
    a, b = result
    np.testing.assert_allclose(
        a["boxes"], [[0.25, 0.25, 0.75, 0.75], [0.0, 0.7, 0.3, 1.0]], atol=1e-6
    )
    np.testing.assert_array_equal(a["labels"], [1, 2])
    assert b["boxes"].shape == (0, 4)
    assert len(warned) == 1 and "dropped 3 boxes" in warned[0] and "clipped 1 boxes" in warned[0]


@pytest.mark.parametrize(
    "row, match",
    [
        ("2 0.5 0.5 0.1 0.1", r"a\.txt:2: class index 2 is outside 0\.\.1"),
        ("-1 0.5 0.5 0.1 0.1", r"a\.txt:2: class index -1 is outside"),
        ("0.5 0.5 0.5 0.1 0.1", r"a\.txt:2: class index '0\.5' is not an integer"),
        ("cat 0.5 0.5 0.1 0.1", r"a\.txt:2: 'cat' is not a number"),
        ("0 0.5 0.5 0.1", r"a\.txt:2: expected 'class cx cy w h' \(5 numbers\), got 4 fields"),
        ("0 0.1 0.1 0.2 0.1 0.2 0.2", r"a\.txt:2: .*got 7 fields"),
        ("0 0.5 0.5 wide 0.1", r"a\.txt:2: 'wide' is not a number"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(yolo, row, match):
    yolo.add("train", "a", ["0 0.5 0.5 0.2 0.2", row])
    with pytest.raises(DataError, match=match):
        yolo_dataset(yolo.root, "train")


def test_class_index_bound_follows_the_given_class_names(yolo):
    yolo.add("train", "a", [(1, 0.5, 0.5, 0.2, 0.2)])
    with pytest.raises(DataError, match=r"class index 1 is outside 0\.\.0 \(1 class names\)"):
        yolo_dataset(yolo.root, "train", class_names=["cat"])
    (record,) = records(yolo_dataset(yolo.root, "train", class_names=["x", "y", "z"]))
    np.testing.assert_array_equal(record["labels"], [2])


def test_label_without_image_names_the_missing_image(yolo):
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.2, 0.2)])
    yolo.add("train", "gone", [(0, 0.5, 0.5, 0.2, 0.2)], image=False)
    with pytest.raises(DataError, match=r"gone\.txt has no image .*gone\.\*.*missing"):
        yolo_dataset(yolo.root, "train")


def test_labelimg_classes_txt_beside_the_labels_is_not_an_orphan(yolo):
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.2, 0.2)])
    (yolo.dirs("train")[1] / "classes.txt").write_text("cat\ndog\n")
    assert [r["image_id"] for r in records(yolo_dataset(yolo.root, "train"))] == [b"a"]


def test_broken_image_link_is_a_missing_image(yolo):
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.2, 0.2)])
    images, labels = yolo.dirs("train")
    (images / "b.jpg").symlink_to(images / "nowhere.jpg")
    (labels / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"image file not found: .*b\.jpg"):
        yolo_dataset(yolo.root, "train")


def test_missing_split_labels_dir_or_images_are_errors(yolo):
    with pytest.raises(DataError, match=r"split 'train' not found .*train/images.*images/train"):
        yolo_dataset(yolo.root, "train")
    yolo.dirs("train")[0].mkdir(parents=True)
    with pytest.raises(DataError, match=r"labels directory not found: .*train/labels"):
        yolo_dataset(yolo.root, "train")
    yolo.dirs("train")[1].mkdir(parents=True)
    with pytest.raises(DataError, match=r"split 'train' has no images in .*train/images"):
        yolo_dataset(yolo.root, "train")
    with pytest.raises(DataError, match=r"split name '\.\./x' must be a folder name"):
        yolo_dataset(yolo.root, "../x")


def test_two_images_sharing_a_stem_are_an_error(yolo):
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.2, 0.2)])
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.2, 0.2)], suffix=".png")
    with pytest.raises(DataError, match=r"a\.jpg and .*a\.png share the label file"):
        yolo_dataset(yolo.root, "train")


def test_corrupt_images_are_skipped_with_a_warning_or_strict_errors(yolo):
    yolo.add("train", "good", [(0, 0.5, 0.5, 0.2, 0.2), (1, 0.5, 0.5, 0.4, 0.4)])
    yolo.add("train", "corrupt", [(0, 0.5, 0.5, 0.2, 0.2)], kind="corrupt")
    yolo.add("train", "truncated", [(0, 0.5, 0.5, 0.2, 0.2)], kind="truncated")
    result, warned = read_all(yolo.root, "train")
    assert [r["image_id"] for r in result] == [b"good"]
    assert any("corrupt.jpg" in m for m in warned) and any("truncated.jpg" in m for m in warned)
    with pytest.raises(DataError, match=r"corrupt\.jpg"):
        yolo_dataset(yolo.root, "train", strict=True)


@pytest.mark.parametrize(
    "text, names",
    [
        ("nc: 3\nnames: [fish, jellyfish, penguin]\n", ["fish", "jellyfish", "penguin"]),
        ("names:\n  0: person\n  1: bicycle\n  2: car\n", ["person", "bicycle", "car"]),
        ("names:\n  1: b\n  0: a\n", ["a", "b"]),
        ("train: ../train/images\nnames:\n- 'a b'\n- c\n", ["a b", "c"]),
    ],
)
def test_class_names_from_data_yaml(tmp_path, text, names):
    (tmp_path / "data.yaml").write_text(text)
    assert yolo_class_names(tmp_path) == names


@pytest.mark.parametrize(
    "text, match",
    [
        ("nc: 2\nnames: [a, b, c]\n", r"'nc' = 2 but 'names' lists 3 classes"),
        ("names:\n  0: a\n  2: c\n", r"'names' keys \[0, 2\] are not 0\.\.1"),
        ("nc: 2\n", r"has no 'names' list"),
        ("names: [a, b\n", r"cannot parse .*data\.yaml"),
    ],
)
def test_bad_data_yaml_is_an_error_naming_it(tmp_path, text, match):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=match):
        yolo_class_names(tmp_path)


@pytest.mark.parametrize("file_name", ["classes.txt", "obj.names"])
def test_class_names_from_a_names_file(tmp_path, file_name):
    (tmp_path / file_name).write_text("fish\n\nshark \n")
    assert yolo_class_names(tmp_path) == ["fish", "shark"]


def test_no_class_names_is_an_error_naming_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"data\.yaml.*classes\.txt, obj\.names.*class_names"):
        yolo_class_names(tmp_path)


def test_roboflow_export_with_an_empty_label_file_and_zero_size_rows(yolo):
    """What a Roboflow YOLO export holds (the aquarium set of ../shared had both, built here):
    an image whose label file is empty is kept with no boxes; zero-size rows (w = h = 0) are
    dropped, counted in one warning."""
    yolo.add("train", "a", [(0, 0.5, 0.5, 0.5, 0.5), (1, 0.3, 0.3, 0.2, 0.2)])
    yolo.add("train", "b", [])
    yolo.add("test", "c", [(0, 0.5, 0.5, 0, 0), (1, 0.5, 0.5, 0.2, 0.2), (0, 0.2, 0.2, 0, 0)])
    counts = sorted(len(r["labels"]) for r in records(yolo_dataset(yolo.root, "train")))
    assert counts == [0, 2]
    with pytest.warns(DataWarning, match="dropped 2 boxes"):
        test = records(yolo_dataset(yolo.root, "test"))
    assert [list(r["labels"]) for r in test] == [[2]]


def test_config_source_reads_the_split_folders_and_data_yaml(yolo):
    from tf_frcnn.config import config_from_dict
    from tf_frcnn.data import inputs

    yolo.add("train", "a", [(1, 0.5, 0.5, 0.5, 0.5)])
    yolo.add("valid", "v", [(0, 0.5, 0.5, 0.5, 0.5), (0, 0.5, 0.5, 0.2, 0.2)])
    config = config_from_dict(
        {
            "model": {"num_classes": 2},
            "data": {"source": "yolo", "root": str(yolo.root), "val_split": "valid"},
        }
    )
    records_, names = inputs.source(config, "train")
    assert names == ["cat", "dog"]
    assert [len(r["labels"]) for r in records(records_)] == [1]
    records_, _ = inputs.source(config, config.data.val_split)
    assert [len(r["labels"]) for r in records(records_)] == [2]
