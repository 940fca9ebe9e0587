"""Training-time augmentation (tf_frcnn.data.augment) through the pipeline.

Small images (a few dozen pixels) so the whole file runs in seconds. The hypothesis property
is deterministic (derandomize, no database), in the style of tests/reliability.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_frcnn import ConfigError
from tf_frcnn.config import AugmentConfig, config_from_dict
from tf_frcnn.data import augment, build_pipeline, inputs

RECORD_SIGNATURE = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "boxes": tf.TensorSpec([None, 4], tf.float32),
    "labels": tf.TensorSpec([None], tf.int32),
    "image_id": tf.TensorSpec([], tf.string),
    "difficult": tf.TensorSpec([None], tf.bool),
    "iscrowd": tf.TensorSpec([None], tf.bool),
}


def record(image_id, image, boxes, labels=None):
    """A record (normalised boxes); labels 1..N unless given."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.arange(1, len(boxes) + 1) if labels is None else labels
    return {
        "image": np.asarray(image, np.uint8),
        "boxes": boxes,
        "labels": np.asarray(labels, np.int32),
        "image_id": image_id,
        "difficult": np.zeros(len(boxes), bool),
        "iscrowd": np.zeros(len(boxes), bool),
    }


def records_dataset(records):
    return tf.data.Dataset.from_generator(lambda: iter(records), output_signature=RECORD_SIGNATURE)


# The colour painted under each label's box, so a test can tell whose box lies where.
COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0)}


def fuzz(max_examples):
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def painted_record(draw, image_id):
    """A 32-64 px image with 1 to 4 integer-pixel boxes of at least 8 px, one per quadrant (no
    overlap), each painted in its label's colour on black; labels a permutation of 1..4."""
    height, width = draw(st.integers(32, 64)), draw(st.integers(32, 64))
    quadrants = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True))
    labels = draw(st.permutations([1, 2, 3, 4]))[: len(quadrants)]
    image = np.zeros((height, width, 3), np.uint8)
    boxes = []
    for quadrant, label in zip(quadrants, labels):
        top, left = (quadrant // 2) * (height // 2), (quadrant % 2) * (width // 2)
        ymin = top + draw(st.integers(0, height // 2 - 8))
        xmin = left + draw(st.integers(0, width // 2 - 8))
        ymax = draw(st.integers(ymin + 8, top + height // 2))
        xmax = draw(st.integers(xmin + 8, left + width // 2))
        image[ymin:ymax, xmin:xmax] = COLOURS[label]
        boxes.append([ymin / height, xmin / width, ymax / height, xmax / width])
    return record(image_id, image, boxes, labels=labels)


jitter_strategy = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "brightness": st.floats(0.0, 1.0),
            "contrast": st.floats(0.0, 1.0),
            "saturation": st.floats(0.0, 1.0),
            "hue": st.floats(0.0, 0.5),
        }
    ),
)
geometry_strategy = st.fixed_dictionaries(
    {
        "scales": st.one_of(
            st.none(),
            st.lists(st.sampled_from([16, 24, 32, 48]), min_size=1, max_size=3, unique=True),
        ),
        "crop_probability": st.sampled_from([0.0, 0.5, 1.0]),
        "min_crop": st.floats(0.5, 1.0),
        "min_visible": st.floats(0.0, 1.0),
    }
)


def run(data, augmentation, seed, **kwargs):
    options = dict(
        training=True,
        batch_size=len(data),
        min_size=32,
        max_size=64,
        max_boxes=5,
        seed=seed,
        shuffle_buffer=0,
        augment=augmentation,
    )
    options.update(kwargs)
    return list(build_pipeline(records_dataset(data), **options).as_numpy_iterator())


@fuzz(20)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=3).flatmap(
        lambda ids: st.tuples(*[painted_record(f"r{i}") for i in ids])
    ),
    geometry_strategy,
    jitter_strategy,
    st.integers(0, 2**31 - 1),
)
def test_augmented_boxes_stay_valid_inside_the_image_and_on_their_pixels(
    data, geometry, jitter, seed
):
    (batch,) = run(list(data), AugmentConfig(**geometry, **jitter), seed)
    images = batch["images"]
    assert images.min() >= 0.0 and images.max() <= 255.0
    for i, rec in enumerate(data):
        height, width = batch["image_shape"][i]
        assert not images[i, height:].any() and not images[i, :, width:].any()
        real = batch["labels"][i] > 0
        count = int(real.sum())
        assert real[:count].all(), "objects come first, padding after"
        assert not batch["boxes"][i, count:].any() and not batch["difficult"][i, count:].any()
        # Kept labels are a subsequence of the record's (masking keeps the order).
        kept = list(batch["labels"][i, :count])
        remaining = iter(rec["labels"].tolist())
        assert all(label in remaining for label in kept)
        for label, (ymin, xmin, ymax, xmax) in zip(kept, batch["boxes"][i, :count]):
            assert 0.0 <= ymin < ymax <= height and 0.0 <= xmin < xmax <= width
            if not jitter and ymax - ymin >= 5 and xmax - xmin >= 5:
                # The colours say which object a box covers. Scales here enlarge at most 3x,
                # so a 5 px box's centre pixel interpolates between pixels of its object.
                centre = images[i, int((ymin + ymax) / 2), int((xmin + xmax) / 2)]
                np.testing.assert_allclose(centre, COLOURS[label], atol=1.0)


def test_crop_objects_drops_mostly_hidden_boxes_and_clips_the_rest():
    # A 100x100 image seen through its top-left 50x50 quarter.
    objects = {
        "boxes": tf.constant(
            [
                [10, 10, 30, 30],  # inside: kept, rescaled to the window
                [40, 40, 80, 80],  # 100 of 1600 px visible: dropped
                [20, 30, 40, 70],  # half visible: kept, clipped
                [0, 49.5, 40, 50.5],  # half visible, 0.5 px wide: dropped
                [60, 60, 90, 90],
            ],  # outside: dropped
            tf.float32,
        )
        / 100.0,
        "labels": tf.constant([1, 2, 3, 4, 5]),
        "difficult": tf.constant([False, False, True, False, False]),
    }
    kept = augment.crop_objects(
        objects,
        tf.constant([100, 100]),
        tf.constant([0, 0]),
        tf.constant([50, 50]),
        min_visible=0.45,
    )
    np.testing.assert_allclose(
        kept["boxes"], [[0.2, 0.2, 0.6, 0.6], [0.4, 0.6, 0.8, 1.0]], atol=1e-6
    )
    np.testing.assert_array_equal(kept["labels"], [1, 3])
    np.testing.assert_array_equal(kept["difficult"], [False, True])
    stricter = augment.crop_objects(
        objects,
        tf.constant([100, 100]),
        tf.constant([0, 0]),
        tf.constant([50, 50]),
        min_visible=0.6,
    )
    np.testing.assert_array_equal(stricter["labels"], [1])
    # An offset window, (20, 40) + 40x60: the first box is outside, the second and fifth keep
    # half of their area, the 1 px wide fourth its half, the third 3/4.
    shifted = augment.crop_objects(
        objects,
        tf.constant([100, 100]),
        tf.constant([20, 40]),
        tf.constant([40, 60]),
        min_visible=0.4,
    )
    np.testing.assert_array_equal(shifted["labels"], [2, 3, 4])
    np.testing.assert_allclose(
        shifted["boxes"],
        [[0.5, 0, 1, 40 / 60], [0, 0, 0.5, 0.5], [0, 9.5 / 60, 0.5, 10.5 / 60]],
        atol=1e-6,
    )


def test_crop_window_keeps_min_crop_of_each_side_inside_the_image():
    shape = tf.constant([40, 90])
    sizes = []
    for i in range(60):
        offset, size = augment.crop_window(shape, tf.constant([i, 7]), min_crop=0.6)
        offset, size = offset.numpy(), size.numpy()
        assert np.all(size >= np.ceil(0.6 * np.array([40, 90]))) and np.all(offset >= 0)
        assert np.all(offset + size <= [40, 90])
        sizes.append(tuple(size))
    assert len(set(sizes)) > 10


def test_crop_to_nothing_is_a_background_example():
    image = np.zeros((40, 40, 3), np.uint8)
    data = [record(f"r{i}", image, [[0.0, 0.0, 0.1, 0.1]]) for i in range(16)]
    (batch,) = run(
        data,
        AugmentConfig(crop_probability=1.0, min_crop=0.5, min_visible=0.9),
        0,
        min_size=40,
        max_size=40,
    )
    emptied = ~batch["labels"].any(axis=1)
    assert emptied.any() and not batch["boxes"][emptied].any()


def test_multi_scale_draws_only_the_listed_sizes():
    data = [record(f"r{i}", np.zeros((30, 30, 3)), [[0.2, 0.2, 0.8, 0.8]]) for i in range(32)]
    (batch,) = run(data, AugmentConfig(scales=[16, 24, 40]), 1, max_size=100)
    assert set(batch["image_shape"][:, 0].tolist()) == {16, 24, 40}
    np.testing.assert_array_equal(batch["image_shape"][:, 0], batch["image_shape"][:, 1])
    np.testing.assert_allclose(batch["boxes"][:, 0, 2], 0.8 * batch["image_shape"][:, 0], rtol=1e-5)
    # max_size still caps the longer side.
    wide = [record(f"w{i}", np.zeros((20, 60, 3)), [[0, 0, 1, 1]]) for i in range(8)]
    (batch,) = run(wide, AugmentConfig(scales=[16, 40]), 1, max_size=90)
    assert set(map(tuple, batch["image_shape"].tolist())) == {(16, 48), (30, 90)}


def test_jitter_off_is_bit_identical_to_no_augmentation():
    rng = np.random.default_rng(0)
    data = [
        record(f"r{i}", rng.integers(0, 255, (20, 30, 3)), [[0.1, 0.2, 0.7, 0.9]]) for i in range(6)
    ]
    reference = run(data, None, 4)
    for off in (AugmentConfig(), AugmentConfig(scales=None, crop_probability=0.0)):
        for got, want in zip(run(data, off, 4), reference):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    # Jitter changes pixels only; with a crop and scales, the geometry is the same with or
    # without it (its draws have their own seeds).
    jittered = run(data, AugmentConfig(brightness=0.1, contrast=0.5, saturation=0.5, hue=0.1), 4)
    assert not np.array_equal(jittered[0]["images"], reference[0]["images"])
    np.testing.assert_array_equal(jittered[0]["boxes"], reference[0]["boxes"])
    geometry = dict(scales=[16, 24], crop_probability=0.5, min_crop=0.5, min_visible=0.3)
    for got, want in zip(
        run(
            data,
            AugmentConfig(**geometry, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
            4,
        ),
        run(data, AugmentConfig(**geometry), 4),
    ):
        for key in ("boxes", "labels", "image_shape"):
            np.testing.assert_array_equal(got[key], want[key])


def test_color_jitter_ranges():
    flat = tf.fill([4, 4, 3], 100.0)
    deltas = [
        float(augment.color_jitter(flat, tf.constant([i, 0]), brightness=0.1)[0, 0, 0]) - 100.0
        for i in range(40)
    ]
    assert max(map(abs, deltas)) <= 25.5 + 1e-3 and np.std(deltas) > 5
    # Contrast scales the distance to the mean by a factor in [1 - c, 1 + c].
    halves = tf.concat([tf.fill([2, 4, 3], 50.0), tf.fill([2, 4, 3], 150.0)], 0)
    for i in range(20):
        out = augment.color_jitter(halves, tf.constant([i, 0]), contrast=0.5).numpy()
        factor = (out[2, 0, 0] - out[0, 0, 0]) / 100.0
        assert 0.5 - 1e-4 <= factor <= 1.5 + 1e-4
    # Saturation and hue leave a grey image grey.
    grey = augment.color_jitter(flat, tf.constant([3, 0]), saturation=0.9, hue=0.5)
    np.testing.assert_allclose(grey, 100.0, atol=0.5)
    red = tf.constant([[[200.0, 20.0, 20.0]]])
    assert not np.allclose(augment.color_jitter(red, tf.constant([3, 0]), hue=0.3), red, atol=5)


def test_jitter_is_the_same_whether_the_image_is_enlarged_or_shrunk():
    # Applied before an enlarging resize and after a shrinking one, with the same draws.
    data = [record(f"r{i}", np.full((16, 16, 3), 100), [[0, 0, 1, 1]]) for i in range(4)]
    jitter = AugmentConfig(brightness=0.2, contrast=0.5)
    (enlarged,) = run(data, jitter, 2, min_size=32, max_size=32)
    (shrunk,) = run(data, jitter, 2, min_size=8, max_size=8)
    values = enlarged["images"][:, 0, 0, 0]
    assert np.std(values) > 1 and np.all(np.abs(values - 100) <= 0.2 * 255 + 1e-3)
    np.testing.assert_allclose(
        enlarged["images"], np.broadcast_to(values[:, None, None, None], (4, 32, 32, 3)), atol=1e-3
    )
    # The resize rounds to whole pixel values: the jittered image before it, not after.
    np.testing.assert_allclose(shrunk["images"][:, 0, 0, 0], values, atol=0.5 + 1e-3)


def test_same_seed_same_batches_different_seed_differs():
    rng = np.random.default_rng(1)
    data = [
        record(
            f"r{i}", rng.integers(0, 255, (24, 32, 3)), [[0.1, 0.1, 0.6, 0.4], [0.3, 0.5, 0.9, 0.9]]
        )
        for i in range(8)
    ]
    on = AugmentConfig(
        scales=[16, 24, 32],
        crop_probability=0.5,
        min_crop=0.5,
        min_visible=0.5,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.05,
    )

    def stream(seed):
        pipeline = build_pipeline(
            records_dataset(data),
            training=True,
            batch_size=4,
            min_size=24,
            max_size=48,
            max_boxes=2,
            seed=seed,
            shuffle_buffer=8,
            augment=on,
        )
        return list(pipeline.repeat(2).as_numpy_iterator())

    first, again, other = stream(5), stream(5), stream(6)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["boxes"], b["boxes"]) for a, b in zip(first, other))
    # Each epoch draws afresh.
    assert not np.array_equal(
        np.sort(first[0]["images"].ravel()), np.sort(first[2]["images"].ravel())
    )


@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory):
    values = {
        "data": {
            "source": "synthetic",
            "data_dir": str(tmp_path_factory.mktemp("tfds")),
            "image_size": 64,
            "num_train": 8,
            "num_eval": 8,
            "min_size": 64,
            "max_size": 64,
            "pad_to": [64, 64],
            "batch_size": 2,
            "max_boxes": 8,
            "augment": {
                "scales": [32, 48, 64],
                "crop_probability": 0.5,
                "brightness": 0.2,
                "contrast": 0.2,
                "saturation": 0.2,
                "hue": 0.05,
            },
        },
        "model": {"num_classes": 4},
        "train": {"seed": 3},
    }
    return config_from_dict(values)


def test_resumed_stream_sees_the_uninterrupted_batches(synthetic_config):
    # 8 images in batches of 2: steps 0-3 are epoch 1, 4-7 epoch 2.
    stream = list(inputs.training_batches(synthetic_config, "train", 2).take(7))
    resumed = list(inputs.training_batches(synthetic_config, "train", 2, start_step=5).take(2))
    for want, got in zip(stream[5:], resumed):
        for key in want:
            np.testing.assert_array_equal(want[key].numpy(), got[key].numpy())
    assert len({tuple(b["image_shape"].numpy().ravel()) for b in stream}) > 1, "multi-scale"


def test_eval_batches_are_never_augmented(synthetic_config):
    plain = config_from_dict(
        {
            "data": {
                **{
                    k: getattr(synthetic_config.data, k)
                    for k in (
                        "source",
                        "data_dir",
                        "image_size",
                        "num_train",
                        "num_eval",
                        "min_size",
                        "max_size",
                        "pad_to",
                        "batch_size",
                        "max_boxes",
                    )
                }
            },
            "model": {"num_classes": 4},
        }
    )
    for got, want in zip(
        inputs.batches(synthetic_config, "test", training=False),
        inputs.batches(plain, "test", training=False),
    ):
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


def test_pad_to_must_hold_the_largest_scale():
    with pytest.raises(ConfigError, match=r"data\.pad_to.*data\.augment\.scales.*\[600, 600\]"):
        config_from_dict(
            {"data": {"pad_to": [512, 512], "max_size": 1000, "augment": {"scales": [480, 600]}}}
        )
    # The longer-side cap bounds what a square image reaches.
    config = config_from_dict(
        {"data": {"pad_to": [512, 512], "max_size": 512, "augment": {"scales": [480, 600]}}}
    )
    assert config.data.augment.scales == [480, 600]
