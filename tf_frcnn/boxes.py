"""Pure tensor math on boxes.

Every function here works on absolute pixel boxes ``[ymin, xmin, ymax, xmax]``
(float32, the ``tf.image`` order, Keras' ``"yxyx"`` format) unless its name says
``normalized``. Deltas are the paper's parameterisation stored in the
``center_yxhw`` order of ``keras.utils.bounding_boxes``:
``(ty, tx, th, tw) = ((y - ya) / ha, (x - xa) / wa, log(h / ha), log(w / wa))``.
"""

import math

import tensorflow as tf
from keras.utils import bounding_boxes as kbb

# Largest log-scale a predicted delta may apply: a 16 px anchor may grow to
# 1000 px, no more. Untrained heads otherwise overflow exp() into inf/NaN boxes.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)

# The detector's deltas are divided by these (ty, tx, th, tw) when encoded; the RPN's are not.
DETECTOR_BOX_STDS = (0.1, 0.1, 0.2, 0.2)


def iou(boxes1, boxes2):
    """Pairwise intersection over union.

    Args:
      boxes1: float32 [M, 4] or [batch, M, 4], absolute [ymin, xmin, ymax, xmax].
      boxes2: float32 [N, 4] or [batch, N, 4], same convention.

    Returns:
      float32 [M, N] (or [batch, M, N]) in [0, 1]; 0 for empty (padding) boxes.
    """
    return kbb.compute_iou(boxes1, boxes2, bounding_box_format="yxyx")


def encode(boxes, anchors, stds=None):
    """Regression targets of ``boxes`` relative to ``anchors``.

    Args:
      boxes: float32 [..., N, 4] absolute [ymin, xmin, ymax, xmax].
      anchors: float32 [N, 4] (or broadcastable to ``boxes``), same convention.
      stds: optional 4 floats (ty, tx, th, tw order) the deltas are divided by.

    Returns:
      float32 [..., N, 4] deltas (ty, tx, th, tw).
    """
    return kbb.encode_box_to_deltas(
        anchors,
        boxes,
        anchor_format="yxyx",
        box_format="yxyx",
        encoding_format="center_yxhw",
        variance=stds,
    )


def decode(deltas, anchors, stds=None):
    """Inverse of :func:`encode`: apply deltas (ty, tx, th, tw) to anchors.

    Args:
      deltas: float32 [..., N, 4].
      anchors: float32 [N, 4] absolute [ymin, xmin, ymax, xmax].
      stds: optional 4 floats the deltas are multiplied by first.

    Returns:
      float32 [..., N, 4] absolute [ymin, xmin, ymax, xmax].
    """
    if stds is not None:
        deltas = deltas * tf.constant(stds, tf.float32)
    deltas = tf.concat([deltas[..., :2], tf.minimum(deltas[..., 2:], MAX_LOG_SCALE)], axis=-1)
    return kbb.decode_deltas_to_boxes(
        anchors, deltas, anchor_format="yxyx", box_format="yxyx", encoded_format="center_yxhw"
    )


def clip(boxes, image_shape):
    """Clip boxes to their image.

    Keras' ``clip_to_image_size`` takes one height/width for the whole batch;
    here every image of a padded batch has its own valid size.

    Args:
      boxes: float32 [batch, N, 4] absolute [ymin, xmin, ymax, xmax].
      image_shape: int or float [batch, 2], valid (height, width) per image.

    Returns:
      float32 [batch, N, 4].
    """
    hw = tf.cast(image_shape, boxes.dtype)[:, tf.newaxis, :]
    return tf.clip_by_value(boxes, 0.0, tf.concat([hw, hw], axis=-1))


def area(boxes):
    """float32 [..., N] area of [..., N, 4] boxes; 0 for inverted boxes."""
    heights = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    widths = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return heights * widths


def to_normalized(boxes, image_shape):
    """Absolute [..., 4] boxes -> normalised [0, 1] by (height, width) [..., 2]."""
    hw = tf.cast(image_shape, boxes.dtype)
    return boxes / tf.concat([hw, hw], axis=-1)


def to_absolute(boxes, image_shape):
    """Normalised [..., 4] boxes -> absolute pixels by (height, width) [..., 2]."""
    hw = tf.cast(image_shape, boxes.dtype)
    return boxes * tf.concat([hw, hw], axis=-1)


def batched_padded_nms(boxes, scores, max_output_size, iou_threshold, score_threshold):
    """``tf.image.non_max_suppression`` per image in its padded form (a static output and the
    valid count), as TFLite's built-in NON_MAX_SUPPRESSION_V4 computes it. Among equal scores
    the lower index goes first (TensorFlow's rule), in TFLite too.

    Args:
      boxes: float32 [batch, N, 4] absolute [ymin, xmin, ymax, xmax]; scores: float32 [batch, N].
      max_output_size: int, the static output length.
      iou_threshold, score_threshold: floats; boxes scoring <= score_threshold are dropped.

    Returns:
      (indices int32 [batch, max_output_size] into each image's boxes, best first, 0 past the
      count; counts int32 [batch]).
    """
    num_boxes = boxes.shape[1]
    size = max_output_size if num_boxes is None else min(max_output_size, num_boxes)

    def suppress(args):
        boxes, scores = args
        # Equal scores are common: the anchors in the zero padding of a batch see equal
        # features, and their proposals, clipped to the image, all touch its bottom/right
        # border. TFLite's kernel breaks such ties in no set order, so the kernel gets the
        # boxes sorted (top_k puts the lower index first in both runtimes) and their ranks as
        # scores, which never tie.
        count = num_boxes if num_boxes is not None else tf.shape(scores)[0]
        sorted_scores, order = tf.math.top_k(scores, k=count)
        ranks = tf.cast(count - tf.range(count), tf.float32)
        selected = tf.raw_ops.NonMaxSuppressionV4(
            boxes=tf.gather(boxes, order),
            scores=tf.where(sorted_scores > score_threshold, ranks, 0.0),
            max_output_size=size,
            iou_threshold=iou_threshold,
            score_threshold=0.5,
            pad_to_max_output_size=True,
        )
        valid = tf.range(size) < selected.valid_outputs
        indices = tf.where(valid, tf.gather(order, selected.selected_indices), 0)
        if size < max_output_size:
            # XLA's kernel takes no output longer than the boxes: ask for all of them, then pad.
            indices = tf.pad(indices, [[0, max_output_size - size]])
        return indices, selected.valid_outputs

    if boxes.shape[0] == 1:
        # A static batch of one needs no loop: TFLite and XLA exports run this form.
        indices, count = suppress((boxes[0], scores[0]))
        return indices[tf.newaxis], count[tf.newaxis]
    signature = (tf.TensorSpec([max_output_size], tf.int32), tf.TensorSpec([], tf.int32))
    return tf.map_fn(suppress, (boxes, scores), fn_output_signature=signature)


def smooth_l1(x, beta=1.0):
    """Fast R-CNN's robust loss, elementwise: 0.5 x^2 / beta if |x| < beta,
    else |x| - 0.5 beta (beta = 1 in the paper)."""
    abs_x = tf.abs(x)
    return tf.where(abs_x < beta, 0.5 * tf.square(x) / beta, abs_x - 0.5 * beta)
