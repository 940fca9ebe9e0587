"""`Evaluator`: accumulates ground truth, detections and proposals batch by batch, then reports
COCO AP, VOC mAP and RPN recall together. Also turns the model's padded batch outputs into the
per-image records the metrics take, boxes absolute pixel [ymin, xmin, ymax, xmax] in the ORIGINAL
image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tf_frcnn.evaluation._records import (
    as_detections,
    as_groundtruth,
    as_proposals,
    check_unique_ids,
    image_id_to_str,
)
from tf_frcnn.evaluation.coco import COCO_METRIC_NAMES, coco_metrics
from tf_frcnn.evaluation.errors import classify_images, confusion_matrix, error_analysis
from tf_frcnn.evaluation.recall import RECALL_PROPOSALS, rpn_recall
from tf_frcnn.evaluation.report_tables import class_name
from tf_frcnn.evaluation.sizes import COCO_BINS, ap_by_size, tercile_bins
from tf_frcnn.evaluation.thresholds import apply_thresholds, max_f1_thresholds
from tf_frcnn.evaluation.voc import voc_metrics


def unpad_groundtruths(batch: Mapping) -> list[dict]:
    """Splits a padded ground-truth batch into one record per image.

    Args:
      batch: {"image_id": [B] str/bytes, "boxes": float [B, M, 4] absolute [ymin, xmin, ymax,
        xmax], "labels": int [B, M] 1-based with 0 marking padding, "difficult": bool [B, M]
        (optional), "iscrowd": bool [B, M] (optional), "height": int [B], "width": int [B]
        (original image size)}. Tensors are accepted.

    Returns:
      B ground-truth records {"image_id", "boxes": [N, 4], "labels", "height", "width", and
      "difficult"/"iscrowd" where the batch has them}, padding removed.
    """
    batch = {key: np.asarray(value) for key, value in batch.items()}
    records = []
    for i, labels in enumerate(batch["labels"]):
        keep = labels > 0
        record = {
            key: batch[key][i][keep]
            for key in ("boxes", "labels", "difficult", "iscrowd")
            if key in batch
        }
        record["image_id"] = image_id_to_str(batch["image_id"][i])
        record["height"] = int(batch["height"][i])
        record["width"] = int(batch["width"][i])
        records.append(record)
    return records


def unpad_detections(boxes, scores, classes, num_detections, image_ids) -> list[dict]:
    """Splits the model's padded detections into one record per image.

    Args:
      boxes: float [B, K, 4] absolute [ymin, xmin, ymax, xmax] (`detection_boxes`).
      scores: float [B, K] (`detection_scores`).
      classes: int [B, K], 1-based (`detection_classes`).
      num_detections: int [B]; entries past it are padding.
      image_ids: [B] str/bytes.

    Returns:
      B detection records {"image_id", "boxes": [n, 4], "scores": [n], "classes": [n]}.
    """
    records = unpad_proposals(boxes, num_detections, image_ids)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes, np.int64)
    for i, record in enumerate(records):
        n = len(record["boxes"])
        record["scores"] = scores[i, :n]
        record["classes"] = classes[i, :n]
    return records


def unpad_proposals(boxes, num_proposals, image_ids) -> list[dict]:
    """Splits padded RPN proposals into one record per image.

    Args:
      boxes: float [B, P, 4] absolute [ymin, xmin, ymax, xmax], sorted by objectness, descending.
      num_proposals: int [B]; entries past it are padding.
      image_ids: [B] str/bytes.

    Returns:
      B proposal records {"image_id", "boxes": [n, 4]}.
    """
    counts = np.asarray(num_proposals, np.int64).reshape(-1)
    return [
        {"image_id": image_id_to_str(image_id), "boxes": image_boxes[:n]}
        for image_id, image_boxes, n in zip(
            np.asarray(image_ids).reshape(-1), np.asarray(boxes, np.float64), counts
        )
    ]


class Evaluator:
    """Accumulates per-image records over batches and computes every metric at the end.

    Usage:
      evaluator = Evaluator(num_classes=20, class_names=names)
      for batch in dataset:
          evaluator.update(groundtruths, detections, proposals)
      metrics = evaluator.result()        # JSON-ready dict
      curves = evaluator.voc_result()     # with precision/recall arrays, for `plot_pr_curves`

    Args:
      num_classes: object classes, background excluded; labels are 1..num_classes.
      class_names: names of labels 1..num_classes, as a sequence (`class_names[label - 1]`) or a
        mapping {label: name}; optional.
      iou_threshold: IoU of a VOC true positive.
      num_proposals: N values of the RPN recall.
      recall_iou_thresholds: IoU values of the RPN recall.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        iou_threshold: float = 0.5,
        num_proposals=RECALL_PROPOSALS,
        recall_iou_thresholds=(0.5, 0.7),
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.iou_threshold = float(iou_threshold)
        self.num_proposals = tuple(num_proposals)
        self.recall_iou_thresholds = tuple(recall_iou_thresholds)
        self.reset()

    def reset(self) -> None:
        """Forgets everything accumulated."""
        self._groundtruths: list[dict] = []
        self._detections: list[dict] = []
        self._proposals: list[dict] = []
        self._image_ids: set[str] = set()
        self._with_proposals: bool | None = None
        self._voc_result: dict | None = None

    @property
    def num_images(self) -> int:
        return len(self._groundtruths)

    @property
    def groundtruths(self) -> list[dict]:
        """The checked ground-truth records so far, in the order given."""
        return list(self._groundtruths)

    @property
    def proposals(self) -> list[dict]:
        """The checked proposal records so far (empty without proposals)."""
        return list(self._proposals)

    def update(
        self, groundtruths: list[dict], detections: list[dict], proposals: list[dict] | None = None
    ) -> None:
        """Adds one batch.

        Args:
          groundtruths: one record per image of the batch (see `coco_metrics`), absolute boxes.
          detections: records for images of this or an earlier batch; an image without one has none.
          proposals: RPN proposal records, or None; give them in every batch or in none.
        """
        with_proposals = proposals is not None
        if self._with_proposals is not None and with_proposals != self._with_proposals:
            raise ValueError("give proposals to Evaluator.update in every batch or in none")
        groundtruths = [as_groundtruth(g, self.num_classes) for g in groundtruths]
        detections = [as_detections(d, self.num_classes) for d in detections]
        proposals = [as_proposals(p) for p in proposals or []]
        new_ids = check_unique_ids(groundtruths)
        repeated = sorted(self._image_ids & new_ids)
        if repeated:
            raise ValueError(f"ground truth for image {repeated[0]!r} given twice")
        known = self._image_ids | new_ids
        for what, records in (("detections", detections), ("proposals", proposals)):
            for record in records:
                if record["image_id"] not in known:
                    raise ValueError(
                        f"{what} for image {record['image_id']!r}, which has no ground truth"
                    )
        self._with_proposals = with_proposals
        self._image_ids = known
        self._groundtruths += groundtruths
        self._detections += detections
        self._proposals += proposals
        self._voc_result = None

    def voc_result(self) -> dict:
        """The full `voc_metrics` result, precision-recall curves included."""
        if self._voc_result is None:
            self._voc_result = voc_metrics(
                self._groundtruths, self._detections, self.num_classes, self.iou_threshold
            )
        return self._voc_result

    def result(self) -> dict:
        """All metrics, JSON-ready (NaN where undefined).

        Returns:
          {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100" (COCO),
           "mAP_voc07", "mAP_voc" (VOC at `iou_threshold`),
           "recall@100", "recall@300", "recall@1000", "recall@300_iou0.7", ...
           (only with proposals),
           "num_images": int,
           "per_class": {label: {"name", "num_gt", "AP", "AP50", "AP_voc07", "AP_voc"}}}
        """
        coco = coco_metrics(self._groundtruths, self._detections, self.num_classes)
        voc = self.voc_result()
        metrics = {name: coco[name] for name in COCO_METRIC_NAMES}
        metrics["mAP_voc07"] = voc["mAP_voc07"]
        metrics["mAP_voc"] = voc["mAP_voc"]
        if self._with_proposals:
            counts = (self.num_proposals, self.recall_iou_thresholds)
            metrics.update(rpn_recall(self._groundtruths, self._proposals, *counts))
        metrics["num_images"] = self.num_images
        metrics["per_class"] = {
            label: {
                "name": class_name(self.class_names, label),
                "num_gt": voc["num_gt"][label],
                "AP": coco["per_class"][label]["AP"],
                "AP50": coco["per_class"][label]["AP50"],
                "AP_voc07": voc["per_class_AP_voc07"][label],
                "AP_voc": voc["per_class_AP"][label],
            }
            for label in range(1, self.num_classes + 1)
        }
        return metrics

    def operating_point(self, thresholds: Mapping, default_threshold: float) -> list[dict]:
        """The detection records with only the detections at or above their class's threshold
        ({label: float or None}; `default_threshold` where None)."""
        return apply_thresholds(self._detections, thresholds, default_threshold)

    def analysis(self, default_threshold: float = 0.5) -> dict:
        """Where the detector fails, JSON-ready (NaN where undefined):

        {"thresholds": {label: {"name", "threshold", "precision", "recall", "f1"}} (max F1,
           `thresholds.max_f1_thresholds`),
         "errors": `errors.error_analysis` at `iou_threshold` (all detections), with "name" in
           each "per_class" entry,
         "AP50_by_size": {"terciles": [...], "coco": [...]} (`sizes.ap_by_size` over the set's
           own size terciles and COCO's small/medium/large),
         "confusion_matrix": {"classes": names then "background", "matrix": [[int]] (rows: true
           class, columns: detected class), "default_threshold": float} over the detections at
           the max-F1 thresholds (`default_threshold` for a class without one)}
        """
        name = lambda label: class_name(self.class_names, label)  # noqa: E731
        thresholds = {
            label: {"name": name(label), **entry}
            for label, entry in max_f1_thresholds(self.voc_result()).items()
        }
        judged = classify_images(
            self._groundtruths, self._detections, self.num_classes, self.iou_threshold
        )
        errors = error_analysis(judged, self.num_classes)
        errors["per_class"] = {
            label: {"name": name(label), **entry} for label, entry in errors["per_class"].items()
        }
        kept = self.operating_point(
            {label: e["threshold"] for label, e in thresholds.items()}, default_threshold
        )
        matrix = confusion_matrix(self._groundtruths, kept, self.num_classes, self.iou_threshold)
        sizes = {
            key: ap_by_size(
                self._groundtruths, self._detections, self.num_classes, bins, self.iou_threshold
            )
            for key, bins in (("terciles", tercile_bins(self._groundtruths)), ("coco", COCO_BINS))
        }
        return {
            "thresholds": thresholds,
            "errors": errors,
            "AP50_by_size": sizes,
            "confusion_matrix": {
                "classes": [name(label) for label in range(1, self.num_classes + 1)]
                + ["background"],
                "matrix": matrix.tolist(),
                "default_threshold": float(default_threshold),
            },
        }
