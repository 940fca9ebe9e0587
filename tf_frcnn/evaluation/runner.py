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
