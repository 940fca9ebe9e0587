"""COCO-style detection metrics through pycocotools' `COCOeval`, built in memory.

Boxes are absolute pixel [ymin, xmin, ymax, xmax] in the original image; they are converted here
to COCO's [x, y, width, height]. Category ids are our 1-based labels, image ids are mapped to
integers.

Ignored ground truth: pycocotools ignores exactly the boxes with `iscrowd=1` (its `_prepare`
overwrites any "ignore" field with the crowd flag), so VOC `difficult` boxes are passed as crowd
boxes. A missed difficult box then costs nothing and a detection matched to it is neither a true
nor a false positive, as in the VOC devkit. The one difference is COCO's crowd overlap:
intersection over the DETECTION's area, not IoU, so a detection lying inside a difficult box is
ignored whatever its size.

As in COCO, only the 100 highest-scoring detections of each image count (`maxDets`), and AP is
interpolated at 101 recall points, so a perfect detector scores 1.0 up to float round-off.

Metrics that COCO leaves undefined (it reports -1: no ground truth in that area range, or in any
class) are returned as NaN rather than as a number in [0, 1].
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tf_frcnn.evaluation._records import checked_records

# The order of `COCOeval.stats` after `summarize()`.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def yxyx_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] absolute [ymin, xmin, ymax, xmax] -> [N, 4] COCO [xmin, ymin, width, height]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack(
        [boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1
    )


def _coco_from_dataset(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _build_coco_objects(groundtruths, detections, num_classes):
    image_ids = {record["image_id"]: i + 1 for i, record in enumerate(groundtruths)}
    images = [  # ids as ``image_ids`` (checked_records made them unique)
        {"id": i + 1, "file_name": g["image_id"], "height": g["height"], "width": g["width"]}
        for i, g in enumerate(groundtruths)
    ]
    categories = [{"id": label, "name": str(label)} for label in range(1, num_classes + 1)]

    def annotations(records, label_key, extras):
        """COCO annotations of records; ``extras(record)`` gives each box's further fields."""
        # Annotation ids start at 1: COCOeval stores matches as ids and reads 0 as "unmatched".
        rows = []
        for record in records:
            boxes = yxyx_to_xywh(record["boxes"]).tolist()
            for box, label, extra in zip(boxes, record[label_key].tolist(), extras(record)):
                rows.append(
                    {
                        "id": len(rows) + 1,
                        "image_id": image_ids[record["image_id"]],
                        "category_id": label,
                        "bbox": box,
                        "area": box[2] * box[3],
                        **extra,
                    }
                )
        return rows

    gt_annotations = annotations(
        groundtruths,
        "labels",
        lambda g: (
            {"iscrowd": int(ignored)} for ignored in (g["iscrowd"] | g["difficult"]).tolist()
        ),
    )
    dt_annotations = annotations(
        detections,
        "classes",
        lambda d: ({"score": score, "iscrowd": 0} for score in d["scores"].tolist()),
    )
    # Built directly rather than with `COCO.loadRes`, which fails on an empty result list.
    common = {"images": images, "categories": categories}
    coco_gt = _coco_from_dataset({**common, "annotations": gt_annotations})
    coco_dt = _coco_from_dataset({**common, "annotations": dt_annotations})
    return coco_gt, coco_dt


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the values COCO defines (it writes -1 where there is nothing); NaN if none is."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else float("nan")


def coco_metrics(groundtruths: list[dict], detections: list[dict], num_classes: int) -> dict:
    """COCO AP/AR of `detections` against `groundtruths` (the module docstring says which boxes
    are ignored).

    Args:
      groundtruths, detections: per-image records as for `voc_metrics`.
      num_classes: number of object classes, background excluded; labels are 1..num_classes.

    Returns:
      {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}: floats in [0, 1], or
      NaN where undefined; and "per_class": {label: {"AP", "AP50"}} (NaN for classes without
      ground truth).
      No detections at all gives zeros wherever there is ground truth.
    """
    groundtruths, detections_by_image = checked_records(groundtruths, detections, num_classes)
    labels = range(1, num_classes + 1)
    if not groundtruths:
        nan = float("nan")
        per_class = {label: {"AP": nan, "AP50": nan} for label in labels}
        return {**dict.fromkeys(COCO_METRIC_NAMES, nan), "per_class": per_class}

    # pycocotools prints progress on stdout; a library must not.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = _build_coco_objects(
            groundtruths, list(detections_by_image.values()), num_classes
        )
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    metrics = {
        name: float(value) if value >= 0 else float("nan")
        for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)
    }
    # precision: [iou thresholds, recall thresholds, classes, area ranges (0 = all),
    # max dets (-1 = 100)]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {
        int(label): {
            "AP": _mean_defined(precision[:, :, k]),
            "AP50": _mean_defined(precision[0, :, k]),
        }
        for k, label in enumerate(evaluator.params.catIds)
    }
    metrics["per_class"] = per_class
    return metrics
