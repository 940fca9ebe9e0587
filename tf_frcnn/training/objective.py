"""The training objective: the loss terms of a stage on a batch. The RPN's anchor
targets and loss (Sec. 3.1.2), the ROI sampler and Fast R-CNN's loss; which of them a
stage computes, and on whose proposals, comes from its ``tf_frcnn.stages.Stage``."""

import tensorflow as tf

from tf_frcnn import matcher, sampling
from tf_frcnn.config import kwargs_for
from tf_frcnn.head import fast_rcnn_loss
from tf_frcnn.roi import sample_rois
from tf_frcnn.rpn import anchor_targets, rpn_loss

RPN_LOSSES = ("rpn_objectness", "rpn_box")
DETECTOR_LOSSES = ("detector_class", "detector_box")


def loss_names(stage):
    """The loss terms ``Objective`` returns for ``stage``, "loss" (their sum) first."""
    return (
        ("loss",)
        + (RPN_LOSSES if stage.trains_rpn else ())
        + (DETECTOR_LOSSES if stage.trains_detector else ())
    )


class Objective:
    """The losses of a ``FasterRCNN`` in a stage.

    Args:
      anchor_target_args: keyword arguments of ``rpn.anchor_targets``.
      rpn_loss_args: keyword arguments of ``rpn.rpn_loss`` (its lambda, 10 in the paper).
      roi_sampler_args: keyword arguments of ``roi.sample_rois``.
      seed: with a seed, the anchor and ROI sampling of a step depend only on (seed,
        step), so the same step of a resumed run samples the same.
      static_shapes: keep the ground truth padded to ``data.max_boxes`` for the anchor
        targets (an XLA-compiled step needs it); else the padding after the batch's last
        object is dropped first (``matcher.drop_trailing_padding``: the same targets; the
        IoUs of 80,000 anchors of a pyramid at 800x800 with 100 boxes cost 0.2 s a step).
    """

    def __init__(
        self,
        anchor_target_args=None,
        rpn_loss_args=None,
        roi_sampler_args=None,
        seed=None,
        static_shapes=False,
    ):
        self.anchor_target_args = dict(anchor_target_args or {})
        self.rpn_loss_args = dict(rpn_loss_args or {})
        self.roi_sampler_args = dict(roi_sampler_args or {})
        self.seed = seed
        self.static_shapes = static_shapes

    @classmethod
    def from_config(cls, config):
        return cls(
            anchor_target_args=kwargs_for(anchor_targets, config.rpn),
            rpn_loss_args=kwargs_for(rpn_loss, config.rpn),
            roi_sampler_args=kwargs_for(sample_rois, config.roi),
            seed=config.train.seed,
            static_shapes=config.train.jit_compile,
        )

    def __call__(self, model, batch, stage, *, step=None, proposal_source=None, training=True):
        """The loss terms of ``stage`` on a batch of the input pipeline (dict with
        "images", "image_shape", "boxes" absolute [batch, M, 4], "labels" int32
        [batch, M], 0 = padding): a dict of scalars named by ``loss_names``, "loss"
        being their sum. ``proposal_source`` (images, image_shape) -> (proposals,
        scores, num_proposals) gives the detector its proposals (stage 2 trains on
        stage 1's); without it the model's own RPN proposes."""
        images, image_shape = model.unpack(batch)
        seed = None
        if self.seed is not None:
            step = tf.constant(0, tf.int64) if step is None else step
            seed = tf.stack([tf.constant(self.seed, tf.int32), tf.cast(step, tf.int32)])
        gt_boxes = tf.cast(batch["boxes"], tf.float32)
        gt_labels = tf.cast(batch["labels"], tf.int32)
        losses = {}
        if proposal_source is not None and not stage.trains_rpn:
            feature_map = model.feature_maps(images, training=training)
        else:
            feature_map, logits, deltas, anchors = model.rpn_forward(images, training=training)
        if stage.trains_rpn:
            rpn_gt = (gt_boxes, gt_labels)
            if not self.static_shapes:
                rpn_gt = matcher.drop_trailing_padding(*rpn_gt)
            labels, targets = anchor_targets(
                anchors,
                *rpn_gt,
                image_shape,
                seed=sampling.derive(seed, 0),
                **self.anchor_target_args,
            )
            # The pyramid's box loss is normalised by the sampled anchors (rpn_loss).
            num_locations = (
                None if model.pyramid else tf.shape(feature_map)[1] * tf.shape(feature_map)[2]
            )
            losses.update(
                rpn_loss(logits, deltas, labels, targets, num_locations, **self.rpn_loss_args)
            )
        if stage.trains_detector:
            if proposal_source is not None:
                proposals, _, num_proposals = proposal_source(images, image_shape)
            else:
                proposals, _, num_proposals = model.proposal_layer(
                    logits, deltas, anchors, image_shape, use_training_counts=True
                )
            sampled = sample_rois(
                tf.stop_gradient(proposals),
                num_proposals,
                gt_boxes,
                gt_labels,
                seed=sampling.derive(seed, 1),
                **self.roi_sampler_args,
            )
            class_logits, box_deltas = model.region_outputs(
                feature_map, sampled["rois"], training=training
            )
            losses.update(
                fast_rcnn_loss(class_logits, box_deltas, sampled["labels"], sampled["targets"])
            )
        return {"loss": tf.add_n(list(losses.values())), **losses}
