"""Per-class score thresholds: the operating point of maximum F1 on each class's precision-recall
curve, written to `metrics.json` by `tf-frcnn eval` and applied by `tf-frcnn predict --thresholds`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np


def max_f1_thresholds(voc_result: Mapping) -> dict:
    """The score threshold of each class at which F1 = 2PR / (P + R) is largest.

    A threshold keeps the detections with score >= it, so only the last point of a run of equal
    scores is a possible cut. Of equal F1 values the highest threshold wins.

    Args:
      voc_result: the dict `voc_metrics` returns (its "precision", "recall", "scores" curves in
        descending score order, and "num_gt").

    Returns:
      {label: {"threshold", "precision", "recall", "f1"}}; all NaN for a class without ground
      truth or without a true positive (F1 is 0 at every threshold).
    """
    result = {}
    for label, scores in voc_result["scores"].items():
        precision = np.asarray(voc_result["precision"][label], np.float64)
        recall = np.asarray(voc_result["recall"][label], np.float64)
        scores = np.asarray(scores, np.float64)
        entry = dict.fromkeys(("threshold", "precision", "recall", "f1"), float("nan"))
        if voc_result["num_gt"][label] and scores.size:
            total = precision + recall
            f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
            cuts = np.flatnonzero(np.append(scores[1:] < scores[:-1], True))
            best = cuts[np.argmax(f1[cuts])]
            if f1[best] > 0:
                entry = {
                    "threshold": float(scores[best]),
                    "precision": float(precision[best]),
                    "recall": float(recall[best]),
                    "f1": float(f1[best]),
                }
        result[label] = entry
    return result


def threshold_of(thresholds: Mapping, label: int, default: float) -> float:
    """The threshold of `label` in {label: float or None/NaN}; `default` where there is none."""
    value = thresholds.get(int(label), thresholds.get(str(int(label))))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return float(default)
    return float(value)


def keep_mask(scores, classes, thresholds: Mapping, default: float) -> np.ndarray:
    """bool [K]: which detections (scores [K], 1-based classes [K]) reach their class's threshold
    in `thresholds` ({label: float or None}; `default` for a class without one)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    limits = np.array([threshold_of(thresholds, c, default) for c in classes], np.float64)
    return scores >= limits


def apply_thresholds(detections: list[dict], thresholds: Mapping, default: float) -> list[dict]:
    """Detection records with only the detections that reach their class's threshold."""
    kept = []
    for record in detections:
        keep = keep_mask(record["scores"], record["classes"], thresholds, default)
        arrays = {key: np.asarray(record[key])[keep] for key in ("scores", "classes")}
        kept.append({**record, "boxes": np.asarray(record["boxes"]).reshape(-1, 4)[keep], **arrays})
    return kept


def read_thresholds(path, class_names: Sequence[str]) -> dict:
    """{label: threshold or None} from the "thresholds" of a `metrics.json` that `tf-frcnn eval`
    wrote; its class names must be `class_names` (those of the model it is applied to).

    Raises:
      ValueError: naming the file, if it is not JSON, has no "thresholds", or its classes differ.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            metrics = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    entries = metrics.get("thresholds") if isinstance(metrics, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{path} has no 'thresholds': write it with tf-frcnn eval")
    names = {int(label): entry.get("name") for label, entry in entries.items()}
    expected = {label: name for label, name in enumerate(class_names, start=1)}
    if names != expected:
        raise ValueError(
            f"{path}: 'thresholds' are for classes {sorted(names.items())}, "
            f"the model has {sorted(expected.items())}"
        )
    return {int(label): entry.get("threshold") for label, entry in entries.items()}
