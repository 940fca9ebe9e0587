import warnings

import numpy as np
import pytest

from tf_frcnn.data import DataError, DataWarning, coco_class_names, coco_dataset


def records(dataset):
    return list(dataset.as_numpy_iterator())


def test_reads_records_with_contiguous_labels_and_iscrowd(coco):
    coco.content["categories"] = [
        {"id": 7, "name": "kite"},
        {"id": 1, "name": "person"},
        {"id": 3, "name": "car"},
    ]
    coco.add_image(139, size=(40, 20))
    coco.add_box(139, 3, [4, 2, 10, 8])
    coco.add_box(139, 7, [0, 0, 40, 20], iscrowd=1)
    coco.add_box(139, 1, [20, 10, 5.5, 2.5])
    coco.add_image(5, size=(16, 16))  # no annotations: background-only
    path = coco.write()

    assert coco_class_names(path) == ["person", "car", "kite"]
    first, background = records(coco_dataset(path, coco.image_dir))
    assert first["image_id"] == b"139" and background["image_id"] == b"5"
    assert first["image"].shape == (20, 40, 3)
    np.testing.assert_allclose(
        first["boxes"],
        [
            [2 / 20, 4 / 40, 10 / 20, 14 / 40],
            [0, 0, 1, 1],
            [10 / 20, 20 / 40, 12.5 / 20, 25.5 / 40],
        ],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(first["labels"], [2, 3, 1])
    np.testing.assert_array_equal(first["iscrowd"], [False, True, False])
    np.testing.assert_array_equal(first["difficult"], [False, False, False])
    assert background["boxes"].shape == (0, 4) and background["labels"].shape == (0,)


def test_bad_boxes_are_clipped_or_dropped_with_one_warning(coco):
    coco.add_image(1, size=(40, 20))
    coco.add_box(1, 1, [0, 0, 10, 10])  # fine
    coco.add_box(1, 1, [5, 5, 0, 10])  # zero width: dropped
    coco.add_box(1, 2, [5, 5, -3, 4])  # negative width (xmin > xmax): dropped
    coco.add_box(1, 2, [30, 15, 20, 20])  # reaches outside: clipped
    coco.add_box(1, 2, [50, 30, 5, 5])  # fully outside: dropped
    with pytest.warns(DataWarning) as caught:
        (record,) = records(coco_dataset(coco.write(), coco.image_dir))
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert (
        len(messages) == 1 and "dropped 3 boxes" in messages[0] and "clipped 1 boxes" in messages[0]
    )
    np.testing.assert_allclose(record["boxes"], [[0, 0, 0.5, 0.25], [0.75, 0.75, 1, 1]])
    np.testing.assert_array_equal(record["labels"], [1, 2])


def test_missing_image_size_uses_the_decoded_size(coco):
    coco.add_image(1, size=(40, 20), declared_size=(0, 0))
    coco.add_box(1, 1, [0, 0, 20, 10])
    (record,) = records(coco_dataset(coco.write(), coco.image_dir))
    np.testing.assert_allclose(record["boxes"], [[0, 0, 0.5, 0.5]])


def test_undeclared_category_or_image_and_missing_files_are_errors(coco, tmp_path):
    coco.add_image(1)
    coco.add_box(1, 99, [0, 0, 5, 5])
    with pytest.raises(DataError, match="unknown category id 99"):
        coco_dataset(coco.write(), coco.image_dir)

    coco.content["annotations"] = []
    coco.add_box(42, 1, [0, 0, 5, 5])
    with pytest.raises(DataError, match="image id 42"):
        coco_dataset(coco.write(), coco.image_dir)

    coco.content["annotations"] = []
    coco.add_image(2, file_name="gone.jpg", write=False)
    with pytest.raises(DataError, match=r"gone\.jpg"):
        coco_dataset(coco.write(), coco.image_dir)

    with pytest.raises(DataError, match=r"nothing\.json"):
        coco_dataset(tmp_path / "nothing.json", coco.image_dir)


def test_no_images_is_an_error(coco):
    with pytest.raises(DataError, match="lists no images"):
        coco_dataset(coco.write(), coco.image_dir)


def test_corrupt_and_truncated_images_are_skipped_or_strict_errors(coco):
    coco.add_image(1)
    coco.add_box(1, 1, [0, 0, 5, 5])
    coco.add_image(2, file_name="broken.jpg", kind="corrupt")
    coco.add_box(2, 1, [0, 0, 5, 5])
    coco.add_image(3, file_name="cut.jpg", kind="truncated")
    coco.add_image(4)
    coco.add_box(4, 2, [1, 1, 5, 5])
    coco.add_box(4, 2, [2, 2, 5, 5])
    path = coco.write()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = records(coco_dataset(path, coco.image_dir))
    assert [r["image_id"] for r in result] == [b"1", b"4"]
    assert sum(len(r["boxes"]) for r in result) == 3
    skipped = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("broken.jpg" in m for m in skipped) and any("cut.jpg" in m for m in skipped)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        coco_dataset(path, coco.image_dir, strict=True)


def test_colour_modes_with_their_own_extensions(coco):
    kinds = ["gray", "rgba", "palette", "palette_transparent", "cmyk"]
    colours = [
        coco.add_image(index + 1, kind=kind, size=(9, 6)) for index, kind in enumerate(kinds)
    ]
    result = records(coco_dataset(coco.write(), coco.image_dir))
    for record, colour in zip(result, colours):
        assert record["image"].shape == (6, 9, 3)
        np.testing.assert_allclose(record["image"].reshape(-1, 3).mean(0), colour, atol=6)
