"""Recall of RPN proposals (the paper's Fig. 4): how many objects the top-N proposals cover.

A ground-truth box counts as recalled at (N, t) when at least one of its image's N
highest-scoring proposals overlaps it with IoU >= t. Class labels play no part. Difficult and crowd
boxes are left out, as in the mAP. Boxes are absolute pixel [ymin, xmin, ymax, xmax] in the
original image.
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.evaluation._records import as_groundtruth, as_proposals, box_iou, index_by_image
from tf_frcnn.stages import RPN_RECALL_AT

# The N of eval's recall@N: the paper's Fig. 4 counts around the headline 300.
RECALL_PROPOSALS = (100, RPN_RECALL_AT, 1000)


def recall_key(num_proposals: int, iou_threshold: float) -> str:
    """The metric's name: "recall@300" at IoU 0.5 (the headline one), else "recall@300_iou0.7"."""
    if np.isclose(iou_threshold, 0.5):
        return f"recall@{num_proposals}"
    return f"recall@{num_proposals}_iou{iou_threshold:g}"


def rpn_recall(
    groundtruths: list[dict],
    proposals: list[dict],
    num_proposals=RECALL_PROPOSALS,
    iou_thresholds=(0.5, 0.7),
) -> dict:
    """Fraction of (non-difficult, non-crowd) ground-truth boxes covered by the top-N proposals.

    Args:
      groundtruths: one ground-truth record per image (`tf_frcnn.evaluation._records`).
      proposals: proposal records; an image without one has no proposals, one with P < N
        proposals uses all P.
      num_proposals: the N values.
      iou_thresholds: the t values.

    Returns:
      {recall_key(N, t): float in [0, 1] (NaN when there is no ground truth) for every N and t},
      e.g. "recall@300" (IoU 0.5) and "recall@300_iou0.7".
    """
    groundtruths = [as_groundtruth(g) for g in groundtruths]
    proposals = [as_proposals(p) for p in proposals]
    proposals_by_image = index_by_image(proposals, groundtruths, "proposals")
    num_proposals = [int(n) for n in num_proposals]
    thresholds = np.asarray(iou_thresholds, np.float64)
    most = max(num_proposals, default=0)

    covered = np.zeros((len(num_proposals), thresholds.size), np.int64)
    total = 0
    for g in groundtruths:
        boxes = g["boxes"][~(g["difficult"] | g["iscrowd"])]
        total += boxes.shape[0]
        record = proposals_by_image.get(g["image_id"])
        if record is None or not boxes.shape[0] or not record["boxes"].shape[0]:
            continue
        iou = box_iou(boxes, record["boxes"][:most])
        for i, n in enumerate(num_proposals):
            if n > 0:
                best = iou[:, :n].max(axis=1)
                covered[i] += np.sum(best[:, None] >= thresholds[None, :], axis=0)

    return {
        recall_key(n, t): float(covered[i, j] / total) if total else float("nan")
        for j, t in enumerate(thresholds)
        for i, n in enumerate(num_proposals)
    }
