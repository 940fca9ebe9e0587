"""Pascal VOC mean average precision: VOC2007's 11-point AP and VOC2010+'s all-point AP.

Follows the VOC devkit (VOCevaldet.m; VOCap in the VOC2010+ devkits):

- Per class, detections of all images are sorted by score (descending; ties keep input order:
  image order, then position in the image) and each takes the ground-truth box of that class it
  overlaps most. IoU >= `iou_threshold` (0.5 in VOC) on a box not taken yet is a true positive; on
  a box already taken, a false positive (duplicates count against the detector); below the
  threshold, a false positive.
- Difficult boxes are excluded: they do not count in the number of positives, and a detection whose
  best box is difficult is neither a true nor a false positive. Crowd boxes (`iscrowd`) are treated
  the same way (VOC has none; COCO ignores them too).
- Classes without any non-difficult ground truth have an undefined AP (NaN) and are left out of the
  mean.

Two deliberate differences:

- Boxes are absolute pixel [ymin, xmin, ymax, xmax] in continuous coordinates, and IoU is computed
  without the devkit's "+1" pixel (it treats integer corners as inclusive pixel indices; ours are
  float).
- The 11 recall points of VOC07 are the exact tenths. The common Python port (py-faster-rcnn's
  voc_eval.py) takes np.arange(0, 1.1, 0.1), where a recall of exactly 0.3 misses the point
  0.30000000000000004; here it counts, as the definition says.
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.evaluation._records import box_iou, checked_records, concat

# Status of a detection after `match_image`.
TRUE_POSITIVE, IGNORED, FALSE_POSITIVE = 0, 1, -1
# Exactly the tenths 0.0, 0.1, ..., 1.0: a recall of 3/10 must reach the 0.3 point, which
# 0.1 * 3 = 0.30000000000000004 (np.arange(0, 1.1, 0.1)) would miss.
_VOC07_RECALL_POINTS = np.arange(11) / 10.0


def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
    """Average precision from one class's precision-recall curve.

    Args:
      recall: float [D], cumulative recall after each detection in score order (non-decreasing).
      precision: float [D], cumulative precision after each detection.
      use_07_metric: True for VOC2007's 11-point interpolated AP: the mean over t in
        {0, 0.1, ..., 1} of the best precision at any recall >= t (0 where recall never reaches t).
        False for the VOC2010+ AP: the area under the curve after making precision monotonically
        non-increasing (each point takes the best precision at any higher recall).

    Returns:
      AP in [0, 1]; 0.0 for an empty curve.
    """
    recall = np.asarray(recall, np.float64).reshape(-1)
    precision = np.asarray(precision, np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} differ in length")
    if recall.size == 0:
        return 0.0
    if use_07_metric:
        best = [
            precision[recall >= t].max() if np.any(recall >= t) else 0.0
            for t in _VOC07_RECALL_POINTS
        ]
        return float(np.mean(best))
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def precision_recall_by_class(
    scores, classes, true_positive, num_gt: dict, num_classes: int
) -> dict:
    """Each class's precision-recall curve and AP from detections already judged.

    Args:
      scores: float [D], classes: int [D] 1-based, true_positive: bool [D]; the detections of all
        images in (image, position) order, ignored ones left out. Each class's are taken in score
        order, descending; ties keep this order.
      num_gt: {label: int} positives of each class.
      num_classes: labels are 1..num_classes.

    Returns:
      {label: {"precision": [D_c], "recall": [D_c] (NaN without positives), "scores": [D_c],
      "AP": all-point AP, "AP_voc07": 11-point AP (both NaN without positives)}}
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    true_positive = np.asarray(true_positive, bool).reshape(-1)
    curves = {}
    for label in range(1, num_classes + 1):
        positives = int(num_gt.get(label, 0))
        mine = np.flatnonzero(classes == label)
        order = mine[np.argsort(-scores[mine], kind="stable")]
        tp = np.cumsum(true_positive[order])
        precision = tp / np.arange(1, order.size + 1)
        recall = tp / positives if positives else np.full(order.size, np.nan)
        curves[label] = {
            "precision": precision,
            "recall": recall,
            "scores": scores[order],
            "AP": voc_ap(recall, precision, False) if positives else float("nan"),
            "AP_voc07": voc_ap(recall, precision, True) if positives else float("nan"),
        }
    return curves


def mean_over_defined(per_class: dict) -> float:
    """Mean of the values that are not NaN (classes without ground truth); NaN if none is."""
    defined = [ap for ap in per_class.values() if not np.isnan(ap)]
    return float(np.mean(defined)) if defined else float("nan")


def match_image(groundtruth: dict, detections: dict, iou_threshold: float):
    """VOC's matching in one image (see the module docstring).

    Args:
      groundtruth, detections: checked records of one image (`as_groundtruth`, `as_detections`).
      iou_threshold: the overlap a true positive needs.

    Returns:
      (iou float [K, N] of every detection with every box, status int [K]: TRUE_POSITIVE,
      IGNORED or FALSE_POSITIVE, taken bool [N]: the boxes a true positive took).
    """
    iou = box_iou(detections["boxes"], groundtruth["boxes"])
    ignored = groundtruth["difficult"] | groundtruth["iscrowd"]
    same_iou = np.where(detections["classes"][:, None] == groundtruth["labels"][None, :], iou, -1.0)
    status = np.full(iou.shape[0], FALSE_POSITIVE, np.int64)
    taken = np.zeros(iou.shape[1], bool)
    if iou.shape[1]:
        best = np.argmax(same_iou, axis=1)
        best_iou = same_iou[np.arange(iou.shape[0]), best]
        order = np.argsort(-detections["scores"], kind="stable")
        for k in order[best_iou[order] >= iou_threshold]:
            if ignored[best[k]]:
                status[k] = IGNORED
            elif not taken[best[k]]:
                status[k] = TRUE_POSITIVE
                taken[best[k]] = True
    return iou, status, taken


def voc_metrics(
    groundtruths: list[dict], detections: list[dict], num_classes: int, iou_threshold: float = 0.5
) -> dict:
    """VOC07 (11-point) and VOC2010+ (all-point) mAP, per-class AP and precision-recall curves.

    Args:
      groundtruths: one ground-truth record per image (`tf_frcnn.evaluation._records`), also for
        images without objects.
      detections: detection records; an image without one has no detections.
      num_classes: number of object classes, background excluded; labels are 1..num_classes.
      iou_threshold: the overlap a true positive needs (VOC: 0.5).

    Returns:
      {"mAP_voc07": float, "mAP_voc": float (NaN if no class has ground truth),
       "per_class_AP_voc07": {label: float}, "per_class_AP": {label: float} (all-point; NaN
       without ground truth), "precision": {label: float [D]}, "recall": {label: float [D]} (the
       curve over the class's D counted detections in score order; recall is NaN without ground
       truth),
       "scores": {label: float [D]}, "num_gt": {label: int} (non-difficult boxes),
       "iou_threshold": float}
    """
    groundtruths, by_image = checked_records(groundtruths, detections, num_classes)
    judged = [(g, by_image[g["image_id"]]) for g in groundtruths if g["image_id"] in by_image]
    status = concat([match_image(g, d, iou_threshold)[1] for g, d in judged], np.int64)
    counted_labels = concat(
        [g["labels"][~(g["difficult"] | g["iscrowd"])] for g in groundtruths], np.int64
    )
    num_gt = {label: int(np.sum(counted_labels == label)) for label in range(1, num_classes + 1)}
    # A detection whose best box is ignored does not enter the curve at all.
    kept = status != IGNORED
    scores = concat([d["scores"] for _, d in judged], np.float64)[kept]
    classes = concat([d["classes"] for _, d in judged], np.int64)[kept]
    true_positive = (status == TRUE_POSITIVE)[kept]
    curves = precision_recall_by_class(scores, classes, true_positive, num_gt, num_classes)
    result = {
        "per_class_AP_voc07": {label: c["AP_voc07"] for label, c in curves.items()},
        "per_class_AP": {label: c["AP"] for label, c in curves.items()},
        "precision": {label: c["precision"] for label, c in curves.items()},
        "recall": {label: c["recall"] for label, c in curves.items()},
        "scores": {label: c["scores"] for label, c in curves.items()},
        "num_gt": num_gt,
        "iou_threshold": float(iou_threshold),
    }
    result["mAP_voc07"] = mean_over_defined(result["per_class_AP_voc07"])
    result["mAP_voc"] = mean_over_defined(result["per_class_AP"])
    return result
