import numpy as np
import tensorflow as tf

from tf_frcnn import matcher
from tf_frcnn.rpn import anchor_targets


def test_match_masks_padding_and_invalid_candidates():
    candidates = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 5.0, 10.0, 15.0], [0, 0, 10, 10]])
    valid = tf.constant([[True, True, False]])
    gt_boxes = tf.constant([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]]])
    gt_labels = tf.constant([[0, 3]])
    matches = matcher.match(candidates, valid, gt_boxes, gt_labels)
    np.testing.assert_allclose(
        matches["iou"][0].numpy(), [[-1, 1.0], [-1, 50 / 150], [-1, -1]], atol=1e-6
    )
    np.testing.assert_allclose(matches["max_iou"][0].numpy(), [1.0, 50 / 150, -1], atol=1e-6)
    np.testing.assert_array_equal(matches["labels"][0, :2].numpy(), [3, 3])
    np.testing.assert_array_equal(matches["boxes"][0, 1].numpy(), [0, 0, 10, 10])


def test_anchor_rules_force_the_best_anchor_and_roi_bands():
    candidates = tf.constant([[0.0, 5.0, 10.0, 15.0], [0.0, 8.0, 10.0, 18.0], [50, 50, 60, 60]])
    valid = tf.constant([[True, True, True]])
    matches = matcher.match(
        candidates, valid, tf.constant([[[0.0, 0.0, 10.0, 10.0]]]), tf.constant([[1]])
    )
    positive, negative = matcher.anchor_labels(matches, valid, 0.7, 0.3)
    # IoUs 1/3 (below 0.7, but the best for the ground truth), 1/9 and 0.
    np.testing.assert_array_equal(positive[0].numpy(), [True, False, False])
    np.testing.assert_array_equal(negative[0].numpy(), [False, True, True])
    foreground, background = matcher.roi_labels(matches, valid, 0.3, 0.1, 0.3)
    np.testing.assert_array_equal(foreground[0].numpy(), [True, False, False])
    np.testing.assert_array_equal(background[0].numpy(), [False, True, False])


def test_thresholds_at_exactly_0_7_0_3_and_0_5_pin_strict_and_inclusive_bounds():
    """Candidates at IoU exactly 0.7, 0.5 and 0.3 with the gt [0, 0, 10, 10] (and the gt
    itself, the forced best anchor). The paper's RPN: positive IoU > 0.7, negative IoU < 0.3,
    both strict; Fast R-CNN: foreground IoU >= 0.5, background in [0.1, 0.5)."""
    candidates = tf.constant(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 7.0], [0.0, 0.0, 10.0, 5.0], [0, 0, 10, 3.0]]
    )
    valid = tf.constant([[True] * 4])
    matches = matcher.match(
        candidates, valid, tf.constant([[[0.0, 0.0, 10.0, 10.0]]]), tf.constant([[1]])
    )
    np.testing.assert_array_equal(
        matches["max_iou"][0].numpy(), np.array([1.0, 0.7, 0.5, 0.3], np.float32)
    )
    positive, negative = matcher.anchor_labels(matches, valid, 0.7, 0.3)
    np.testing.assert_array_equal(positive[0].numpy(), [True, False, False, False])
    np.testing.assert_array_equal(negative[0].numpy(), [False, False, False, False])
    foreground, background = matcher.roi_labels(matches, valid, 0.5, 0.3, 0.7)
    np.testing.assert_array_equal(foreground[0].numpy(), [True, True, True, False])
    np.testing.assert_array_equal(background[0].numpy(), [False, False, False, True])
    foreground, background = matcher.roi_labels(matches, valid, 0.7, 0.1, 0.5)
    np.testing.assert_array_equal(foreground[0].numpy(), [True, True, False, False])
    np.testing.assert_array_equal(background[0].numpy(), [False, False, False, True])


def test_every_ground_truth_forces_its_own_best_anchor_in_each_image():
    """The forced-best-anchor rule is per ground truth and per image: in image 0 the second
    ground truth's best anchor has IoU 0.5 only (below 0.7, and below the first's 1.0), yet is
    positive; in image 1 a ground truth that no anchor overlaps (best IoU 0) forces nothing, and
    padding (label 0) neither. Kills a max over all ground truths or images (``axis=None``), one
    not kept per image (``keepdims=False``, a batch of 2) and ``>= 0`` for ``> 0``."""
    anchors = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 30.0], [50, 50, 60, 60]])
    gt_boxes = tf.constant(
        [
            [[0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 40.0], [0.0, 0.0, 0.0, 0.0]],
            [[50.0, 50.0, 60.0, 62.0], [100.0, 100.0, 110.0, 110.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    gt_labels = tf.constant([[1, 2, 0], [1, 2, 0]])
    valid = tf.constant([[True] * 3] * 2)
    matches = matcher.match(anchors, valid, gt_boxes, gt_labels)
    positive, negative = matcher.anchor_labels(matches, valid, 0.7, 0.3)
    np.testing.assert_array_equal(positive.numpy(), [[True, True, False], [False, False, True]])
    np.testing.assert_array_equal(negative.numpy(), [[False, False, True], [True, True, False]])


def test_dropping_trailing_padding_keeps_the_anchor_targets():
    # Image 0: objects in slots 0 and 3 (slot 1-2 emptied, as a crop leaves them); image 1:
    # one object; slots 4-9 are padding in both. Image 2 of the second batch has none.
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 150, (400, 2))
    anchors = tf.constant(np.concatenate([corners, corners + rng.uniform(8, 60, (400, 2))], 1))
    anchors = tf.cast(anchors, tf.float32)
    boxes = np.zeros((2, 10, 4), np.float32)
    boxes[0, 0], boxes[0, 3], boxes[1, 0] = [10, 10, 60, 50], [100, 90, 140, 160], [5, 5, 40, 40]
    labels = np.zeros((2, 10), np.int32)
    labels[0, 0], labels[0, 3], labels[1, 0] = 2, 1, 3
    shape = tf.constant([[200, 200], [200, 200]])
    trimmed_boxes, trimmed_labels = matcher.drop_trailing_padding(boxes, labels)
    assert trimmed_labels.shape == (2, 4)  # up to the batch's last object, slot 3
    seed = tf.constant([3, 4])
    full = anchor_targets(anchors, boxes, labels, shape, seed=seed)
    trimmed = anchor_targets(anchors, trimmed_boxes, trimmed_labels, shape, seed=seed)
    for a, b in zip(full, trimmed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A batch without objects keeps one (padding) slot: all its anchors are negatives.
    empty_boxes, empty_labels = matcher.drop_trailing_padding(boxes * 0, labels * 0)
    assert empty_labels.shape == (2, 1)
    labels_of_empty, _ = anchor_targets(anchors, empty_boxes, empty_labels, shape, seed=seed)
    assert np.all(labels_of_empty.numpy() <= 0) and np.any(labels_of_empty.numpy() == 0)
