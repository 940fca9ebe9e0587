import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import VOC_CLASS_NAMES, DataError, DataWarning, discover_voc_classes, voc_dataset


def records(dataset):
    return list(dataset.as_numpy_iterator())


def test_reads_records_with_one_based_pixels_converted(voc):
    # 40 x 30 image; VOC pixel (1, 1) is the top-left corner, so 1 is subtracted everywhere.
    voc.add("a", [("dog", 1, 1, 21, 16), ("cat", 11, 7, 41, 31, 1)])
    voc.add("b", [("cat", 5, 5, 9, 9)], size=(20, 10))
    voc.add("empty")
    split = voc.split("train", ["a", "b", "empty"])

    dataset = voc_dataset(voc.root, split, class_names=["cat", "dog"])
    assert dataset.element_spec["image"] == tf.TensorSpec([None, None, 3], tf.uint8)
    assert dataset.element_spec["boxes"] == tf.TensorSpec([None, 4], tf.float32)
    assert dataset.element_spec["labels"].dtype == tf.int32
    assert dataset.element_spec["image_id"] == tf.TensorSpec([], tf.string)
    a, b, empty = records(dataset)

    assert [r["image_id"] for r in (a, b, empty)] == [b"a", b"b", b"empty"]
    assert a["image"].shape == (30, 40, 3) and b["image"].shape == (10, 20, 3)
    np.testing.assert_allclose(
        a["boxes"], [[0, 0, 15 / 30, 20 / 40], [6 / 30, 10 / 40, 1, 1]], rtol=1e-6
    )
    np.testing.assert_array_equal(a["labels"], [2, 1])
    np.testing.assert_array_equal(a["difficult"], [False, True])
    np.testing.assert_array_equal(a["iscrowd"], [False, False])
    np.testing.assert_allclose(b["boxes"], [[4 / 10, 4 / 20, 8 / 10, 8 / 20]], rtol=1e-6)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_default_classes_are_the_twenty_voc_ones(voc):
    voc.add("a", [("dog", 1, 1, 10, 10), ("tvmonitor", 1, 1, 10, 10)])
    (record,) = records(voc_dataset(voc.root, voc.split("val", ["a"])))
    assert len(VOC_CLASS_NAMES) == 20
    np.testing.assert_array_equal(record["labels"], [12, 20])


def test_image_path_comes_from_the_id_not_the_filename_tag(voc):
    voc.add("real_id", [("cat", 1, 1, 5, 5)])
    (record,) = records(voc_dataset(voc.root, voc.split("s", ["real_id"]), class_names=["cat"]))
    assert record["image_id"] == b"real_id"


def test_discover_classes_sorted(voc):
    voc.add("a", [("zebra", 1, 1, 5, 5), ("ant", 1, 1, 5, 5)])
    voc.add("b", [("zebra", 1, 1, 5, 5), ("moth", 1, 1, 5, 5)])
    assert discover_voc_classes(voc.root, voc.split("s", ["a", "b"])) == ["ant", "moth", "zebra"]


def test_bad_boxes_are_clipped_or_dropped_with_one_warning(voc):
    voc.add(
        "a",
        [
            ("cat", 1, 1, 11, 11),  # fine
            ("cat", 20, 5, 10, 15),  # xmin > xmax: dropped
            ("cat", 5, 5, 5, 15),  # zero width: dropped
            ("cat", 30, 20, 60, 45),  # reaches outside: clipped to [19/30, 29/40, 1, 1]
        ],
    )
    voc.add("b", [("cat", 50, 40, 70, 60), ("cat", 2, 2, 4, 4)])  # first fully outside: dropped
    split = voc.split("s", ["a", "b"])
    with pytest.warns(DataWarning) as caught:
        a, b = records(voc_dataset(voc.root, split, class_names=["cat"]))
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "dropped 3 boxes" in messages[0] and "clipped 1 boxes" in messages[0]
    np.testing.assert_allclose(
        a["boxes"], [[0, 0, 10 / 30, 10 / 40], [19 / 30, 29 / 40, 1, 1]], rtol=1e-6
    )
    assert len(a["labels"]) == 2 and len(b["boxes"]) == 1 and len(b["difficult"]) == 1


def test_size_zero_in_xml_uses_the_decoded_image_size(voc):
    voc.add("a", [("cat", 1, 1, 21, 16)], size=(40, 30), xml_size=(0, 0))
    (record,) = records(voc_dataset(voc.root, voc.split("s", ["a"]), class_names=["cat"]))
    np.testing.assert_allclose(record["boxes"], [[0, 0, 0.5, 0.5]])


def test_xml_size_that_disagrees_with_the_file_is_reported(voc):
    voc.add("a", [("cat", 1, 1, 21, 16)], size=(40, 30), xml_size=(80, 60))
    with pytest.warns(DataWarning, match="differs from the image file"):
        (record,) = records(voc_dataset(voc.root, voc.split("s", ["a"]), class_names=["cat"]))
    np.testing.assert_allclose(record["boxes"], [[0, 0, 0.25, 0.25]])


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda v: v.add("a", image=False), r"JPEGImages[/\\]a\.jpg"),
        (lambda v: v.add("a", annotation=False), r"Annotations[/\\]a\.xml"),
        (lambda v: v.add("a", [("unicorn", 1, 1, 5, 5)]), r"unknown class 'unicorn' in .*a\.xml"),
    ],
    ids=["missing image", "missing annotation", "unknown class"],
)
def test_missing_files_and_unknown_class_are_errors_naming_them(voc, setup, match):
    voc.add("ok", [("cat", 1, 1, 5, 5)])
    setup(voc)
    with pytest.raises(DataError, match=match):
        voc_dataset(voc.root, voc.split("s", ["ok", "a"]), class_names=["cat"])


def test_empty_or_missing_split_is_an_error(voc):
    with pytest.raises(DataError, match="lists no images"):
        voc_dataset(voc.root, voc.split("empty", []))
    with pytest.raises(DataError, match=r"nosuch\.txt"):
        voc_dataset(voc.root, "nosuch")


def test_corrupt_and_truncated_images_are_skipped_with_a_warning(voc):
    voc.add("good", [("cat", 1, 1, 5, 5), ("cat", 2, 2, 9, 9)])
    voc.add("corrupt", [("cat", 1, 1, 5, 5)], kind="corrupt")
    voc.add("truncated", [("cat", 1, 1, 5, 5)], kind="truncated")
    voc.add("good2", [("cat", 3, 3, 8, 8)])
    split = voc.split("s", ["good", "corrupt", "truncated", "good2"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = records(voc_dataset(voc.root, split, class_names=["cat"]))
    assert [r["image_id"] for r in result] == [b"good", b"good2"]
    assert sum(len(r["boxes"]) for r in result) == 3
    skipped = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("corrupt.jpg" in m for m in skipped) and any("truncated.jpg" in m for m in skipped)


def test_no_readable_image_is_an_error(voc):
    voc.add("bad", [("cat", 1, 1, 5, 5)], kind="corrupt")
    with (
        pytest.warns(DataWarning, match=r"bad\.jpg"),
        pytest.raises(DataError, match="no readable images"),
    ):
        voc_dataset(voc.root, voc.split("s", ["bad"]), class_names=["cat"])


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_strict_mode_raises_naming_the_bad_image(voc, kind):
    voc.add("good", [("cat", 1, 1, 5, 5)])
    voc.add("bad", [("cat", 1, 1, 5, 5)], kind=kind)
    with pytest.raises(DataError, match=r"bad\.jpg"):
        voc_dataset(voc.root, voc.split("s", ["good", "bad"]), class_names=["cat"], strict=True)


def test_all_colour_modes_become_rgb(voc):
    # PNG content under a .jpg name, as happens in the wild: the decoder goes by content.
    kinds = ["rgb", "gray", "rgba", "palette", "palette_transparent", "cmyk"]
    colours = [voc.add(kind, [("cat", 1, 1, 5, 5)], kind=kind, size=(9, 6)) for kind in kinds]
    result = records(voc_dataset(voc.root, voc.split("s", kinds), class_names=["cat"]))
    assert len(result) == len(kinds)
    for record, colour in zip(result, colours):
        assert record["image"].shape == (6, 9, 3) and record["image"].dtype == np.uint8
        np.testing.assert_allclose(record["image"].reshape(-1, 3).mean(0), colour, atol=6)
