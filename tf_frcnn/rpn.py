"""The Region Proposal Network: its head, its training targets and its loss
(Faster R-CNN, Sec. 3.1)."""

import keras
import tensorflow as tf

from tf_frcnn import boxes as box_ops
from tf_frcnn import matcher, sampling


@keras.saving.register_keras_serializable(package="tf_frcnn")
class RPNHead(keras.layers.Layer):
    """3x3 conv (``channels``, "same", ReLU), then sibling 1x1 convs: 2k
    objectness logits (softmax over object / not object) and 4k box deltas.

    Call on a feature map float [batch, h, w, C]; returns
    ``(objectness_logits, box_deltas)`` float32 [batch, h*w*k, 2] and
    [batch, h*w*k, 4], ordered (row, column, anchor) like ``AnchorGenerator``;
    on a list of maps (a feature pyramid) the same head runs on every level
    and the outputs are concatenated, first level first (FPN Sec. 4.1);
    float32 also when the layer computes in float16 / bfloat16 (a mixed dtype
    policy, ``tf_frcnn.precision``).
    Channel 1 of the logits is "object". Deltas are (ty, tx, th, tw).
    Weights start from N(0, 0.01) as in the paper.
    """

    def __init__(self, num_anchors=9, channels=512, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(
            channels, 3, padding="same", activation="relu", kernel_initializer=init, name="rpn_conv"
        )
        self.objectness = keras.layers.Conv2D(
            2 * num_anchors, 1, kernel_initializer=init, name="rpn_objectness"
        )
        self.deltas = keras.layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=init, name="rpn_deltas"
        )

    def build(self, input_shape):
        if isinstance(input_shape[0], (list, tuple)):  # the levels of a pyramid share the head
            input_shape = input_shape[0]
        self.conv.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.channels,)
        self.objectness.build(hidden)
        self.deltas.build(hidden)

    def call(self, feature_map):
        if isinstance(feature_map, (list, tuple)):
            outputs = [self.call(level) for level in feature_map]
            return tuple(tf.concat(parts, axis=1) for parts in zip(*outputs))
        hidden = self.conv(feature_map)
        batch = tf.shape(feature_map)[0]
        # float32 out whatever the policy: the box arithmetic after the head stays float32.
        logits = tf.reshape(tf.cast(self.objectness(hidden), tf.float32), [batch, -1, 2])
        deltas = tf.reshape(tf.cast(self.deltas(hidden), tf.float32), [batch, -1, 4])
        return logits, deltas

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "channels": self.channels}


def objectness_scores(objectness_logits):
    """float32 [batch, A]: softmax probability of "object" per anchor."""
    return tf.nn.softmax(objectness_logits, axis=-1)[..., 1]


def anchor_targets(
    anchors,
    gt_boxes,
    gt_labels,
    image_shape,
    *,
    positive_iou=matcher.POSITIVE_IOU,
    negative_iou=matcher.NEGATIVE_IOU,
    batch_size=256,
    positive_fraction=0.5,
    ignore_cross_boundary=True,
    seed=None,
):
    """Label and sample anchors for the RPN loss (Sec. 3.1.2 and 3.1.3).

    IoU > ``positive_iou`` with any ground truth -> positive; the anchor(s) with
    the highest IoU for each ground truth -> positive too; IoU <
    ``negative_iou`` with all -> negative; the rest ignored. Anchors crossing the
    image boundary are ignored when ``ignore_cross_boundary``. Then
    ``batch_size`` anchors are sampled per image, at most
    ``positive_fraction`` of them positive, the rest filled with negatives.

    Args:
      anchors: float32 [A, 4] absolute [ymin, xmin, ymax, xmax], or a pyramid's list of
        per-level anchors, labelled together by IoU (no level rule, FPN Sec. 4.1).
      gt_boxes: float32 [batch, M, 4] absolute [ymin, xmin, ymax, xmax].
      gt_labels: int32 [batch, M], 0 marks padding rows.
      image_shape: int32 [batch, 2] valid (height, width) of each image.
      seed: None or int32 [2] stateless seed (see ``tf_frcnn.sampling``).

    Returns:
      labels: int32 [batch, A], 1 sampled positive, 0 sampled negative, -1 not
        in the mini-batch.
      targets: float32 [batch, A, 4] deltas (ty, tx, th, tw) of each anchor's
        best ground truth (meaningful where labels == 1).
    """
    if isinstance(anchors, (list, tuple)):
        anchors = tf.concat(anchors, axis=0)
    hw = tf.cast(image_shape, tf.float32)[:, tf.newaxis, :]  # [B, 1, 2]
    inside = tf.reduce_all(anchors[tf.newaxis, :, :2] >= 0.0, axis=-1) & tf.reduce_all(
        anchors[tf.newaxis, :, 2:] <= hw, axis=-1
    )  # [B, A]
    if not ignore_cross_boundary:
        inside = tf.ones_like(inside)
    matches = matcher.match(anchors, inside, gt_boxes, gt_labels)
    positive, negative = matcher.anchor_labels(matches, inside, positive_iou, negative_iou)

    num_positive = int(batch_size * positive_fraction)
    positive = sampling.subsample(
        positive, num_positive, sampling.derive(seed, 0), limit=num_positive
    )
    negative = sampling.subsample(
        negative, batch_size - sampling.count(positive), sampling.derive(seed, 1), limit=batch_size
    )

    labels = tf.where(positive, 1, tf.where(negative, 0, -1))
    targets = box_ops.encode(matches["boxes"], anchors[tf.newaxis])
    targets = tf.where(positive[..., tf.newaxis], targets, 0.0)
    return labels, targets


def rpn_loss(
    objectness_logits,
    box_deltas,
    labels,
    targets,
    num_locations,
    lambda_reg=10.0,
    smooth_l1_beta=1.0,
):
    """The RPN's multi-task loss, Eq. (1) of the paper, averaged over the batch:

    L = 1/Ncls sum_i Lcls(p_i, p_i*) + lambda 1/Nreg sum_i p_i* Lreg(t_i, t_i*)

    with Ncls the sampled anchors of the image (256), Nreg the number of anchor
    locations (h * w, ~2,400 for a 600x1000 image) and lambda = 10.

    A feature pyramid has ~1.3 x 16 times those locations (P2-P6), which would shrink
    the box term as much: with ``num_locations=None`` Nreg is Ncls, the sampled anchors,
    as torchvision's and detectron2's FPN RPN normalise it (with lambda = 1 the two
    weigh the box term as the paper's 10 / 2,400 ~ 1 / 256 does), and its smooth L1 turns
    linear at ``smooth_l1_beta`` = 1/9 as torchvision's does: with the paper's 1, errors of
    0.1-0.3 (most of a fitted anchor's) get gradients of 0.1-0.3 instead of 1.

    Args:
      objectness_logits: float32 [batch, A, 2].
      box_deltas: float32 [batch, A, 4].
      labels, targets: from :func:`anchor_targets`.
      num_locations: scalar, the feature map's h * w; None: Nreg = Ncls.
      smooth_l1_beta: where the smooth L1 of the box term turns linear (the paper's 1).

    Returns:
      dict with float32 scalars "rpn_objectness" (the Lcls term) and "rpn_box"
      (lambda times the Lreg term).
    """
    sampled = tf.cast(labels >= 0, tf.float32)
    positive = tf.cast(labels == 1, tf.float32)
    log_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=objectness_logits
    )
    n_cls = tf.maximum(tf.reduce_sum(sampled, axis=-1), 1.0)
    cls = tf.reduce_sum(log_loss * sampled, axis=-1) / n_cls
    reg_per_anchor = tf.reduce_sum(box_ops.smooth_l1(box_deltas - targets, smooth_l1_beta), axis=-1)
    n_reg = n_cls if num_locations is None else tf.cast(num_locations, tf.float32)
    reg = tf.reduce_sum(reg_per_anchor * positive, axis=-1) / n_reg
    return {"rpn_objectness": tf.reduce_mean(cls), "rpn_box": lambda_reg * tf.reduce_mean(reg)}
