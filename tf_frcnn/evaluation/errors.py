"""Where a detector fails: every false positive and missed object typed in the manner of TIDE
(Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020), the
AP50 each type costs, and a confusion matrix with a background row and column.

Per image, detections are first judged as VOC does (`tf_frcnn.evaluation.voc`): in score order
each takes the same-class ground-truth box it overlaps most; IoU >= t_f (0.5) on a box not taken
yet is a true positive, on a difficult or crowd box it is ignored. Each remaining detection (a false
positive) gets the first type that applies, in TIDE's order, with IoU_max its largest IoU with a
counted (not difficult, not crowd) box:

1. localisation: t_b <= IoU_max < t_f with a box of its class (t_b = 0.1);
2. classification: IoU_max >= t_f with a box of another class;
3. duplicate: IoU_max >= t_f with a box of its class, already taken by a higher-scoring detection;
4. background: IoU_max <= t_b with every box (also: the image has no counted box);
5. both: anything else (t_b < IoU_max < t_f with a box of another class only).

A counted box no detection takes is *missed*, unless a localisation or classification error points
at it (TIDE counts that object under the error, not twice).

The AP50 a type costs is the mean VOC all-point AP at t_f with that type fixed minus the AP now,
following TIDE's fixes: a localisation or classification error becomes a true positive (of the
box's class, for a classification error) when its box is not taken, and only the highest-scoring
such error per box is fixed; every other error of the type is removed (a duplicate, a background
or a "both" error is always removed). A missed object is fixed by counting one positive fewer; a
class left without positives then has nothing to find and its AP is 1. The AP now equals
`voc_metrics`' `mAP_voc`. Unlike TIDE (COCO's 101-point AP and COCO matching), the AP and the
matching are VOC's, so the baseline is the report's own mAP.

Boxes are absolute pixel [ymin, xmin, ymax, xmax]; labels are 1-based.
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.evaluation._records import box_iou, checked_records, concat
from tf_frcnn.evaluation.voc import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    match_image,
    mean_over_defined,
    precision_recall_by_class,
)

# The false-positive types, in the order they are tested, then the object type.
FALSE_POSITIVE_TYPES = ("localisation", "classification", "duplicate", "background", "both")
ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")

# Status of a detection in `classify_image`: a true positive, ignored, or one of the false-positive
# types (FALSE_POSITIVE_TYPES[i] is status i + 2).
DETECTION_STATUS = ("true_positive", "ignored") + FALSE_POSITIVE_TYPES
# Status of a ground-truth box: found (taken by a true positive), ignored (difficult or crowd),
# missed, or covered (not found, but the target of a localisation or classification error).
FOUND, GT_IGNORED, MISSED, COVERED = 0, 1, 2, 3
GROUNDTRUTH_STATUS = ("found", "ignored", "missed", "covered")


def classify_image(
    groundtruth: dict,
    detections: dict | None,
    iou_threshold: float = 0.5,
    background_iou: float = 0.1,
) -> dict:
    """Judges one image's detections and boxes (see the module docstring).

    Args:
      groundtruth: a checked ground-truth record (`as_groundtruth`): "boxes" [N, 4] absolute,
        "labels" [N], "difficult" [N], "iscrowd" [N].
      detections: a checked detection record (`as_detections`) of the same image, or None.
      iou_threshold: t_f, the IoU of a true positive.
      background_iou: t_b; below it a detection overlaps nothing.

    Returns:
      {"detection_status": int [K] (index into DETECTION_STATUS), "target": int [K] (the box a
       localisation or classification error points at, else -1), "fixed": bool [K] (that error is
       the highest-scoring one on a box not taken: TIDE's fix makes it a true positive),
       "groundtruth_status": int [N] (index into GROUNDTRUTH_STATUS)}
    """
    if detections is None:
        detections = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    iou, status, taken = match_image(groundtruth, detections, iou_threshold)
    ignored = groundtruth["difficult"] | groundtruth["iscrowd"]
    same = detections["classes"][:, None] == groundtruth["labels"][None, :]
    num_dets, num_gt = iou.shape
    order = np.argsort(-detections["scores"], kind="stable")

    counted_iou = np.where(ignored[None, :], 0.0, iou)
    own = np.where(same, counted_iou, 0.0)
    other = np.where(same, 0.0, counted_iou)
    target = np.full(num_dets, -1, np.int64)
    false_positive = status == FALSE_POSITIVE
    if not np.any(~ignored):
        status[false_positive] = DETECTION_STATUS.index("background")
    else:
        rows = np.arange(num_dets)
        own_best, other_best = np.argmax(own, axis=1), np.argmax(other, axis=1)
        own_iou, other_iou = own[rows, own_best], other[rows, other_best]
        tests = (
            ("localisation", (own_iou >= background_iou) & (own_iou < iou_threshold), own_best),
            ("classification", other_iou >= iou_threshold, other_best),
            ("duplicate", own_iou >= iou_threshold, None),
            ("background", counted_iou.max(axis=1) <= background_iou, None),
            ("both", np.ones(num_dets, bool), None),
        )
        for name, applies, points_at in tests:
            mine = false_positive & applies
            status[mine] = DETECTION_STATUS.index(name)
            if points_at is not None:
                target[mine] = points_at[mine]
            false_positive &= ~applies

    # TIDE fixes one error per box not taken: the highest-scoring one pointing at it.
    fixed = np.zeros(num_dets, bool)
    covered = np.zeros(num_gt, bool)
    for k in order:
        box = target[k]
        if box >= 0 and not taken[box] and not covered[box]:
            fixed[k] = covered[box] = True
    gt_status = np.where(taken, FOUND, np.where(covered, COVERED, MISSED))
    gt_status = np.where(ignored, GT_IGNORED, gt_status).astype(np.int64)
    return {
        "detection_status": status,
        "target": target,
        "fixed": fixed,
        "groundtruth_status": gt_status,
    }


def classify_images(
    groundtruths: list[dict],
    detections: list[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    background_iou: float = 0.1,
) -> list[dict]:
    """`classify_image` of every image, in the ground truth's order; each result also carries the
    image's "image_id" and its checked "groundtruth" and "detections" records (None without
    detections)."""
    groundtruths, by_image = checked_records(groundtruths, detections, num_classes)
    results = []
    for g in groundtruths:
        d = by_image.get(g["image_id"])
        result = classify_image(g, d, iou_threshold, background_iou)
        result.update(image_id=g["image_id"], groundtruth=g, detections=d)
        results.append(result)
    return results


def _mean_ap(scores, classes, true_positive, num_gt, reference):
    """mAP over the classes of `reference` (those with positives now), and each class's AP; a class
    whose positives were all fixed away has AP 1."""
    curves = precision_recall_by_class(scores, classes, true_positive, num_gt, len(reference))
    per_class = {}
    for label in reference:
        if not reference[label]:
            per_class[label] = float("nan")
        else:
            per_class[label] = curves[label]["AP"] if num_gt[label] else 1.0
    return mean_over_defined(per_class), per_class


def _fixed_classes(image):
    """The classes of an image's detections once TIDE's fix gives each localisation or
    classification error the class of the box it points at."""
    target, classes = image["target"], image["detections"]["classes"].copy()
    classes[target >= 0] = image["groundtruth"]["labels"][target[target >= 0]]
    return classes


def error_analysis(images: list[dict], num_classes: int) -> dict:
    """TIDE-style error counts and the AP each type costs (see the module docstring).

    Args:
      images: the judged images of `classify_images` (at t_f and t_b).
      num_classes: labels are 1..num_classes.

    Returns:
      {"AP50": mAP now (VOC all-point at t_f),
       "counts": {type: int} for every type of ERROR_TYPES,
       "delta_AP50": {type: AP50 with that type fixed minus AP50 now},
       "per_class": {label: {"AP50": float, "counts": {type: int}, "delta_AP50": {type: float}}};
       false positives count in their detected class, missed objects in their own}
    """
    judged = [image for image in images if image["detections"] is not None]
    status = concat([image["detection_status"] for image in judged], np.int64)
    kept = status != IGNORED
    status = status[kept]
    scores = concat([image["detections"]["scores"] for image in judged], np.float64)[kept]
    classes = concat([image["detections"]["classes"] for image in judged], np.int64)[kept]
    fixed = concat([image["fixed"] for image in judged], bool)[kept]
    fixed_class = concat([_fixed_classes(image) for image in judged], np.int64)[kept]
    labels = concat([image["groundtruth"]["labels"] for image in images], np.int64)
    gt_status = concat([image["groundtruth_status"] for image in images], np.int64)
    label_range = range(1, num_classes + 1)
    num_gt = {c: int(np.sum((labels == c) & (gt_status != GT_IGNORED))) for c in label_range}
    missed = {c: int(np.sum((labels == c) & (gt_status == MISSED))) for c in label_range}
    true_positive = status == TRUE_POSITIVE
    base, base_per_class = _mean_ap(scores, classes, true_positive, num_gt, num_gt)

    counts, delta, delta_per_class = {}, {}, {}
    for kind in ERROR_TYPES:
        if kind == "missed":
            counts[kind] = missed
            fixed_num_gt = {c: num_gt[c] - missed[c] for c in num_gt}
            ap, per_class = _mean_ap(scores, classes, true_positive, fixed_num_gt, num_gt)
        else:
            mine = status == DETECTION_STATUS.index(kind)
            counts[kind] = {c: int(np.sum(mine & (classes == c))) for c in label_range}
            keep = ~mine | fixed
            ap, per_class = _mean_ap(
                scores[keep],
                np.where(mine & fixed, fixed_class, classes)[keep],
                (true_positive | (mine & fixed))[keep],
                num_gt,
                num_gt,
            )
        delta[kind] = ap - base
        delta_per_class[kind] = {c: per_class[c] - base_per_class[c] for c in per_class}

    per_class = {
        c: {
            "AP50": base_per_class[c],
            "counts": {kind: counts[kind][c] for kind in ERROR_TYPES},
            "delta_AP50": {kind: delta_per_class[kind][c] for kind in ERROR_TYPES},
        }
        for c in label_range
    }
    return {
        "AP50": base,
        "counts": {kind: sum(counts[kind].values()) for kind in ERROR_TYPES},
        "delta_AP50": delta,
        "per_class": per_class,
    }


def confusion_matrix(
    groundtruths: list[dict], detections: list[dict], num_classes: int, iou_threshold: float = 0.5
) -> np.ndarray:
    """Counts of (true class, detected class) pairs, with background as the last row and column.

    Per image, detection/box pairs with IoU >= `iou_threshold` are matched greedily, largest IoU
    first, whatever their classes, each detection and box at most once. A matched pair counts at
    [box label - 1, detection class - 1]; an unmatched box at [label - 1, C] (missed); an unmatched
    detection at [C, class - 1] (background). Difficult and crowd boxes take part in the matching,
    but neither they nor the detections they take are counted. Pass the detections kept at the
    operating point (e.g. `thresholds.apply_thresholds`): every detection given is counted.

    Returns:
      int64 [C + 1, C + 1]: rows are the true class (then background), columns the detected class
      (then background); [C, C] is 0.
    """
    groundtruths, by_image = checked_records(groundtruths, detections, num_classes)
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for g in groundtruths:
        d = by_image.get(g["image_id"], {"boxes": np.zeros((0, 4)), "classes": np.zeros(0, int)})
        ignored = g["difficult"] | g["iscrowd"]
        classes = d["classes"]
        iou = box_iou(d["boxes"], g["boxes"])
        det_used = np.zeros(classes.size, bool)
        gt_used = np.zeros(g["labels"].size, bool)
        pairs = np.argwhere(iou >= iou_threshold)
        pairs = pairs[np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")]
        for k, j in pairs:
            if det_used[k] or gt_used[j]:
                continue
            det_used[k] = gt_used[j] = True
            if not ignored[j]:
                matrix[g["labels"][j] - 1, classes[k] - 1] += 1
        for j in np.flatnonzero(~gt_used & ~ignored):
            matrix[g["labels"][j] - 1, num_classes] += 1
        for k in np.flatnonzero(~det_used):
            matrix[num_classes, classes[k] - 1] += 1
    return matrix


def image_error_counts(images: list[dict]) -> list[int]:
    """Errors of each image of `classify_images`, counted as `error_analysis` counts them: its
    false positives plus its missed objects."""
    return [
        int(np.sum(image["detection_status"] >= 2) + np.sum(image["groundtruth_status"] == MISSED))
        for image in images
    ]


def select_gallery(images: list[dict], worst: int = 8, best: int = 4) -> tuple[list, list]:
    """Image ids for the report's gallery: the `worst` with most errors (`image_error_counts`; ties
    by more boxes), then the `best` among the rest with ground truth: fewest errors, then most
    boxes found. Returns (worst ids, best ids)."""
    errors = image_error_counts(images)
    found = [int(np.sum(image["groundtruth_status"] == FOUND)) for image in images]
    boxes = [int(image["groundtruth_status"].size) for image in images]
    indices = range(len(images))
    worst_ones = sorted(
        (i for i in indices if errors[i] > 0), key=lambda i: (-errors[i], -boxes[i], i)
    )[:worst]
    rest = [i for i in indices if i not in set(worst_ones) and boxes[i] > 0]
    best_ones = sorted(rest, key=lambda i: (errors[i], -found[i], i))[:best]
    return ([images[i]["image_id"] for i in worst_ones], [images[i]["image_id"] for i in best_ones])
