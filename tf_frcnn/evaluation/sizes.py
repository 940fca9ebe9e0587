"""AP50 by object size: bins from the evaluated set's own size terciles, and COCO's small / medium
/ large (area below 32^2, 32^2 to 96^2, above 96^2 pixels of the original image).

A bin's AP follows COCO's area ranges with VOC's matching and AP: boxes outside the bin are
ignored (as difficult ones are, so detections that take them count neither way), and so are the
false positives whose own area is outside the bin. Areas are of absolute pixel
[ymin, xmin, ymax, xmax] boxes in the original image.
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.evaluation._records import as_groundtruth, box_areas, concat
from tf_frcnn.evaluation.errors import GT_IGNORED, IGNORED, TRUE_POSITIVE, classify_images
from tf_frcnn.evaluation.voc import mean_over_defined, precision_recall_by_class

COCO_BINS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, np.inf))


def tercile_bins(groundtruths: list[dict]) -> tuple:
    """Three (name, low, high) area bins holding a third of the counted (not difficult, not crowd)
    boxes each: edges at the 1/3 and 2/3 quantiles of their areas; () without boxes."""
    groundtruths = [as_groundtruth(g) for g in groundtruths]
    areas = concat(
        [box_areas(g["boxes"])[~(g["difficult"] | g["iscrowd"])] for g in groundtruths], np.float64
    )
    if not areas.size:
        return ()
    low, high = np.quantile(areas, [1 / 3, 2 / 3])
    return (
        ("lower third", 0.0, float(low)),
        ("middle third", float(low), float(high)),
        ("upper third", float(high), np.inf),
    )


def ap_by_size(
    groundtruths: list[dict],
    detections: list[dict],
    num_classes: int,
    bins,
    iou_threshold: float = 0.5,
) -> list[dict]:
    """AP at `iou_threshold` of each area bin (see the module docstring).

    Args:
      groundtruths, detections: per-image records as for `voc_metrics`.
      bins: (name, low, high) triples; a box is in a bin when low <= area < high.

    Returns:
      [{"name", "low", "high" (areas; high may be inf), "num_gt": counted boxes in the bin,
        "AP50": mean AP over the classes with boxes in the bin (NaN if none)}] in the bins' order.
    """
    groundtruths = [as_groundtruth(g) for g in groundtruths]
    results = []
    for name, low, high in bins:
        restricted = []
        for g in groundtruths:
            areas = box_areas(g["boxes"])
            restricted.append({**g, "iscrowd": g["iscrowd"] | (areas < low) | (areas >= high)})
        images = classify_images(restricted, detections, num_classes, iou_threshold)
        scores, classes, true_positive, labels = [], [], [], []
        for image in images:
            g, d = image["groundtruth"], image["detections"]
            labels.append(g["labels"][image["groundtruth_status"] != GT_IGNORED])
            if d is None:
                continue
            status = image["detection_status"]
            areas = box_areas(d["boxes"])
            inside = (areas >= low) & (areas < high)
            keep = (status == TRUE_POSITIVE) | ((status != IGNORED) & inside)
            scores.append(d["scores"][keep])
            classes.append(d["classes"][keep])
            true_positive.append(status[keep] == TRUE_POSITIVE)
        labels = concat(labels, np.int64)
        num_gt = {c: int(np.sum(labels == c)) for c in range(1, num_classes + 1)}
        judged = (
            concat(scores, np.float64),
            concat(classes, np.int64),
            concat(true_positive, bool),
        )
        curves = precision_recall_by_class(*judged, num_gt, num_classes)
        results.append(
            {
                "name": name,
                "low": float(low),
                "high": float(high),
                "num_gt": int(labels.size),
                "AP50": mean_over_defined({c: v["AP"] for c, v in curves.items()}),
            }
        )
    return results
