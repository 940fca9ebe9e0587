import numpy as np
import tensorflow as tf

from tf_frcnn import AnchorGenerator, RPNHead
from tf_frcnn import boxes as box_ops
from tf_frcnn.rpn import anchor_targets, objectness_scores, rpn_loss

ANCHORS = tf.constant(
    [
        [0, 0, 10, 10],  # IoU 1.0 with gt0                -> positive
        [0, 0, 10, 12],  # IoU 0.833 with gt0              -> positive (> 0.7)
        [0, 0, 10, 14.5],  # IoU 0.69 with gt0               -> ignored
        [0, 5, 10, 25],  # IoU 0.2                          -> negative (< 0.3)
        [50, 50, 60, 60],  # IoU 0                            -> negative
        [30, 30, 40, 60],  # IoU 0.467 with gt1, its best     -> positive (forced)
        [30, 30, 40, 70],  # IoU 0.35 with gt1                -> ignored
        [-2, 0, 10, 10],  # IoU 0.833 but crosses the border -> ignored
    ],
    tf.float32,
)
GT_BOXES = tf.constant([[[0, 0, 10, 10], [30, 30, 40, 44], [0, 0, 0, 0]]], tf.float32)
GT_LABELS = tf.constant([[3, 1, 0]])
IMAGE_SHAPE = tf.constant([[100, 100]])


def test_head_outputs_for_800x800():
    feature_map = tf.zeros([1, 50, 50, 32])
    logits, deltas = RPNHead(channels=16)(feature_map)
    assert logits.shape == (1, 22500, 2)
    assert deltas.shape == (1, 22500, 4)
    assert AnchorGenerator()(feature_map).shape[0] == logits.shape[1]
    scores = objectness_scores(logits)
    np.testing.assert_allclose(scores.numpy(), 0.5, atol=1e-6)  # zero input, zero bias


def test_head_is_fully_convolutional_with_configurable_width():
    head = RPNHead(num_anchors=9, channels=256)
    head(tf.zeros([1, 4, 4, 8]))
    kinds = {type(layer).__name__ for layer in head._layers}
    assert kinds == {"Conv2D"}
    assert head.conv.filters == 256 and head.conv.kernel_size == (3, 3)
    assert head.objectness.filters == 18 and head.deltas.filters == 36
    assert head.objectness.kernel_size == (1, 1)
    assert RPNHead(channels=512).channels == 512  # the paper's default width


def test_labelling_rules_on_hand_built_case():
    labels, targets = anchor_targets(ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE)
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, -1, 0, 0, 1, -1, -1])
    expected = box_ops.encode(GT_BOXES[0, :1], ANCHORS[1:2])
    np.testing.assert_allclose(targets.numpy()[0, 1], expected.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(targets.numpy()[0, 3], 0.0)  # negatives carry no target


def test_cross_boundary_anchors_count_when_not_ignored():
    labels, _ = anchor_targets(
        ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE, ignore_cross_boundary=False
    )
    assert labels.numpy()[0, 7] == 1


def test_image_without_objects_is_all_negative():
    labels, targets = anchor_targets(
        ANCHORS, tf.zeros([1, 3, 4]), tf.zeros([1, 3], tf.int32), IMAGE_SHAPE
    )
    np.testing.assert_array_equal(labels.numpy()[0], [0, 0, 0, 0, 0, 0, 0, -1])
    assert not np.any(targets.numpy())


def _anchors_800():
    return AnchorGenerator()(tf.zeros([1, 50, 50, 1]))


def test_sampler_256_one_to_one_when_positives_abound():
    anchors = _anchors_800()
    grid = np.array(
        [[y, x, y + 128, x + 128] for y in range(100, 600, 60) for x in range(100, 600, 60)],
        np.float32,
    )
    labels, _ = anchor_targets(
        anchors, grid[None], tf.ones([1, len(grid)], tf.int32), tf.constant([[800, 800]]), seed=3
    )
    labels = labels.numpy()[0]
    assert (labels == 1).sum() == 128
    assert (labels == 0).sum() == 128


def test_sampler_pads_with_negatives_when_positives_are_few():
    anchors = _anchors_800()
    labels, _ = anchor_targets(
        anchors,
        tf.constant([[[300.0, 300.0, 428.0, 428.0]]]),
        tf.constant([[1]]),
        tf.constant([[800, 800]]),
    )
    labels = labels.numpy()[0]
    positives = (labels == 1).sum()
    assert 1 <= positives < 128
    assert (labels == 0).sum() == 256 - positives


def test_loss_on_hand_computed_case():
    logits = tf.constant([[[0.0, 2.0], [1.0, 0.0], [5.0, 5.0], [0.0, 0.0]]])
    deltas = tf.constant([[[0.5, 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [2.0, 0, 0, 0]]])
    labels = tf.constant([[1, 0, -1, 1]])
    targets = tf.zeros([1, 4, 4])
    losses = rpn_loss(logits, deltas, labels, targets, num_locations=2, lambda_reg=10.0)
    # Lcls over the 3 sampled anchors: -log softmax.
    cls = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0)) + np.log(2.0)) / 3
    # Lreg over positives only: smoothL1(0.5) = 0.125, smoothL1(2) = 1.5; / Nreg = 2; * 10.
    reg = 10.0 * (0.125 + 1.5) / 2
    np.testing.assert_allclose(losses["rpn_objectness"].numpy(), cls, rtol=1e-5)
    np.testing.assert_allclose(losses["rpn_box"].numpy(), reg, rtol=1e-5)


def test_default_lambda_is_ten():
    import inspect

    assert inspect.signature(rpn_loss).parameters["lambda_reg"].default == 10.0


def test_batched_targets_use_each_images_own_size():
    labels, _ = anchor_targets(
        ANCHORS,
        tf.concat([GT_BOXES, GT_BOXES], 0),
        tf.concat([GT_LABELS, GT_LABELS], 0),
        tf.constant([[100, 100], [50, 50]]),
    )
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, -1, 0, 0, 1, -1, -1])
    # In the 50x50 image the anchor reaching (60, 60) crosses the border.
    assert labels.numpy()[1, 4] == -1
