"""Evaluation of a detector: COCO AP (pycocotools), VOC07/VOC2010+ mAP, RPN recall, and reports.

All boxes are absolute pixel [ymin, xmin, ymax, xmax] in the original image; labels are 1-based.
Records are one dict per image (see `tf_frcnn.evaluation._records`); `unpad_*` builds them from
padded batches. Needs NumPy and pycocotools only; plots need matplotlib.
"""

from tf_frcnn.evaluation.coco import coco_metrics, yxyx_to_xywh
from tf_frcnn.evaluation.evaluator import (
    Evaluator,
    unpad_detections,
    unpad_groundtruths,
    unpad_proposals,
)
from tf_frcnn.evaluation.recall import recall_key, rpn_recall
from tf_frcnn.evaluation.report import write_metrics_json, write_report
from tf_frcnn.evaluation.report_plots import plot_loss_curves, plot_pr_curves
from tf_frcnn.evaluation.report_tables import class_name, format_table
from tf_frcnn.evaluation.voc import voc_ap, voc_metrics

__all__ = [
    "Evaluator",
    "class_name",
    "coco_metrics",
    "format_table",
    "plot_loss_curves",
    "plot_pr_curves",
    "recall_key",
    "rpn_recall",
    "unpad_detections",
    "unpad_groundtruths",
    "unpad_proposals",
    "voc_ap",
    "voc_metrics",
    "write_metrics_json",
    "write_report",
    "yxyx_to_xywh",
]
