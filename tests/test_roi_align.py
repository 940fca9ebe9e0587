import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.export.serving import _tflite_interpreter
from tf_frcnn.roi import MultiLevelRoIAlign, level_of

LEVELS = range(2, 6)
# A 500x620 resized image: its P2-P5 maps (sizes rounded up, as a padded input gives).
IMAGE = (500, 620)


def _maps(batch=2, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.constant(
            rng.normal(size=(batch, -(-IMAGE[0] // 2**k), -(-IMAGE[1] // 2**k), channels)),
            tf.float32,
        )
        for k in LEVELS
    ]


def _rois(batch=2, seed=0):
    """Random ROIs on every level, plus hand-placed ones: touching the bottom/right border,
    tiny, zero-area, partly outside the image and the whole image."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(-30.0, 650.0, size=(batch, 24, 2, 2))
    rois = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    rois[:, :8] = [
        [430.0, 560.0, 500.0, 620.0],  # bottom-right corner, P2
        [300.0, 200.0, 500.0, 450.0],  # bottom border, P4
        [10.0, 400.0, 240.0, 620.0],  # right border, P4
        [0.0, 0.0, 500.0, 620.0],  # the whole image, P5
        [100.3, 200.7, 102.1, 203.9],  # tiny, P2
        [497.5, 618.2, 499.9, 619.6],  # tiny in the bottom-right corner
        [50.0, 60.0, 50.0, 90.0],  # zero height
        [-90.0, -70.0, 20.0, 30.0],  # mostly outside: samples past one cell are zero
    ]
    return tf.constant(rois, tf.float32)


def _reference_level(box):
    """FPN Eq. 1 in float64, clamped to P2-P5."""
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    if area == 0.0:
        return 2
    return min(max(math.floor(4 + math.log2(math.sqrt(area) / 224)), 2), 5)


def _bilinear(feature_map, y, x):
    """detectron2's ROIAlign bilinear_interpolate: 0 more than one cell outside the map,
    clamped to the edge within it."""
    height, width = feature_map.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature_map.shape[-1])
    y = min(max(y, 0.0), height - 1)
    x = min(max(x, 0.0), width - 1)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature_map[y0, x0]
        + (1 - ly) * lx * feature_map[y0, x1]
        + ly * (1 - lx) * feature_map[y1, x0]
        + ly * lx * feature_map[y1, x1]
    )


def _reference_roi_align(maps, rois, pool_size=7, sampling_ratio=2):
    """RoIAlign (aligned=True) from its definition, one ROI and one sample at a time."""
    maps = [m.numpy().astype(np.float64) for m in maps]
    rois = rois.numpy().astype(np.float64)
    out = []
    for b in range(rois.shape[0]):
        for box in rois[b]:
            level = _reference_level(box)
            feature_map = maps[level - 2][b]
            y0, x0, y1, x1 = box / 2**level - 0.5
            bin_h, bin_w = (y1 - y0) / pool_size, (x1 - x0) / pool_size
            pooled = np.zeros((pool_size, pool_size, feature_map.shape[-1]))
            for i in range(pool_size):
                for j in range(pool_size):
                    for iy in range(sampling_ratio):
                        for ix in range(sampling_ratio):
                            y = y0 + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                            x = x0 + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                            pooled[i, j] += _bilinear(feature_map, y, x)
            out.append(pooled / sampling_ratio**2)
    return np.stack(out)


def test_level_of_hand_built_boxes():
    # Squares of side s at (10, 20): k = floor(4 + log2(s / 224)), clamped to [2, 5].
    sides = [28.0, 56.0, 111.0, 112.0, 223.9, 224.0, 448.0, 896.0]
    boxes = tf.constant([[10.0, 20.0, 10.0 + s, 20.0 + s] for s in sides])
    # 28: 1 -> 2; 56: 2; 111: 2.99 -> 2; 112: 3; 223.9: 3.99 -> 3; 224: 4; 448: 5; 896: 6 -> 5.
    np.testing.assert_array_equal(level_of(boxes).numpy(), [2, 2, 2, 3, 3, 4, 5, 5])
    # sqrt(w h): a 112x448 box is level 4 like a 224 square; zero-area and inverted boxes P2.
    odd = tf.constant(
        [[[0.0, 0.0, 112.0, 448.0], [5.0, 5.0, 5.0, 300.0]], [[9.0, 9.0, 0.0, 0.0], [0.0] * 4]]
    )
    assert level_of(odd).dtype == tf.int32
    np.testing.assert_array_equal(level_of(odd).numpy(), [[4, 2], [2, 2]])
    # Configurable: k = floor(3 + log2(s / 112)) in [3, 6]; 28 and 56 clamped up to 3.
    configured = level_of(boxes, canonical_size=112, canonical_level=3, min_level=3, max_level=6)
    np.testing.assert_array_equal(configured.numpy(), [3, 3, 3, 3, 3, 4, 5, 6])


@pytest.mark.parametrize("builtin", [False, True])
def test_roi_align_equals_the_numpy_reference(builtin):
    maps, rois = _maps(), _rois()
    levels = {_reference_level(box) for box in rois.numpy().reshape(-1, 4)}
    assert levels == {2, 3, 4, 5}
    pooled = MultiLevelRoIAlign(builtin=builtin)(maps, rois)
    assert pooled.shape == (48, 7, 7, 3) and pooled.dtype == tf.float32
    np.testing.assert_allclose(pooled.numpy(), _reference_roi_align(maps, rois), atol=1e-4)


def test_clamping_at_the_border_and_zero_beyond():
    # A map whose value is its column index + 1, at stride 4 (one level P2 of 150 columns).
    columns = tf.range(1.0, 151.0)[tf.newaxis, tf.newaxis, :, tf.newaxis]
    feature_map = tf.tile(columns, [1, 4, 1, 1])
    layer = MultiLevelRoIAlign(pool_size=2, sampling_ratio=2, min_level=2, max_level=2)
    for builtin in (False, True):
        layer.builtin = builtin
        inside = layer([feature_map], tf.constant([[[0.0, 0.0, 16.0, 600.0]]]))[0, 0, :, 0]
        # x [0, 600] -> [-0.5, 149.5]; samples at -0.5 + (i + 1/2) * 150 / 4: 18.25 and
        # 55.75 (values 19.25, 56.75, mean 38.0); 93.25 and 130.75 (mean 113.0).
        np.testing.assert_allclose(inside.numpy(), [38.0, 113.0], atol=1e-4)
        edge = layer([feature_map], tf.constant([[[0.0, 596.0, 16.0, 599.6]]]))[0, 0, :, 0]
        # x [148.5, 149.4]: samples 148.6125, 148.8375 (values 149.6125, 149.8375), then
        # 149.0625 and 149.2875, past the last column 149: clamped to it, value 150.
        np.testing.assert_allclose(edge.numpy(), [149.725, 150.0], atol=1e-4)
        beyond = layer([feature_map], tf.constant([[[0.0, 608.0, 16.0, 640.0]]]))[0, 0, :, 0]
        # x [151.5, 159.5]: more than one cell past the last column 149, zero.
        np.testing.assert_allclose(beyond.numpy(), [0.0, 0.0], atol=1e-6)


def test_builtin_twin_equals_crop_and_resize_and_its_gradient():
    maps, rois = _maps(seed=1, channels=5), _rois(seed=1)
    outputs, gradients = [], []
    for builtin in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(maps)
            pooled = MultiLevelRoIAlign(builtin=builtin)(maps, rois)
            loss = tf.reduce_sum(pooled * tf.range(5.0))
        outputs.append(pooled.numpy())
        gradients.append([g.numpy() for g in tape.gradient(loss, maps)])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)
    # Gradients sum many samples' weights (up to ~30 per cell here): compared relatively.
    for twin, reference in zip(gradients[1], gradients[0]):
        np.testing.assert_allclose(twin, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("builtin", [False, True])
def test_output_is_image_major_then_roi(builtin):
    # Constant maps of value 10 * level + image: each ROI's output names its image and level.
    shapes = [(-(-IMAGE[0] // 2**k), -(-IMAGE[1] // 2**k)) for k in LEVELS]
    maps = [
        tf.constant(np.stack([np.full(s + (2,), 10.0 * k + b) for b in range(2)]), tf.float32)
        for k, s in zip(LEVELS, shapes)
    ]
    sides = [[448.0, 56.0, 224.0], [112.0, 30.0, 500.0]]  # levels 5 2 4, 3 2 5
    rois = tf.constant([[[0.0, 0.0, s, s] for s in image] for image in sides])
    pooled = MultiLevelRoIAlign(builtin=builtin)(maps, rois).numpy()
    expected = [50.0, 20.0, 40.0, 31.0, 21.0, 51.0]
    np.testing.assert_allclose(
        pooled, np.broadcast_to(np.reshape(expected, (6, 1, 1, 1)), pooled.shape)
    )


def test_get_config_round_trip():
    layer = MultiLevelRoIAlign(
        pool_size=5, sampling_ratio=3, canonical_size=112, canonical_level=3, builtin=True
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is MultiLevelRoIAlign
    assert restored.get_config() == layer.get_config()
    assert (restored.pool_size, restored.sampling_ratio, restored.builtin) == (5, 3, True)
    maps, rois = _maps(), _rois()
    np.testing.assert_array_equal(restored(maps, rois).numpy(), layer(maps, rois).numpy())


def test_wrong_number_of_maps():
    with pytest.raises(ValueError, match="3 feature maps for levels 2..5"):
        MultiLevelRoIAlign()(_maps()[:3], _rois())


def test_half_precision_maps_are_pooled_in_float32():
    # Like ROIPooling, the layer keeps the float32 policy: Keras casts half maps to it.
    maps, rois = _maps(), _rois()
    half = [tf.cast(m, tf.float16) for m in maps]
    for builtin in (False, True):
        pooled = MultiLevelRoIAlign(builtin=builtin)(half, rois)
        assert pooled.dtype == tf.float32
        reference = MultiLevelRoIAlign(builtin=builtin)(maps, rois)
        np.testing.assert_allclose(pooled.numpy(), reference.numpy(), atol=1e-2)


def test_dynamic_batch_and_rois_and_xla():
    maps, rois = _maps(), _rois()
    spec = (
        [tf.TensorSpec([None, None, None, 3], tf.float32)] * 4,
        tf.TensorSpec([None, None, 4], tf.float32),
    )
    expected = MultiLevelRoIAlign()(maps, rois).numpy()
    for builtin in (False, True):
        layer = MultiLevelRoIAlign(builtin=builtin)
        dynamic = tf.function(layer.call, input_signature=spec)
        assert dynamic.get_concrete_function().structured_outputs.shape.as_list() == [None, 7, 7, 3]
        np.testing.assert_allclose(dynamic(maps, rois).numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(
            dynamic([m[:1] for m in maps], rois[:1, :5]), expected[:5], atol=1e-4
        )
    xla = tf.function(MultiLevelRoIAlign(builtin=True).call, jit_compile=True)
    np.testing.assert_allclose(xla(maps, rois).numpy(), expected, atol=1e-4)


def test_builtin_path_converts_to_tflite_builtins_and_matches(tmp_path):
    maps, rois = _maps(batch=1), _rois(batch=1)
    layer = MultiLevelRoIAlign(builtin=True)
    function = tf.function(
        lambda p2, p3, p4, p5, rois: layer([p2, p3, p4, p5], rois),
        input_signature=[tf.TensorSpec(m.shape, tf.float32) for m in maps]
        + [tf.TensorSpec(rois.shape, tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "roi_align.tflite"
    path.write_bytes(converter.convert())

    interpreter = _tflite_interpreter(path, num_threads=1)
    runner = interpreter.get_signature_runner()
    outputs = runner(
        **{name: t.numpy() for name, t in zip(["p2", "p3", "p4", "p5", "rois"], maps + [rois])}
    )
    (pooled,) = outputs.values()
    expected = MultiLevelRoIAlign()(maps, rois).numpy()
    assert pooled.shape == expected.shape == (24, 7, 7, 3)
    np.testing.assert_allclose(pooled, expected, atol=1e-4)
