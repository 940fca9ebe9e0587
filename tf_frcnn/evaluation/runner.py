"""Run a trained model over a split and evaluate it (what ``tf-frcnn eval`` does)."""

import tensorflow as tf
import keras

from tf_frcnn.evaluation.evaluator import (Evaluator, unpad_detections, unpad_groundtruths,
                                           unpad_proposals)
from tf_frcnn.proposals import ProposalLayer

RECALL_PROPOSALS = (100, 300, 1000)


def batch_groundtruths(batch):
    """The ground-truth records of a padded eval batch (``build_pipeline``), boxes
    absolute [ymin, xmin, ymax, xmax] in the original image (see
    ``unpad_groundtruths``)."""
    scale = batch["scale"].numpy()[:, None, None]
    sizes = batch["original_shape"].numpy()
    return unpad_groundtruths({"image_id": batch["image_id"].numpy(),
                               "boxes": batch["boxes"].numpy() / scale,
                               "labels": batch["labels"].numpy(),
                               "difficult": batch["difficult"].numpy(),
                               "iscrowd": batch["iscrowd"].numpy(),
                               "height": sizes[:, 0], "width": sizes[:, 1]})


def recall_layer(layer, num_proposals=max(RECALL_PROPOSALS)):
    """A ``ProposalLayer`` like ``layer`` at test time that keeps ``num_proposals``
    boxes out of at least 1,000 candidates: the top 300 of its output are those
    of eval's recall@300 whatever ``num_proposals`` >= 300 is (greedy NMS keeps
    the same prefix)."""
    return ProposalLayer(test_pre_nms=max(layer.test_pre_nms, max(RECALL_PROPOSALS)),
                         test_post_nms=num_proposals, nms_iou=layer.nms_iou,
                         min_size=layer.min_size)


def inference_function(model, proposal_source=None):
    """The traced ``model.infer`` that ``evaluate`` runs: (images, image_shape) ->
    detections, with recall proposals unless ``proposal_source`` replaces the
    model's RPN (see ``FasterRCNN.infer``). Build it once to evaluate often."""
    recall = recall_layer(model.proposal_layer) if proposal_source is None else None

    @tf.function(reduce_retracing=True)
    def predict(images, image_shape):
        return model.infer({"images": images, "image_shape": image_shape},
                           recall_proposal_layer=recall, proposal_source=proposal_source)
    return predict


def evaluate(model, config, class_names, batches, *, progress=True, num_batches=None,
             predict=None):
    """COCO AP, VOC mAP and RPN recall of ``model`` on ``batches``.

    Args:
      model: a ``FasterRCNN``.
      config: its ``Config`` (for the proposal settings).
      class_names: names of labels 1..C.
      batches: padded batches of ``tf_frcnn.data.build_pipeline`` (not training).
      predict: an ``inference_function`` of ``model`` (default: a new one); without
        recall proposals, the metrics have no RPN recall.

    Returns:
      (metrics dict of ``Evaluator.result``, the ``Evaluator`` for plots).
    """
    predict = predict or inference_function(model)
    evaluator = Evaluator(len(class_names), class_names, num_proposals=RECALL_PROPOSALS)
    bar = keras.utils.Progbar(num_batches, verbose=1 if progress else 0, unit_name="batch")
    for index, batch in enumerate(batches):
        out = predict(batch["images"], batch["image_shape"])
        scale = batch["scale"].numpy()[:, None, None]
        ids = batch["image_id"].numpy()
        evaluator.update(
            batch_groundtruths(batch),
            unpad_detections(out["detection_boxes"].numpy() / scale,
                             out["detection_scores"].numpy(),
                             out["detection_classes"].numpy(), out["num_detections"].numpy(),
                             ids),
            unpad_proposals(out["recall_proposals"].numpy() / scale,
                            out["num_recall_proposals"].numpy(), ids)
            if "recall_proposals" in out else None)
        bar.update(index + 1)
    return evaluator.result(), evaluator


__all__ = ["RECALL_PROPOSALS", "batch_groundtruths", "evaluate", "inference_function",
           "recall_layer"]


def evaluate_model_dir(config, model, model_dir, split=None, progress=True, suffix="",
                       extra=None):
    """Evaluate ``model`` on ``split`` (default: the config's eval split) and
    write ``metrics.json``, ``pr_curves.png``, ``loss_curves.png`` and
    ``report.md`` into ``model_dir`` (``suffix`` goes before each extension,
    e.g. "_svd"; ``extra`` is merged into the metrics). Returns (metrics,
    report path)."""
    import os

    from tf_frcnn.evaluation.report import (plot_loss_curves, plot_pr_curves,
                                            write_metrics_json, write_report)
    from tf_frcnn.training import inputs
    from tf_frcnn.training.loop import read_history
    from tf_frcnn.training.schedule import stage_names

    split = split or config.data.eval_split
    _, class_names = inputs.source(config, split)
    batches = inputs.batches(config, split, training=False)
    metrics, evaluator = evaluate(model, config, class_names, batches, progress=progress)
    metrics["split"] = split
    metrics.update(extra or {})
    write_metrics_json(metrics, os.path.join(model_dir, f"metrics{suffix}.json"))
    images = {"Precision-recall per class (VOC, IoU 0.5)": plot_pr_curves(
        evaluator.voc_result(), class_names, os.path.join(model_dir, f"pr_curves{suffix}.png"))}
    history = {stage: read_history(os.path.join(model_dir, "logs"), stage)
               for stage in stage_names(config)}
    history = {stage: rows for stage, rows in history.items() if rows}
    if history:
        images["Training loss per stage"] = plot_loss_curves(
            history, os.path.join(model_dir, "loss_curves.png"))
    return metrics, write_report(model_dir, metrics, images, suffix=suffix)
