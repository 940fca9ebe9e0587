"""Run a trained model over a split and evaluate it (what ``tf-frcnn eval`` does)."""

import os
from collections import Counter

import numpy as np
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.evaluation.errors import (
    DETECTION_STATUS,
    ERROR_TYPES,
    GROUNDTRUTH_STATUS,
    classify_images,
    image_error_counts,
    select_gallery,
)
from tf_frcnn.evaluation.evaluator import (
    Evaluator,
    unpad_detections,
    unpad_groundtruths,
    unpad_proposals,
)
from tf_frcnn.evaluation.html_report import label_error_thumbnail, write_html_report
from tf_frcnn.evaluation.label_errors import find_label_errors
from tf_frcnn.evaluation.recall import RECALL_PROPOSALS
from tf_frcnn.evaluation.report import write_metrics_json, write_report
from tf_frcnn.evaluation.report_plots import (
    plot_loss_curves,
    plot_pr_curves,
    plot_rpn_recall,
    plot_validation_curves,
)
from tf_frcnn.progress import BatchProgress
from tf_frcnn.proposals import ProposalLayer
from tf_frcnn.rundir import (
    CONFIG_FILE,
    STATE_FILE,
    RunState,
    log_dir,
    read_history,
    read_validation,
)
from tf_frcnn.stages import stage_names
from tf_frcnn.visualize import STATUS_COLOURS, draw_errors

_MOST_PROPOSALS = max(RECALL_PROPOSALS)


def batch_groundtruths(batch):
    """The ground-truth records of a padded eval batch (``build_pipeline``), boxes
    absolute [ymin, xmin, ymax, xmax] in the original image (see
    ``unpad_groundtruths``)."""
    scale = batch["scale"].numpy()[:, None, None]
    sizes = batch["original_shape"].numpy()
    records = {key: batch[key].numpy() for key in ("image_id", "labels", "difficult", "iscrowd")}
    boxes = batch["boxes"].numpy() / scale
    return unpad_groundtruths(
        {**records, "boxes": boxes, "height": sizes[:, 0], "width": sizes[:, 1]}
    )


def recall_layer(layer, num_proposals=_MOST_PROPOSALS):
    """A ``ProposalLayer`` like ``layer`` at test time that keeps ``num_proposals``
    boxes out of at least 1,000 candidates: the top 300 of its output are those
    of eval's recall@300 whatever ``num_proposals`` >= 300 is (greedy NMS keeps
    the same prefix)."""
    return ProposalLayer(
        test_pre_nms=max(layer.test_pre_nms, _MOST_PROPOSALS),
        test_post_nms=num_proposals,
        nms_iou=layer.nms_iou,
        min_size=layer.min_size,
    )


def inference_function(model, proposal_source=None):
    """The traced ``model.infer`` that ``evaluate`` runs: (images, image_shape) ->
    detections, with recall proposals unless ``proposal_source`` replaces the
    model's RPN (see ``FasterRCNN.infer``). Build it once to evaluate often."""
    recall = recall_layer(model.proposal_layer) if proposal_source is None else None

    @tf.function(reduce_retracing=True)
    def predict(images, image_shape):
        return model.infer(
            {"images": images, "image_shape": image_shape},
            recall_proposal_layer=recall,
            proposal_source=proposal_source,
        )

    return predict


def evaluate(model, class_names, batches, *, progress=True, predict=None):
    """COCO AP, VOC mAP and RPN recall of ``model`` on ``batches``.

    Args:
      batches: padded batches of ``tf_frcnn.data.build_pipeline`` (not training).
      predict: an ``inference_function`` of ``model`` (default: a new one); without
        recall proposals, the metrics have no RPN recall.
      progress: ``tf_frcnn.progress``'s (False, True, "auto", "bar", "lines").

    Returns:
      (metrics dict of ``Evaluator.result``, the ``Evaluator`` for plots).
    """
    predict = predict or inference_function(model)
    evaluator = Evaluator(len(class_names), class_names, num_proposals=RECALL_PROPOSALS)
    bar = BatchProgress(progress)
    for index, batch in enumerate(batches):
        out = predict(batch["images"], batch["image_shape"])
        scale = batch["scale"].numpy()[:, None, None]
        ids = batch["image_id"].numpy()
        evaluator.update(
            batch_groundtruths(batch),
            unpad_detections(
                out["detection_boxes"].numpy() / scale,
                out["detection_scores"].numpy(),
                out["detection_classes"].numpy(),
                out["num_detections"].numpy(),
                ids,
            ),
            unpad_proposals(
                out["recall_proposals"].numpy() / scale, out["num_recall_proposals"].numpy(), ids
            )
            if "recall_proposals" in out
            else None,
        )
        bar.update(index + 1)
    bar.close()
    return evaluator.result(), evaluator


# The score threshold of a class without a max-F1 threshold (no true positive), for the confusion
# matrix and the gallery; the same as ``tf-frcnn predict --score-threshold``'s default.
DEFAULT_THRESHOLD = 0.5
GALLERY_WORST, GALLERY_BEST = 8, 4


def evaluate_model_dir(config, model, model_dir, split=None, suffix="", extra=None, progress=True):
    """Evaluate ``model`` on ``split`` (default: the config's eval split) and write the results
    into ``model_dir`` (``write_outputs``). Returns (metrics, report.md path)."""
    split = split or config.data.eval_split
    _, class_names = inputs.source(config, split)
    batches = inputs.batches(config, split, training=False)
    metrics, evaluator = evaluate(model, class_names, batches, progress=progress)
    return write_outputs(config, model_dir, split, metrics, evaluator, class_names, suffix, extra)


def write_outputs(config, model_dir, split, metrics, evaluator, class_names, suffix="", extra=None):
    """Writes what ``tf-frcnn eval`` leaves in ``model_dir`` for ``evaluate``'s results on
    ``split``: ``metrics.json`` (with the error analysis of ``Evaluator.analysis``),
    ``pr_curves.png``, ``loss_curves.png``, ``rpn_recall.png`` (with proposals),
    ``validation_curves.png`` (when the training recorded ``logs/{stage}.val.jsonl``),
    ``report.md`` and ``report.html`` (``suffix`` goes before each extension,
    e.g. "_svd"; ``extra`` is merged into the metrics). Returns (metrics, report.md path)."""
    metrics["split"] = split
    metrics.update(evaluator.analysis(DEFAULT_THRESHOLD))
    metrics.update(extra or {})
    metrics["run"] = _run_context(config, model_dir, metrics.get("weights"))
    metrics["label_errors"] = find_label_errors(
        evaluator.groundtruths, evaluator.operating_point({}, 0.0), len(class_names), class_names
    )
    write_metrics_json(metrics, os.path.join(model_dir, f"metrics{suffix}.json"))

    def path(name):
        return os.path.join(model_dir, f"{name}{suffix}.png")

    images = {
        "Precision-recall per class (VOC, IoU 0.5)": plot_pr_curves(
            evaluator.voc_result(), class_names, path("pr_curves"), metrics["thresholds"]
        )
    }
    logs = log_dir(model_dir)
    stages = stage_names(config)
    history = {stage: rows for stage in stages if (rows := read_history(logs, stage))}
    if history:
        images["Training loss per stage"] = plot_loss_curves(
            history, os.path.join(model_dir, "loss_curves.png")
        )
    if evaluator.proposals:
        images["RPN recall (paper Fig. 4)"] = plot_rpn_recall(
            evaluator.groundtruths, evaluator.proposals, path("rpn_recall"), RECALL_PROPOSALS
        )
    validation = {stage: rows for stage in stages if (rows := read_validation(logs, stage))}
    if validation:
        images["Validation during training"] = plot_validation_curves(
            validation,
            os.path.join(model_dir, "validation_curves.png"),
            selected=metrics["run"].get("best"),
        )
    report = write_report(model_dir, metrics, images, suffix=suffix)
    gallery, thumbnails = _gallery(
        config, split, evaluator, metrics["thresholds"], class_names, metrics["label_errors"]
    )
    write_html_report(
        model_dir, metrics, images, gallery, STATUS_COLOURS, suffix=suffix, thumbnails=thumbnails
    )
    return metrics, report


LABEL_ERROR_THUMBNAILS = 24


def _run_context(config, model_dir, weights):
    """The report header's facts about the run: weights, the selected validation step
    ({"stage", "step", "mAP50"} of state.json's "best", for the best weights), config path,
    model dir, and the detection score threshold the error counts go down to."""
    best = None
    if weights in (None, "best") and os.path.exists(os.path.join(model_dir, STATE_FILE)):
        best = RunState.load(model_dir).best
    return {
        "weights": weights or ("best" if best else "final"),
        "best": best,
        "config": os.path.join(model_dir, CONFIG_FILE),
        "model_dir": str(model_dir),
        "score_threshold": float(config.detection.score_threshold),
    }


def _gallery(config, split, evaluator, thresholds, class_names, label_errors):
    """The report's pictures: the images with most errors at the max-F1 thresholds, and a few
    without, and thumbnails of the first likely label errors; only those images are read again
    from the split. Returns (gallery entries, thumbnails)."""
    limits = {label: entry["threshold"] for label, entry in thresholds.items()}
    judged = classify_images(
        evaluator.groundtruths,
        evaluator.operating_point(limits, DEFAULT_THRESHOLD),
        len(class_names),
        evaluator.iou_threshold,
    )
    worst, best = select_gallery(judged, GALLERY_WORST, GALLERY_BEST)
    wanted = {
        image_id: group
        for group, ids in (("Most errors", worst), ("Best", best))
        for image_id in ids
    }
    issues = label_errors["issues"][:LABEL_ERROR_THUMBNAILS]
    records, _ = inputs.source(config, split)
    pictures = {
        image_id: record["image"].numpy()
        for record in records
        if (image_id := record["image_id"].numpy().decode("utf-8")) in wanted
        or any(issue["image_id"] == image_id for issue in issues)
    }
    thumbnails = [
        {
            "caption": f"#{rank} {issue['kind']}: {issue['image_id']}, {issue['class_name']} "
            f"{issue['score']:.2f}"
            + (f" on {issue['label_name']}" if "label_name" in issue else ""),
            "image": label_error_thumbnail(pictures[issue["image_id"]], issue),
        }
        for rank, issue in enumerate(issues, start=1)
        if issue["image_id"] in pictures
    ]
    by_id = {
        image["image_id"]: (image, errors)
        for image, errors in zip(judged, image_error_counts(judged))
    }
    gallery = []
    for image_id, group in wanted.items():
        if image_id not in pictures:
            continue
        image, errors = by_id[image_id]
        g, d = image["groundtruth"], image["detections"]
        status = [DETECTION_STATUS[s] for s in image["detection_status"]]
        gt_status = [GROUNDTRUTH_STATUS[s] for s in image["groundtruth_status"]]
        kinds = Counter(s for s in status + gt_status if s in ERROR_TYPES)
        counted = len(gt_status) - gt_status.count("ignored")
        caption = (
            f"{errors} errors ({', '.join(f'{n} {kind}' for kind, n in kinds.items())}); "
            if errors
            else "no error; "
        )
        caption += f"{gt_status.count('found')} of {counted} objects found"
        drawn = draw_errors(
            pictures[image_id],
            {"boxes": g["boxes"], "labels": g["labels"], "status": gt_status},
            {
                "boxes": d["boxes"] if d else np.zeros((0, 4)),
                "classes": d["classes"] if d else [],
                "scores": d["scores"] if d else [],
                "status": status,
            },
            class_names,
        )
        gallery.append({"group": group, "title": image_id, "caption": caption, "image": drawn})
    return gallery, thumbnails
