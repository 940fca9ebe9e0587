import dataclasses

import numpy as np
import tensorflow as tf

from tf_frcnn import FastRCNNHead
from tf_frcnn import boxes as box_ops
from tf_frcnn.backbones import build_backbone, head_defaults
from tf_frcnn.config import DetectionConfig
from tf_frcnn.head import fast_rcnn_loss, postprocess_detections

STDS = (0.1, 0.1, 0.2, 0.2)


def test_head_shapes_and_class_specific_deltas():
    head = FastRCNNHead(num_classes=20, fc_units=(64, 32))
    logits, deltas = head(tf.zeros([6, 7, 7, 16]))
    assert logits.shape == (6, 21) and deltas.shape == (6, 21, 4)
    assert [fc.units for fc in head.fcs] == [64, 32]


def test_head_for_a_backbone_takes_its_defaults_and_its_fc_weights_when_they_fit():
    tiny = build_backbone("tiny")
    head = FastRCNNHead.for_backbone(tiny, num_classes=3)
    assert (head.fc_units, head.dropout) == ((1024, 1024), 0.0) == head_defaults("tiny")
    rng = np.random.default_rng(0)
    fc_weights = [
        [rng.normal(size=shape).astype(np.float32), np.full(shape[1], 0.5, np.float32)]
        for shape in ((7 * 7 * 128, 8), (8, 4))
    ]
    with_fc = dataclasses.replace(tiny, fc_weights=fc_weights)
    head = FastRCNNHead.for_backbone(with_fc, num_classes=3, fc_units=(8, 4))
    np.testing.assert_array_equal(head.fcs[0].kernel.numpy(), fc_weights[0][0])
    np.testing.assert_array_equal(head.fcs[1].bias.numpy(), fc_weights[1][1])
    assert head(tf.zeros([2, 7, 7, 128]))[0].shape == (2, 4)
    # Other widths or another pool size: the weights do not fit and the head stays random.
    for fc_units, pool_size in (((8, 5), 7), ((8, 4), 6)):
        head = FastRCNNHead.for_backbone(with_fc, 3, fc_units=fc_units, pool_size=pool_size)
        assert not np.any(head.fcs[1].bias.numpy())


def test_loss_hand_computed():
    logits = tf.constant([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    deltas = tf.zeros([3, 3, 4]) + tf.constant([[[9.0] * 4, [0.5, 0, 0, 0], [9.0] * 4]] * 3)
    labels = tf.constant([0, 1, -1])
    targets = tf.zeros([3, 4])
    losses = fast_rcnn_loss(logits, deltas, labels, targets)
    cls0 = -np.log(np.exp(2) / (np.exp(2) + 2))
    cls1 = -np.log(np.exp(1) / (np.exp(1) + 2))
    np.testing.assert_allclose(losses["detector_class"].numpy(), (cls0 + cls1) / 2, rtol=1e-5)
    # Only the foreground ROI's true-class deltas count: smoothL1(0.5) = 0.125, / 2 valid ROIs.
    np.testing.assert_allclose(losses["detector_box"].numpy(), 0.125 / 2, rtol=1e-5)


def _detections(rois, class_probs, deltas=None, **kwargs):
    rois = tf.constant([rois], tf.float32)
    num = rois.shape[1]
    logits = tf.math.log(tf.constant(class_probs, tf.float32))
    deltas = tf.zeros([num, logits.shape[1], 4]) if deltas is None else deltas
    return postprocess_detections(
        logits, deltas, rois, tf.constant([num]), tf.constant([[200, 200]]), box_stds=STDS, **kwargs
    )


def test_per_class_nms_keeps_overlaps_of_different_classes():
    rois = [[10, 10, 60, 60], [12, 12, 62, 62], [100, 100, 150, 150]]
    probs = [[0.02, 0.9, 0.08], [0.02, 0.08, 0.9], [0.02, 0.9, 0.08]]
    out = _detections(rois, probs, max_detections=10)
    n = int(out["num_detections"][0])
    pairs = sorted(
        zip(
            out["detection_classes"][0, :n].numpy().tolist(),
            [round(float(v), 2) for v in out["detection_scores"][0, :n].numpy()],
        )
    )
    # Boxes 0 and 1 overlap (IoU 0.85) but have different top classes: both kept.
    # The 0.08 scores of class 1 on box 1 and of class 2 on box 0 overlap a
    # 0.9 of their own class and are suppressed; class 2's 0.08 on box 2 stays.
    assert pairs == [(1, 0.9), (1, 0.9), (2, 0.08), (2, 0.9)]
    assert out["detection_boxes"].shape == (1, 10, 4)
    assert out["detection_classes"].dtype == tf.int32


def test_same_class_overlap_suppressed_and_score_threshold():
    rois = [[10, 10, 60, 60], [12, 12, 62, 62], [100, 100, 150, 150]]
    probs = [[0.1, 0.9], [0.2, 0.8], [0.97, 0.03]]
    out = _detections(rois, probs)
    assert int(out["num_detections"][0]) == 1  # 0.8 suppressed, 0.03 < 0.05
    np.testing.assert_allclose(out["detection_scores"][0, 0].numpy(), 0.9, rtol=1e-5)
    np.testing.assert_allclose(out["detection_boxes"][0, 0].numpy(), [10, 10, 60, 60], atol=1e-3)
    assert out["detection_boxes"].shape == (1, 100, 4)  # paper: at most 100 per image
    assert not np.any(out["detection_boxes"][0, 1:].numpy())


def test_detection_nms_threshold_is_the_papers_0_3():
    """A same-class pair at IoU 0.4 (between 0.3 and 0.5): the default nms_iou 0.3 suppresses
    the weaker one; 0.5 (the other common choice) keeps both. The config takes the default."""
    # [0, 0, 100, 100] and [0, 40, 100, 140]: intersection 60 x 100, union 14000: IoU 0.4286.
    rois = [[0, 0, 100, 100], [0, 40, 100, 140]]
    probs = [[0.1, 0.9], [0.2, 0.8]]
    assert int(_detections(rois, probs)["num_detections"][0]) == 1
    assert int(_detections(rois, probs, nms_iou=0.5)["num_detections"][0]) == 2
    assert DetectionConfig().nms_iou == 0.3


def test_deltas_are_applied_with_stds_and_clipped():
    target = tf.constant([[20.0, 20.0, 80.0, 100.0]])
    roi = tf.constant([[10.0, 10.0, 60.0, 60.0]])
    encoded = box_ops.encode(target, roi, STDS)
    deltas = tf.concat([tf.zeros([1, 1, 4]), encoded[:, None, :]], axis=1)
    out = _detections([[10, 10, 60, 60]], [[0.1, 0.9]], deltas=deltas)
    np.testing.assert_allclose(out["detection_boxes"][0, 0].numpy(), target[0].numpy(), atol=1e-3)
    far = box_ops.encode(tf.constant([[150.0, 150.0, 400.0, 400.0]]), roi, STDS)
    deltas = tf.concat([tf.zeros([1, 1, 4]), far[:, None, :]], axis=1)
    out = _detections([[10, 10, 60, 60]], [[0.1, 0.9]], deltas=deltas)
    np.testing.assert_allclose(
        out["detection_boxes"][0, 0].numpy(), [150, 150, 200, 200], atol=1e-3
    )


def test_batched_postprocess():
    rois = tf.constant([[[10, 10, 60, 60]], [[20, 20, 40, 40]]], tf.float32)
    logits = tf.math.log(tf.constant([[0.1, 0.9], [0.5, 0.5]]))
    out = postprocess_detections(
        logits,
        tf.zeros([2, 2, 4]),
        rois,
        tf.constant([1, 0]),
        tf.constant([[100, 100], [100, 100]]),
        box_stds=STDS,
    )
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1, 0])
