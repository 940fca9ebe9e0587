"""Likely label errors: confident detections that disagree with the ground truth in a way a
missing, wrong or loose label explains better than a model error.

The idea is ObjectLab's (Tkachenko, Thyagarajan, Mueller: "ObjectLab: Automated Diagnosis of
Mislabeled Images in Object Detection Data", 2023; `cleanlab.object_detection.rank`, read at
https://docs.cleanlab.ai/stable/_modules/cleanlab/object_detection/rank.html): a trained
detector that is very sure of a box the labels do not have points at an *overlooked* object, one
sure of another class on a labelled box points at a *swapped* label, and one sure of the right
class at a modest overlap points at a *badly located* box. cleanlab scores every labelled box and
pools the scores into one per image; here the detections themselves are ranked, so each entry of
the list is one box to look at, with the detection that raised it. The rules, per image, for
detections with score >= `score_threshold` (and boxes that are neither difficult nor crowd):

- missing: IoU < `loose_iou` (0.3) with every labelled box (a detection "matching no object").
  Of several such detections on one spot (IoU >= 0.5, any class) only the highest-scoring counts.
- wrong: IoU >= `match_iou` (0.5) with a box of another class, and no confident detection of the
  box's own class covers it (IoU >= 0.5): the model sees a different object there, not a second
  opinion next to a correct one.
- loose: IoU in [`loose_iou`, `match_iou`) with a box of the detection's class, and no confident
  detection of that class covers the box at IoU >= 0.5.

Each labelled box is reported at most once (by its highest-scoring detection). The list is ranked
by score: the most confident disagreements first. Boxes are absolute pixel [ymin, xmin, ymax,
xmax]; labels are 1-based.

The default threshold, 0.8, comes from `benchmarks/label_errors_synthetic.py` (numbers in
docs/evaluation.md): below it the model's own false positives dominate the list, above it recall
of planted errors falls faster than precision rises (cleanlab uses 0.95 for the same role).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tf_frcnn.evaluation._records import box_iou, checked_records
from tf_frcnn.evaluation.report_tables import class_name

LABEL_ERROR_KINDS = ("missing", "wrong", "loose")
DEFAULT_SCORE_THRESHOLD = 0.8
LOOSE_IOU, MATCH_IOU = 0.3, 0.5

KIND_DESCRIPTIONS = {
    "missing": "a confident detection that overlaps no labelled object (IoU < {loose:g}): "
    "probably an unlabelled object",
    "wrong": "a confident detection of another class on a labelled object (IoU >= {match:g}), "
    "with no confident detection of the label's class there: probably the wrong class",
    "loose": "a confident detection of the right class at IoU {loose:g} to {match:g} with a "
    "labelled box that no detection matches better: probably a loose or shifted box",
}


def _image_issues(groundtruth, detections, score_threshold, loose_iou, match_iou):
    """The issues of one image: [(kind, detection index, label index or -1, IoU)]."""
    confident = np.flatnonzero(detections["scores"] >= score_threshold)
    confident = confident[np.argsort(-detections["scores"][confident], kind="stable")]
    boxes, classes = detections["boxes"], detections["classes"]
    counted = ~(groundtruth["difficult"] | groundtruth["iscrowd"])
    iou = box_iou(boxes, groundtruth["boxes"])
    same = classes[:, None] == groundtruth["labels"][None, :]
    # A labelled box covered by a confident detection of its own class is fine as it is.
    covered = np.any((iou[confident] >= match_iou) & same[confident], axis=0)
    issues, flagged_boxes, missing_kept = [], set(), []
    for k in confident:
        if np.any(iou[k, ~counted] >= match_iou):
            continue  # on a difficult or crowd box: not judged, as in the metrics
        counted_iou = np.where(counted, iou[k], 0.0)
        if counted_iou.size == 0 or counted_iou.max() < loose_iou:
            if any(box_iou(boxes[k], boxes[j])[0, 0] >= match_iou for j in missing_kept):
                continue
            missing_kept.append(k)
            issues.append(("missing", k, -1, float(counted_iou.max(initial=0.0))))
            continue
        other = np.where(same[k] | covered, 0.0, counted_iou)
        own = np.where(~same[k] | covered, 0.0, counted_iou)
        j_other, j_own = int(np.argmax(other)), int(np.argmax(own))
        if other[j_other] >= match_iou and j_other not in flagged_boxes:
            issues.append(("wrong", k, j_other, float(other[j_other])))
            flagged_boxes.add(j_other)
        elif loose_iou <= own[j_own] < match_iou and j_own not in flagged_boxes:
            issues.append(("loose", k, j_own, float(own[j_own])))
            flagged_boxes.add(j_own)
    return issues


def find_label_errors(
    groundtruths: list[dict],
    detections: list[dict],
    num_classes: int,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    loose_iou: float = LOOSE_IOU,
    match_iou: float = MATCH_IOU,
) -> dict:
    """Probable missing, wrong and loose labels (see the module docstring), JSON-ready.

    Args:
      groundtruths, detections: per-image records (`tf_frcnn.evaluation._records`), absolute
        [ymin, xmin, ymax, xmax] boxes in the original image.
      num_classes: labels are 1..num_classes.
      class_names: names of labels 1..C, for the entries' "class_name"/"label_name".
      score_threshold: detections below it are never evidence.
      loose_iou, match_iou: the IoU bounds of a loose box; at `match_iou` a detection is on a box.

    Returns:
      {"score_threshold", "loose_iou", "match_iou": the settings,
       "counts": {kind: int} for kind in LABEL_ERROR_KINDS,
       "issues": [{"kind", "image_id", "score", "box" [4] (the detection's), "class",
         "class_name", "iou" (largest with a counted label box), and for wrong/loose:
         "label_index" (into the image's boxes), "label_box" [4], "label", "label_name"}],
         ranked by score, highest first}
    """
    groundtruths, by_image = checked_records(groundtruths, detections, num_classes)
    issues = []
    for g in groundtruths:
        d = by_image.get(g["image_id"])
        if d is None:
            continue
        for kind, k, j, iou in _image_issues(g, d, score_threshold, loose_iou, match_iou):
            entry = {
                "kind": kind,
                "image_id": g["image_id"],
                "score": float(d["scores"][k]),
                "box": [float(v) for v in d["boxes"][k]],
                "class": int(d["classes"][k]),
                "class_name": class_name(class_names, int(d["classes"][k])),
                "iou": round(iou, 4),
            }
            if j >= 0:
                label = int(g["labels"][j])
                entry.update(
                    label_index=int(j),
                    label_box=[float(v) for v in g["boxes"][j]],
                    label=label,
                    label_name=class_name(class_names, label),
                )
            issues.append(entry)
    issues.sort(key=lambda entry: -entry["score"])
    return {
        "score_threshold": float(score_threshold),
        "loose_iou": float(loose_iou),
        "match_iou": float(match_iou),
        "counts": {kind: sum(e["kind"] == kind for e in issues) for kind in LABEL_ERROR_KINDS},
        "issues": issues,
    }


def describe_kinds(label_errors: Mapping) -> dict[str, str]:
    """{kind: one-line meaning} with the IoU bounds `label_errors` was found with."""
    loose, match = label_errors["loose_iou"], label_errors["match_iou"]
    return {kind: text.format(loose=loose, match=match) for kind, text in KIND_DESCRIPTIONS.items()}
