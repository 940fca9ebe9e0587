import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import (
    SYNTHETIC_CLASS_NAMES,
    draw_scene,
    shapes_config,
    synthetic_builder,
    synthetic_dataset,
    tfds_dataset,
)

TINY = dict(image_size=(48, 64), num_train=6, num_validation=2, num_test=3, seed=7)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    synthetic_builder(directory, **TINY)
    return directory


def test_splits_and_record_layout(data_dir):
    builder = synthetic_builder(data_dir, **TINY)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
        "train": 6,
        "validation": 2,
        "test": 3,
    }
    assert builder.info.features["objects"]["label"].names == list(SYNTHETIC_CLASS_NAMES)
    dataset = synthetic_dataset("train", data_dir, **TINY)
    assert dataset.element_spec["image"].dtype == tf.uint8
    records = list(dataset.as_numpy_iterator())
    assert len(records) == 6
    assert sorted(r["image_id"] for r in records) == [f"train_{i:05d}".encode() for i in range(6)]
    for record in records:
        assert record["image"].shape == (48, 64, 3)
        boxes = record["boxes"]
        assert boxes.dtype == np.float32 and boxes.shape == (len(record["labels"]), 4)
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert np.all((record["labels"] >= 1) & (record["labels"] <= len(SYNTHETIC_CLASS_NAMES)))
        assert not record["difficult"].any() and not record["iscrowd"].any()


def test_generation_is_deterministic_and_seeded(data_dir, tmp_path):
    again = list(synthetic_dataset("test", tmp_path, **TINY).as_numpy_iterator())
    first = list(synthetic_dataset("test", data_dir, **TINY).as_numpy_iterator())
    assert [r["image_id"] for r in again] == [r["image_id"] for r in first]
    for a, b in zip(again, first):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    other_seed = draw_scene(np.random.default_rng((8, 2, 0)), 48, 64)[0]
    same_seed = draw_scene(np.random.default_rng((7, 2, 0)), 48, 64)[0]
    assert not np.array_equal(other_seed, same_seed)


def test_cached_in_the_data_dir(data_dir):
    config_dir = data_dir / "frcnn_shapes" / shapes_config(**TINY).name
    stamp = {path: path.stat().st_mtime_ns for path in config_dir.rglob("*.tfrecord*")}
    assert stamp
    synthetic_builder(data_dir, **TINY)
    assert stamp == {path: path.stat().st_mtime_ns for path in config_dir.rglob("*.tfrecord*")}


def test_catalog_reads_the_locally_prepared_builder(data_dir):
    name = f"frcnn_shapes/{shapes_config(**TINY).name}"
    via_catalog = list(tfds_dataset(name, "validation", data_dir=data_dir).as_numpy_iterator())
    direct = list(synthetic_dataset("validation", data_dir, **TINY).as_numpy_iterator())
    assert len(via_catalog) == 2
    for a, b in zip(via_catalog, direct):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_array_equal(a["boxes"], b["boxes"])


def test_scene_statistics_match_the_specification():
    # 200 scenes drawn directly: object counts, sizes, aspect ratios, classes and occlusion.
    counts, sizes, ratios, labels = [], [], [], []
    for index in range(200):
        image, boxes, scene_labels = draw_scene(np.random.default_rng((0, 0, index)), 128, 128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        counts.append(len(boxes))
        heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sizes.extend(np.sqrt(heights * widths))
        ratios.extend(heights / widths)
        labels.extend(scene_labels)
        for i in range(len(boxes)):
            # Objects drawn later hide at most half of an earlier object's box.
            covered = np.zeros((128, 128), bool)
            for later in boxes[i + 1 :].astype(int):
                covered[later[0] : later[2], later[1] : later[3]] = True
            y0, x0, y1, x1 = boxes[i].astype(int)
            assert covered[y0:y1, x0:x1].mean() <= 0.5
    assert min(counts) == 0 and max(counts) == 8
    assert 0 < counts.count(0) < 60
    assert min(sizes) >= 11 and max(sizes) <= 64
    assert np.percentile(sizes, 10) < 20 and np.percentile(sizes, 90) > 40
    assert 0.45 <= min(ratios) < 0.6 and 1.7 < max(ratios) <= 2.2
    assert set(labels) == set(range(len(SYNTHETIC_CLASS_NAMES)))


def test_class_colours_overlap_so_shape_matters():
    # Mean colour inside each rectangle (class 1) box: most are greenish, but not all.
    greenish, total = 0, 0
    for index in range(150):
        image, boxes, labels = draw_scene(np.random.default_rng((1, 0, index)), 96, 96)
        for (y0, x0, y1, x1), label in zip(boxes.astype(int), labels):
            if label == SYNTHETIC_CLASS_NAMES.index("rectangle"):
                red, green, blue = image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).mean(0)
                greenish += green > max(red, blue)
                total += 1
    assert total > 50
    assert 0.6 < greenish / total < 0.97


def test_config_names_and_validation():
    assert shapes_config().name == "default"
    assert shapes_config(image_size=64, num_train=8).name != "default"
    with pytest.raises(ValueError, match="at least 16"):
        shapes_config(image_size=8)
