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
    kwargs = {"image_shape": tf.constant([[200, 200]]), **kwargs}
    return postprocess_detections(logits, deltas, rois, tf.constant([num]), box_stds=STDS, **kwargs)


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


def _set_random_weights(head, rng):
    weights = {}
    for layer in [*head.fcs, head.cls_score, head.bbox_pred]:
        kernel, bias = (rng.normal(size=v.shape).astype(np.float32) * 0.3 for v in layer.weights)
        layer.set_weights([kernel, bias])
        weights[layer.name] = kernel, bias
    return weights


def test_head_values_are_flatten_fc_relu_then_siblings():
    rng = np.random.default_rng(0)
    head = FastRCNNHead(num_classes=2, fc_units=(6, 5), dropout=0.5)
    pooled = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    head(tf.constant(pooled))
    assert [fc.name for fc in head.fcs] == ["fc6", "fc7"]
    w = _set_random_weights(head, rng)
    hidden = pooled.reshape(4, 12)
    for name in ("fc6", "fc7"):
        hidden = np.maximum(hidden @ w[name][0] + w[name][1], 0.0)
    logits = hidden @ w["cls_score"][0] + w["cls_score"][1]
    deltas = (hidden @ w["bbox_pred"][0] + w["bbox_pred"][1]).reshape(4, 3, 4)
    out_logits, out_deltas = head(tf.constant(pooled))  # training=False: no dropout
    np.testing.assert_allclose(out_logits.numpy(), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_deltas.numpy(), deltas, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        head.region_features(tf.constant(pooled)).numpy(), hidden, rtol=1e-4, atol=1e-5
    )
    # Training: each fc output is dropped (0) or scaled by 1 / (1 - 0.5), about half of each.
    single = FastRCNNHead(num_classes=2, fc_units=(6,), dropout=0.5)
    single(tf.constant(pooled))
    fc6 = _set_random_weights(single, rng)["fc6"]
    hidden = np.repeat(np.maximum(pooled.reshape(4, 12) @ fc6[0] + fc6[1], 0.0), 100, axis=0)
    dropped = single.region_features(tf.constant(np.repeat(pooled, 100, axis=0)), training=True)
    dropped, active = dropped.numpy(), hidden > 0
    zero = dropped == 0
    np.testing.assert_allclose(dropped[~zero], 2 * hidden[~zero], rtol=1e-4)
    # About 1,000 active units: a share of 0.5 has sd 0.016; the bounds lie 6 sd out.
    assert 0.4 < zero[active].mean() < 0.6, zero[active].mean()
    trained_logits, _ = single(tf.constant(np.repeat(pooled, 100, axis=0)), training=True)
    assert not np.allclose(
        trained_logits.numpy(),
        single(tf.constant(np.repeat(pooled, 100, axis=0)))[0].numpy(),
        atol=1e-3,
    )


def test_head_initial_weights_config_and_fc_weight_shapes():
    head = FastRCNNHead(num_classes=99, fc_units=(256,))
    head(tf.zeros([1, 2, 2, 4]))
    # cls_score N(0, 0.01), bbox_pred N(0, 0.001) (the paper), zero biases; 25,600 and
    # 102,400 weights: sample sds within 3% (> 8 sd of the estimate).
    for layer, sd in ((head.cls_score, 0.01), (head.bbox_pred, 0.001)):
        kernel = layer.kernel.numpy()
        assert abs(kernel.std() / sd - 1.0) < 0.03, (layer.name, kernel.std())
        assert not np.any(layer.bias.numpy())
    assert head.cls_score.units == 100 and head.bbox_pred.units == 400
    assert (head.cls_score.name, head.bbox_pred.name) == ("cls_score", "bbox_pred")
    chosen = FastRCNNHead.for_backbone(build_backbone("tiny"), 3, dropout=0.3, name="detector")
    assert chosen.dropout == 0.3 and chosen.name == "detector"
    assert head.fcs[0].activation.__name__ == "relu"
    config = head.get_config()
    clone = FastRCNNHead.from_config(config)
    assert (clone.num_classes, clone.fc_units, clone.dropout) == (99, (256,), 0.0)
    clone = FastRCNNHead.from_config({**config, "dropout": 0.25, "fc_units": [8, 4]})
    assert clone.dropout == 0.25 and clone.dropouts[1].rate == 0.25 and clone.fc_units == (8, 4)
    clone = FastRCNNHead.from_config(FastRCNNHead(3, (8,), dropout=0.25).get_config())
    assert (clone.num_classes, clone.fc_units, clone.dropout) == (3, (8,), 0.25)
    # set_fc_weights builds an unbuilt head and reports whether the shapes fitted.
    fresh = FastRCNNHead(num_classes=1, fc_units=(3,))
    fitting = [[np.ones((2 * 2 * 5, 3), np.float32), np.zeros(3, np.float32)]]
    assert fresh.set_fc_weights(fitting, (None, 2, 2, 5)) is True
    np.testing.assert_array_equal(fresh.fcs[0].kernel.numpy(), 1.0)
    wrong = [[np.ones((2 * 2 * 5, 4), np.float32), np.zeros(4, np.float32)]]
    assert FastRCNNHead(1, fc_units=(3,)).set_fc_weights(wrong, (None, 2, 2, 5)) is False


def test_loss_on_a_batch_takes_the_true_class_deltas_and_lambda():
    # 2 images x 2 ROIs, 3 classes + background: labels 2 and 0 in image 0, 3 and -1 in 1.
    logits = tf.constant([[0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]] * 2)
    deltas = np.full((4, 4, 4), 9.0, np.float32)
    deltas[0, 2] = [0.5, 0.0, 0.0, -2.0]  # class 2 of ROI 0: smoothL1 0.125 + 1.5
    deltas[2, 3] = [0.0, 0.3, 0.0, 0.0]  # class 3 of ROI 2 against a target of 0.1: 0.02
    labels = tf.constant([[2, 0], [3, -1]])
    targets = np.zeros((2, 2, 4), np.float32)
    targets[1, 0] = [0.0, 0.1, 0.0, 0.0]
    losses = fast_rcnn_loss(logits, tf.constant(deltas), labels, tf.constant(targets), 2.0)
    e = np.exp(1.0)
    cls = -np.log(e / (e + 3)) - np.log(np.exp(2.0) / (np.exp(2.0) + 3)) - np.log(1 / (e + 3))
    np.testing.assert_allclose(losses["detector_class"].numpy(), cls / 3, rtol=1e-5)
    np.testing.assert_allclose(
        losses["detector_box"].numpy(), 2.0 * (0.125 + 1.5 + 0.02) / 3, rtol=1e-5
    )
    # One valid ROI: its own loss, divided by 1.
    one = fast_rcnn_loss(logits, tf.constant(deltas), tf.constant([[2, -1], [-1, -1]]), targets)
    np.testing.assert_allclose(one["detector_class"].numpy(), -np.log(e / (e + 3)), rtol=1e-5)
    np.testing.assert_allclose(one["detector_box"].numpy(), 0.125 + 1.5, rtol=1e-5)
    # Only ignored ROIs: zero losses, not NaN.
    losses = fast_rcnn_loss(logits, tf.constant(deltas), -tf.ones([2, 2], tf.int32), targets)
    assert losses["detector_class"].numpy() == 0.0 and losses["detector_box"].numpy() == 0.0


def test_detections_use_each_class_own_deltas_and_only_the_valid_rois():
    # ROI 0: class 2 (0.7), its class-2 deltas move it to [20, 20, 80, 100]; its class-1
    # deltas (score 0.2) would move it elsewhere. ROI 1 scores 0.9 but lies past num_rois.
    rois = tf.constant([[[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 150.0, 150.0]]])
    logits = tf.math.log(tf.constant([[0.1, 0.2, 0.7], [0.05, 0.9, 0.05]]))
    to_class2 = box_ops.encode(tf.constant([[20.0, 20.0, 80.0, 100.0]]), rois[0, :1], STDS)
    to_class1 = box_ops.encode(tf.constant([[0.0, 0.0, 30.0, 30.0]]), rois[0, :1], STDS)
    deltas = tf.stack([tf.concat([tf.zeros([1, 4]), to_class1, to_class2], 0), tf.zeros([3, 4])])
    out = postprocess_detections(
        logits, deltas, rois, tf.constant([1]), tf.constant([[200, 200]]), box_stds=STDS
    )
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_array_equal(out["detection_classes"][0, :3].numpy(), [2, 1, 0])
    np.testing.assert_allclose(out["detection_scores"][0, :3].numpy(), [0.7, 0.2, 0.0], rtol=1e-5)
    np.testing.assert_allclose(
        out["detection_boxes"][0, :2].numpy(), [[20, 20, 80, 100], [0, 0, 30, 30]], atol=1e-3
    )
    # score_threshold and max_detections are the caller's.
    out = postprocess_detections(
        logits,
        deltas,
        rois,
        tf.constant([2]),
        tf.constant([[200, 200]]),
        box_stds=STDS,
        score_threshold=0.5,
        max_detections=2,
    )
    np.testing.assert_array_equal(out["detection_classes"].numpy(), [[1, 2]])
    np.testing.assert_allclose(out["detection_scores"].numpy(), [[0.9, 0.7]], rtol=1e-5)
    assert out["detection_boxes"].shape == (1, 2, 4)


def test_detections_of_two_images_and_an_unknown_roi_count():
    # Image 1 is 300 px high and its class-1 box lies at y 250: clipped to each image's own
    # size, and per-class NMS keeps classes apart on the taller image too.
    rois = tf.constant(
        [
            [[10.0, 10.0, 60.0, 60.0], [10.0, 10.0, 60.0, 60.0]],
            [[240.0, 10.0, 310.0, 60.0], [240.0, 10.0, 310.0, 60.0]],
        ]
    )
    logits = tf.math.log(
        tf.constant([[0.1, 0.6, 0.3], [0.1, 0.3, 0.6], [0.2, 0.7, 0.1], [0.3, 0.1, 0.6]])
    )
    image_shape = tf.constant([[100, 100], [300, 100]])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3]),
            tf.TensorSpec([None, 3, 4]),
            tf.TensorSpec([None, None, 4]),
        ]
    )
    def run(logits, deltas, rois):
        return postprocess_detections(
            logits, deltas, rois, tf.constant([2, 2]), image_shape, box_stds=STDS
        )

    for out in (
        run(logits, tf.zeros([4, 3, 4]), rois),
        run.python_function(logits, tf.zeros([4, 3, 4]), rois),
    ):
        n = out["num_detections"].numpy()
        np.testing.assert_array_equal(n, [2, 2])
        np.testing.assert_array_equal(out["detection_classes"].numpy()[:, :2], [[1, 2], [1, 2]])
        np.testing.assert_allclose(
            out["detection_scores"].numpy()[:, :2], [[0.6, 0.6], [0.7, 0.6]], rtol=1e-5
        )
        np.testing.assert_allclose(
            out["detection_boxes"].numpy()[1, :2], [[240, 10, 300, 60]] * 2, atol=1e-3
        )
        np.testing.assert_allclose(
            out["detection_boxes"].numpy()[0, :2], [[10, 10, 60, 60]] * 2, atol=1e-3
        )


def test_classes_never_suppress_each_other_even_at_the_far_corner():
    # NMS shifts class c's boxes by c x (the image's longest side + 1): a class-1 box in the
    # bottom-right corner of a 100 x 100 image and a class-2 box at (0.5, 0.5) must not meet
    # (they would, at IoU 1, with a shift of 99).
    out = _detections(
        [[99.5, 99.5, 100, 100], [0.5, 0.5, 1, 1]],
        [[0.099, 0.9, 0.001], [0.099, 0.001, 0.9]],
        image_shape=tf.constant([[100, 100]]),
    )
    assert int(out["num_detections"][0]) == 2
    np.testing.assert_array_equal(out["detection_classes"][0, :2].numpy(), [1, 2])
