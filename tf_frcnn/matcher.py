"""Matching candidate boxes to ground truth by IoU, and the labelling rules of the RPN's
anchors (Sec. 3.1.2) and of the detector's ROIs (Fast R-CNN, Sec. 2.3)."""

import tensorflow as tf

from tf_frcnn import boxes as box_ops

# The paper's anchor labelling thresholds (Sec. 3.1.2): rpn.positive_iou, rpn.negative_iou.
POSITIVE_IOU = 0.7
NEGATIVE_IOU = 0.3


def match(candidates, candidate_valid, gt_boxes, gt_labels):
    """The best ground truth of each candidate.

    Args:
      candidates: float32 [N, 4] (shared by the batch) or [batch, N, 4], absolute
        [ymin, xmin, ymax, xmax].
      candidate_valid: bool [batch, N]; an invalid candidate matches nothing.
      gt_boxes: float32 [batch, M, 4] absolute; gt_labels: int32 [batch, M], 0 marks padding.

    Returns:
      dict of "iou" float32 [batch, N, M] (-1 where the candidate or the ground truth is
      invalid), "max_iou" float32 [batch, N] (-1 for a candidate matching nothing), and the
      best ground truth's "boxes" float32 [batch, N, 4] and "labels" int32 [batch, N].
    """
    valid_pair = candidate_valid[:, :, tf.newaxis] & (gt_labels > 0)[:, tf.newaxis, :]
    overlaps = tf.where(valid_pair, box_ops.iou(candidates, gt_boxes), -1.0)
    best_gt = tf.argmax(overlaps, axis=-1, output_type=tf.int32)
    return {
        "iou": overlaps,
        "max_iou": tf.reduce_max(overlaps, axis=-1),
        "boxes": tf.gather(gt_boxes, best_gt, batch_dims=1),
        "labels": tf.gather(gt_labels, best_gt, batch_dims=1),
    }


def drop_trailing_padding(gt_boxes, gt_labels):
    """``gt_boxes`` [batch, M, 4] and ``gt_labels`` [batch, M] without the columns after the
    batch's last real ground truth (label > 0), one column kept at least. ``match`` gives
    the same result on them and computes M-fold IoUs for fewer M: the pipeline pads to
    ``data.max_boxes`` (100 by default) and an image has a few dozen objects at most. The
    shape becomes data-dependent, which an XLA-compiled step cannot take."""
    positions = tf.range(1, tf.shape(gt_labels)[1] + 1)
    last = tf.reduce_max(tf.where(gt_labels > 0, positions[tf.newaxis], 0))
    keep = tf.maximum(last, 1)
    return gt_boxes[:, :keep], gt_labels[:, :keep]


def anchor_labels(matches, anchor_valid, positive_iou, negative_iou):
    """The RPN's rule for valid anchors: positive when IoU > ``positive_iou`` with a ground
    truth or when it is (one of) the anchors of highest IoU for a ground truth; negative when
    not positive and IoU < ``negative_iou`` with every ground truth.

    Returns:
      (positive, negative): bool [batch, N] each.
    """
    overlaps = matches["iou"]
    gt_best_iou = tf.reduce_max(overlaps, axis=1, keepdims=True)  # [B, 1, M]
    is_best_for_gt = tf.reduce_any((overlaps == gt_best_iou) & (gt_best_iou > 0.0), axis=-1)
    positive = anchor_valid & ((matches["max_iou"] > positive_iou) | is_best_for_gt)
    negative = anchor_valid & ~positive & (matches["max_iou"] < negative_iou)
    return positive, negative


def roi_labels(matches, roi_valid, fg_iou, bg_iou_low, bg_iou_high):
    """The detector's bands for valid ROI candidates: foreground when IoU >= ``fg_iou``,
    background when not foreground and IoU in [``bg_iou_low``, ``bg_iou_high``).

    Returns:
      (foreground, background): bool [batch, N] each.
    """
    max_iou = matches["max_iou"]
    foreground = roi_valid & (max_iou >= fg_iou)
    background = roi_valid & ~foreground & (max_iou >= bg_iou_low) & (max_iou < bg_iou_high)
    return foreground, background
