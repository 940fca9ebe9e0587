"""The TFDS catalog mapping, on examples laid out like TFDS's voc and coco features."""

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import DataError, tfds_dataset, tfds_to_record


def voc_layout_example():
    # Shaped like tfds voc/2007: objects/label is a 0-based ClassLabel (int64).
    return {
        "image": tf.zeros([6, 8, 3], tf.uint8),
        "image/filename": tf.constant("000005.jpg"),
        "labels": tf.constant([8, 14], tf.int64),
        "labels_no_difficult": tf.constant([8], tf.int64),
        "objects": {
            "bbox": tf.constant([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], tf.float32),
            "label": tf.constant([8, 14], tf.int64),
            "is_difficult": tf.constant([False, True]),
            "is_truncated": tf.constant([True, False]),
            "pose": tf.constant([0, 1], tf.int64),
        },
    }


def coco_layout_example(num_objects):
    # Shaped like tfds coco/2017: an int64 image/id and objects/is_crowd.
    return {
        "image": tf.zeros([4, 5, 3], tf.uint8),
        "image/filename": tf.constant("000000000139.jpg"),
        "image/id": tf.constant(139, tf.int64),
        "objects": {
            "area": tf.ones([num_objects], tf.int64),
            "bbox": tf.reshape(tf.linspace(0.0, 1.0, num_objects * 4), [num_objects, 4]),
            "id": tf.range(num_objects, dtype=tf.int64),
            "is_crowd": tf.constant([True, False, False][:num_objects], tf.bool),
            "label": tf.constant([0, 79, 5][:num_objects], tf.int64),
        },
    }


def mapped(example):
    dataset = tf.data.Dataset.from_tensors(example).map(tfds_to_record)
    assert set(dataset.element_spec) == {
        "image",
        "boxes",
        "labels",
        "image_id",
        "difficult",
        "iscrowd",
    }
    assert dataset.element_spec["labels"].dtype == tf.int32
    assert dataset.element_spec["boxes"].shape[-1] == 4
    return next(dataset.as_numpy_iterator())


def test_voc_layout():
    record = mapped(voc_layout_example())
    assert record["image_id"] == b"000005"
    np.testing.assert_allclose(record["boxes"], [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]])
    np.testing.assert_array_equal(record["labels"], [9, 15])
    np.testing.assert_array_equal(record["difficult"], [False, True])
    np.testing.assert_array_equal(record["iscrowd"], [False, False])


@pytest.mark.parametrize("num_objects", [3, 0])
def test_coco_layout(num_objects):
    record = mapped(coco_layout_example(num_objects))
    assert record["image_id"] == b"139"
    assert record["boxes"].shape == (num_objects, 4)
    np.testing.assert_array_equal(record["labels"], [1, 80, 6][:num_objects])
    np.testing.assert_array_equal(record["iscrowd"], [True, False, False][:num_objects])
    np.testing.assert_array_equal(record["difficult"], [False] * num_objects)


def test_unprepared_or_unknown_dataset_is_a_clear_error_without_download(tmp_path):
    with pytest.raises(DataError, match="not prepared"):
        tfds_dataset("voc/2007", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_dataset'"):
        tfds_dataset("no_such_dataset", "train", data_dir=tmp_path)
    assert not any(tmp_path.iterdir())
