"""Run a trained model over a split and evaluate it (what ``tf-frcnn eval`` does)."""

import tensorflow as tf
import keras

from tf_frcnn.evaluation.evaluator import (Evaluator, unpad_detections, unpad_groundtruths,
                                           unpad_proposals)
from tf_frcnn.proposals import ProposalLayer

RECALL_PROPOSALS = (100, 300, 1000)


def evaluate(model, config, class_names, batches, *, progress=True, num_batches=None):
    """COCO AP, VOC mAP and RPN recall of ``model`` on ``batches``.

    Args:
      model: a ``FasterRCNN``.
      config: its ``Config`` (for the proposal settings).
      class_names: names of labels 1..C.
      batches: padded batches of ``tf_frcnn.data.build_pipeline`` (not training).

    Returns:
      (metrics dict of ``Evaluator.result``, the ``Evaluator`` for plots).
    """
    layer = model.proposal_layer
    recall_layer = ProposalLayer(test_pre_nms=max(layer.test_pre_nms, max(RECALL_PROPOSALS)),
                                 test_post_nms=max(RECALL_PROPOSALS), nms_iou=layer.nms_iou,
                                 min_size=layer.min_size)

    @tf.function(reduce_retracing=True)
    def predict(images, image_shape):
        return model.infer({"images": images, "image_shape": image_shape},
                           recall_proposal_layer=recall_layer)

    evaluator = Evaluator(len(class_names), class_names, num_proposals=RECALL_PROPOSALS)
    bar = keras.utils.Progbar(num_batches, verbose=1 if progress else 0, unit_name="batch")
    for index, batch in enumerate(batches):
        out = predict(batch["images"], batch["image_shape"])
        scale = batch["scale"].numpy()[:, None, None]
        ids = batch["image_id"].numpy()
        sizes = batch["original_shape"].numpy()
        evaluator.update(
            unpad_groundtruths({"image_id": ids, "boxes": batch["boxes"].numpy() / scale,
                                "labels": batch["labels"].numpy(),
                                "difficult": batch["difficult"].numpy(),
                                "iscrowd": batch["iscrowd"].numpy(),
                                "height": sizes[:, 0], "width": sizes[:, 1]}),
            unpad_detections(out["detection_boxes"].numpy() / scale,
                             out["detection_scores"].numpy(),
                             out["detection_classes"].numpy(), out["num_detections"].numpy(),
                             ids),
            unpad_proposals(out["recall_proposals"].numpy() / scale,
                            out["num_recall_proposals"].numpy(), ids))
        bar.update(index + 1)
    return evaluator.result(), evaluator


__all__ = ["RECALL_PROPOSALS", "evaluate"]


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
