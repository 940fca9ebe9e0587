"""The proposal layer: RPN outputs -> a fixed number of region proposals."""

import keras
import tensorflow as tf

from tf_frcnn import boxes as box_ops
from tf_frcnn.rpn import objectness_scores


@keras.saving.register_keras_serializable(package="tf_frcnn")
class ProposalLayer(keras.layers.Layer):
    """Top-N by objectness, decode the deltas, clip to the image, drop boxes
    smaller than ``min_size``, ``tf.image.non_max_suppression`` (IoU
    ``nms_iou``), keep the top N after it (Sec. 3.3 of the paper).

    Paper defaults: 12,000 before / 2,000 after NMS when training, 6,000 /
    300 at test time; ``use_training_counts=True`` selects the training pair.

    Call with ``(objectness_logits [batch, A, 2], box_deltas [batch, A, 4],
    anchors [A, 4], image_shape int32 [batch, 2])``. Returns
    ``(proposals, scores, num_proposals)``: float32 [batch, post_nms, 4]
    absolute [ymin, xmin, ymax, xmax] in input pixels, zero-padded past
    ``num_proposals``; float32 [batch, post_nms] object probabilities (0 on
    padding); int32 [batch]. Output shapes are static so graphs trace once.
    Proposals carry no gradient (approximate joint training, Sec. 3.2).

    On a feature pyramid ``anchors`` is the list of each level's anchors [A_l, 4] (the
    logits and deltas concatenated in the same order, ``PyramidAnchorGenerator``): the
    pre-NMS count is then per level (P2 alone has 16x the stride-16 anchors and would
    crowd the others out), one NMS runs over all levels with each level's boxes shifted
    apart so that only boxes of the same level suppress each other (detectron2's
    ``batched_nms`` keyed by level, one built-in op), and the top ``post_nms`` of the
    image are kept (detectron2 ``find_top_rpn_proposals``, torchvision ``rpn.py``).
    """

    def __init__(
        self,
        train_pre_nms=12000,
        train_post_nms=2000,
        test_pre_nms=6000,
        test_post_nms=300,
        nms_iou=0.7,
        min_size=16.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.train_pre_nms = train_pre_nms
        self.train_post_nms = train_post_nms
        self.test_pre_nms = test_pre_nms
        self.test_post_nms = test_post_nms
        self.nms_iou = nms_iou
        self.min_size = min_size

    def call(self, objectness_logits, box_deltas, anchors, image_shape, use_training_counts=False):
        pre_nms = self.train_pre_nms if use_training_counts else self.test_pre_nms
        post_nms = self.train_post_nms if use_training_counts else self.test_post_nms
        scores = tf.stop_gradient(objectness_scores(objectness_logits))
        box_deltas = tf.stop_gradient(box_deltas)
        pyramid = isinstance(anchors, (list, tuple))
        per_level = [(scores, box_deltas, anchors)]
        if pyramid:
            sizes = [_length(level) for level in anchors]
            per_level = zip(
                tf.split(scores, sizes, axis=1), tf.split(box_deltas, sizes, axis=1), anchors
            )
        tops = [_top_k(*level, pre_nms) for level in per_level]
        top_scores, top_deltas, top_anchors = (tf.concat(part, axis=1) for part in zip(*tops))
        proposals = box_ops.decode(top_deltas, top_anchors)
        proposals = box_ops.clip(proposals, image_shape)
        heights = proposals[..., 2] - proposals[..., 0]
        widths = proposals[..., 3] - proposals[..., 1]
        big_enough = (heights >= self.min_size) & (widths >= self.min_size)
        # Probabilities are >= 0: -1 marks the dropped boxes below the threshold.
        top_scores = tf.where(big_enough, top_scores, -1.0)

        nms_boxes = proposals
        if pyramid:
            # Boxes lie in [0, longest side]: shifted by level * (longest side + 1), boxes
            # of different levels never overlap.
            offset = tf.cast(tf.reduce_max(image_shape), tf.float32) + 1.0
            level_index = tf.concat(
                [tf.fill(tf.shape(top[0])[1:2], float(i)) for i, top in enumerate(tops)], axis=0
            )
            nms_boxes = proposals + (level_index * offset)[tf.newaxis, :, tf.newaxis]
        keep, valid = box_ops.batched_padded_nms(
            nms_boxes, top_scores, post_nms, self.nms_iou, score_threshold=-0.5
        )
        is_valid = tf.range(post_nms)[tf.newaxis, :] < valid[:, tf.newaxis]
        proposals = tf.gather(proposals, keep, batch_dims=1)
        proposals = tf.where(is_valid[..., tf.newaxis], proposals, 0.0)
        kept_scores = tf.where(is_valid, tf.gather(top_scores, keep, batch_dims=1), 0.0)
        return proposals, kept_scores, valid

    def get_config(self):
        names = ("train_pre_nms", "train_post_nms", "test_pre_nms", "test_post_nms")
        names += ("nms_iou", "min_size")
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}


def _length(anchors):
    """A level's anchor count: static where known, so the graph keeps static shapes."""
    return anchors.shape[0] if anchors.shape[0] is not None else tf.shape(anchors)[0]


def _top_k(scores, box_deltas, anchors, k):
    """The ``k`` (at most all) best-scoring anchors of each image: (scores [batch, k],
    deltas [batch, k, 4], anchors [batch, k, 4]), best first."""
    num_anchors = _length(anchors)
    k = min(k, num_anchors) if isinstance(num_anchors, int) else tf.minimum(k, num_anchors)
    top_scores, top_index = tf.math.top_k(scores, k=k, sorted=True)
    return top_scores, tf.gather(box_deltas, top_index, batch_dims=1), tf.gather(anchors, top_index)
