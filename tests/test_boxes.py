import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import boxes as box_ops


def test_iou_hand_computed():
    a = tf.constant([[0.0, 0.0, 10.0, 10.0]])
    b = tf.constant([[0.0, 5.0, 10.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_allclose(box_ops.iou(a, b).numpy(), [[50 / 150, 0.0, 1.0]], atol=1e-6)


def test_iou_batched_and_padding_is_zero():
    a = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    b = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(box_ops.iou(a, b).numpy(), [[[1.0, 0.0]]], atol=1e-6)


def test_iou_within_unit_interval_random():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(2, 50, 2, 2)).astype(np.float32)
    lo, hi = corners.min(axis=2), corners.max(axis=2)
    boxes = np.concatenate([lo, hi], axis=-1)
    overlaps = box_ops.iou(boxes[0], boxes[1]).numpy()
    assert overlaps.min() >= 0.0 and overlaps.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(np.diag(box_ops.iou(boxes[0], boxes[0]).numpy()), 1.0, atol=1e-5)


def test_encode_matches_paper_parameterisation():
    # (ty, tx, th, tw) = ((y - ya) / ha, (x - xa) / wa, log(h / ha), log(w / wa))
    anchor = tf.constant([[10.0, 10.0, 50.0, 90.0]])  # centre (30, 50), h 40, w 80
    box = tf.constant([[12.0, 8.0, 60.0, 100.0]])  # centre (36, 54), h 48, w 92
    deltas = box_ops.encode(box, anchor).numpy()
    np.testing.assert_allclose(
        deltas, [[6 / 40, 4 / 80, np.log(48 / 40), np.log(92 / 80)]], rtol=1e-5
    )
    np.testing.assert_allclose(deltas, [[0.15, 0.05, 0.1823216, 0.1397619]], rtol=1e-5)


@pytest.mark.parametrize("stds", [None, (0.1, 0.1, 0.2, 0.2)])
def test_decode_inverts_encode(stds):
    rng = np.random.default_rng(1)
    anchors = np.concatenate([rng.uniform(0, 50, (100, 2)), rng.uniform(60, 200, (100, 2))], -1)
    boxes = np.concatenate([rng.uniform(0, 50, (100, 2)), rng.uniform(60, 200, (100, 2))], -1)
    anchors, boxes = anchors.astype(np.float32), boxes.astype(np.float32)
    restored = box_ops.decode(box_ops.encode(boxes, anchors, stds), anchors, stds)
    np.testing.assert_allclose(restored.numpy(), boxes, atol=1e-3)


def test_decode_caps_huge_scales():
    anchors = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    boxes = box_ops.decode(tf.constant([[0.0, 0.0, 100.0, 100.0]]), anchors).numpy()
    assert np.all(np.isfinite(boxes))
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 1000.0, rtol=1e-4)


def test_clip_per_image_size():
    boxes = tf.constant([[[-5.0, -5.0, 50.0, 50.0]], [[-5.0, -5.0, 50.0, 50.0]]])
    clipped = box_ops.clip(boxes, tf.constant([[40, 30], [100, 100]])).numpy()
    np.testing.assert_allclose(clipped[:, 0], [[0, 0, 40, 30], [0, 0, 50, 50]])


def test_normalized_round_trip_and_area():
    boxes = tf.constant([[10.0, 20.0, 30.0, 60.0]])
    norm = box_ops.to_normalized(boxes, tf.constant([100, 200]))
    np.testing.assert_allclose(norm.numpy(), [[0.1, 0.1, 0.3, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(
        box_ops.to_absolute(norm, tf.constant([100, 200])).numpy(), boxes.numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(box_ops.area(boxes).numpy(), [800.0])
    np.testing.assert_allclose(box_ops.area(tf.constant([[5.0, 5.0, 1.0, 1.0]])).numpy(), [0.0])


def test_smooth_l1():
    x = tf.constant([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(box_ops.smooth_l1(x).numpy(), [1.5, 0.125, 0.0, 0.125, 2.5])


def test_batched_padded_nms_batch_of_one_equals_its_map_fn_branch_on_border_boxes():
    """The static batch-1 branch (what TFLite and XLA exports run) and the map_fn branch
    (eval, SavedModel batches) on the same 300 boxes, half clipped to the bottom/right border
    of a 128 x 128 image, many tied at the border: same indices, same counts."""
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 120, (300, 2))
    size = rng.uniform(4, 80, (300, 2))
    boxes = np.concatenate([corner, np.minimum(corner + size, 128.0)], -1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    one, count = box_ops.batched_padded_nms(boxes[None], scores[None], 50, 0.5, 0.05)
    two, counts = box_ops.batched_padded_nms(
        np.stack([boxes, boxes]), np.stack([scores, scores]), 50, 0.5, 0.05
    )
    assert int(count[0]) == int(counts[0]) == int(counts[1]) > 10
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[0], two[1])
    expected = tf.image.non_max_suppression(boxes, scores, 50, 0.5, 0.05).numpy()
    np.testing.assert_array_equal(one[0, : len(expected)], expected)


def test_area_is_zero_for_a_box_inverted_along_one_axis_and_exact_below_a_pixel():
    boxes = tf.constant([[5.0, 0.0, 1.0, 10.0], [0.0, 5.0, 10.0, 1.0], [0.0, 0.0, 0.5, 0.25]])
    np.testing.assert_allclose(box_ops.area(boxes).numpy(), [0.0, 0.0, 0.125])


def test_smooth_l1_with_beta_2():
    x = tf.constant([0.5, -1.0, 3.0])
    # 0.5 x^2 / beta inside |x| < beta, |x| - beta / 2 outside.
    np.testing.assert_allclose(box_ops.smooth_l1(x, beta=2.0).numpy(), [0.0625, 0.25, 2.0])


def test_decode_of_a_batch_is_the_decode_of_each_image():
    rng = np.random.default_rng(1)
    anchors = tf.constant([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 40.0, 68.0], [30, 30, 50, 90]])
    deltas = tf.constant(rng.normal(scale=0.3, size=(2, 3, 4)), tf.float32)
    batch = box_ops.decode(deltas, anchors).numpy()
    assert batch.shape == (2, 3, 4)
    for image in range(2):
        np.testing.assert_allclose(batch[image], box_ops.decode(deltas[image], anchors), atol=1e-5)


# Two images of 6 boxes for 10 output slots: fewer boxes than slots, fewer survivors than
# boxes; image 1's best box is not its box 0, and each image has one box scoring exactly the
# threshold 0.1 (dropped: scores must be above it) and one below.
NMS_BOXES = np.array(
    [
        [0.0, 0.0, 10.0, 10.0],
        [1.0, 1.0, 11.0, 11.0],  # IoU 0.68 with box 0
        [20.0, 20.0, 30.0, 30.0],
        [40.0, 40.0, 50.0, 50.0],
        [60.0, 60.0, 70.0, 70.0],
        [80.0, 80.0, 90.0, 90.0],
    ],
    np.float32,
)
NMS_SCORES = np.array(
    [[0.9, 0.8, 0.1, 0.05, 0.7, 0.3], [0.2, 0.95, 0.6, 0.1, 0.01, 0.5]], np.float32
)


def _expected_nms(scores):
    indices = tf.image.non_max_suppression(NMS_BOXES, scores, 10, 0.5, 0.1).numpy()
    return np.pad(indices, [0, 10 - len(indices)]), len(indices)


@pytest.mark.parametrize("batch", [1, 2])
def test_batched_padded_nms_with_fewer_boxes_and_survivors_than_slots(batch):
    boxes = np.stack([NMS_BOXES] * batch)
    indices, counts = box_ops.batched_padded_nms(boxes, NMS_SCORES[:batch], 10, 0.5, 0.1)
    assert indices.shape == (batch, 10)
    for image in range(batch):
        expected, count = _expected_nms(NMS_SCORES[image])
        assert int(counts[image]) == count == 3
        np.testing.assert_array_equal(indices[image], expected)  # zeros past the count


def test_batched_padded_nms_traces_to_static_shapes_and_a_batch_of_one_to_no_loop():
    """Graphs trace once on static shapes; a static batch of one (TFLite, XLA exports) has no
    while loop. With a dynamic box count, the count comes from the tensor."""

    def traced(batch, num_boxes):
        function = tf.function(lambda b, s: box_ops.batched_padded_nms(b, s, 10, 0.5, 0.1))
        return function.get_concrete_function(
            tf.TensorSpec([batch, num_boxes, 4]), tf.TensorSpec([batch, num_boxes])
        )

    for batch in (1, 2):
        indices, counts = traced(batch, 6).structured_outputs
        assert indices.shape == (batch, 10) and counts.shape == (batch,)
    ops = {op.type for op in traced(1, 6).graph.get_operations()}
    assert "While" not in ops and "StatelessWhile" not in ops, ops
    dynamic = traced(1, None)
    indices, counts = dynamic(NMS_BOXES[None], NMS_SCORES[:1])
    expected, count = _expected_nms(NMS_SCORES[0])
    assert int(counts[0]) == count
    np.testing.assert_array_equal(indices[0], expected)


def test_batched_padded_nms_under_xla_with_fewer_boxes_than_slots():
    """XLA's kernel takes no output longer than the boxes: the function asks for at most the
    box count and pads."""
    compiled = tf.function(
        lambda b, s: box_ops.batched_padded_nms(b, s, 10, 0.5, 0.1), jit_compile=True
    )
    indices, counts = compiled(tf.constant(NMS_BOXES[None]), tf.constant(NMS_SCORES[:1]))
    expected, count = _expected_nms(NMS_SCORES[0])
    assert int(counts[0]) == count
    np.testing.assert_array_equal(indices[0], expected)
