"""FasterRCNN: the keras.Model that wires backbone, RPN, proposals, ROI
pooling and the Fast R-CNN head, with a ``train_step`` per training stage."""

import dataclasses

import keras
import tensorflow as tf

from tf_frcnn import sampling
from tf_frcnn.precision import policy_scope
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import STRIDE, build_backbone
from tf_frcnn.config import ConfigError
from tf_frcnn.head import FastRCNNHead, fast_rcnn_loss, postprocess_detections
from tf_frcnn.proposals import ProposalLayer
from tf_frcnn.roi import ROIPooling, ROIPoolingBuiltin, sample_rois
from tf_frcnn.rpn import RPNHead, anchor_targets, rpn_loss

# What each stage trains. The four alternating steps of Sec. 3.2 plus
# approximate joint training ("joint"). Backbone layers the paper keeps frozen
# (VGG16 conv1-2) stay frozen in every stage.
STAGES = {
    "rpn": ("backbone", "rpn"),
    "detector": ("backbone", "detector"),
    "rpn_finetune": ("rpn",),
    "detector_finetune": ("detector",),
    "joint": ("backbone", "rpn", "detector"),
}
RPN_LOSSES = ("rpn_objectness", "rpn_box")
DETECTOR_LOSSES = ("detector_class", "detector_box")


def watch_trainable(tape, variables):
    """Watch the variables a stage trains. A layer that was frozen when its
    variables were created (e.g. the detector head in stage 1) holds
    tf.Variables the tape would not watch by itself after it is unfrozen."""
    tape.watch([getattr(v, "value", v) for v in variables])


class FasterRCNN(keras.Model):
    """Faster R-CNN on a stride-16 backbone.

    Args:
      backbone: a ``tf_frcnn.backbones.Backbone``.
      num_classes: C, object classes without background.
      anchor_generator, rpn_head, proposal_layer, roi_pooling, detector_head:
        the parts; defaults follow the paper.
      anchor_target_args: keyword arguments of ``rpn.anchor_targets``.
      rpn_lambda: lambda of the RPN loss (10 in the paper).
      roi_sampler_args: keyword arguments of ``roi.sample_rois``.
      detection_args: keyword arguments of ``head.postprocess_detections``
        (besides ``box_stds``, which follows the sampler's).
      stage: one of ``STAGES``; what ``train_step`` trains.

    Inputs: a dict with "images" float32 [batch, H, W, 3] RGB pixels 0..255
    (the backbone normalises) and optionally "image_shape" int32 [batch, 2], the
    valid (height, width) of each image inside the padding (default: H, W).

    ``call`` returns the detections of ``head.postprocess_detections``
    (absolute input-pixel boxes) plus "proposals" [batch, post_nms, 4] and
    "num_proposals" [batch].
    """

    def __init__(self, backbone, num_classes, *, anchor_generator=None, rpn_head=None,
                 proposal_layer=None, roi_pooling=None, detector_head=None,
                 anchor_target_args=None, rpn_lambda=10.0, roi_sampler_args=None,
                 detection_args=None, stage="joint", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.features = backbone.features
        self.anchor_generator = anchor_generator or AnchorGenerator(stride=backbone.stride)
        self.rpn_head = rpn_head or RPNHead(
            num_anchors=self.anchor_generator.num_anchors_per_location)
        self.proposal_layer = proposal_layer or ProposalLayer()
        self.roi_pooling = roi_pooling or ROIPooling(pool_size=backbone.pool_size,
                                                     stride=backbone.stride)
        self.detector_head = detector_head or FastRCNNHead.for_backbone(
            backbone, num_classes, pool_size=self.roi_pooling.pool_size)
        self.anchor_target_args = dict(anchor_target_args or {})
        self.rpn_lambda = rpn_lambda
        self.roi_sampler_args = dict(roi_sampler_args or {})
        self.detection_args = dict(detection_args or {})
        self.seed = seed
        self.proposal_source = None
        self.loss_trackers = {name: keras.metrics.Mean(name=name)
                              for name in ("loss",) + RPN_LOSSES + DETECTOR_LOSSES}
        self.set_stage(stage)

    # -- stages ---------------------------------------------------------------
    def set_stage(self, stage):
        """Make trainable exactly what ``stage`` trains (see ``STAGES``)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
        self.stage = stage
        parts = STAGES[stage]
        self.backbone.set_trainable("backbone" in parts)
        self.rpn_head.trainable = "rpn" in parts
        self.detector_head.trainable = "detector" in parts
        # The stage decides which losses compute_losses builds: drop fit's
        # traced functions so the next fit/evaluate traces the new stage.
        self.train_function = self.test_function = None

    @property
    def _trains_rpn(self):
        return "rpn" in STAGES[self.stage]

    @property
    def _trains_detector(self):
        return "detector" in STAGES[self.stage]

    # -- forward --------------------------------------------------------------
    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            images = inputs["images"]
            image_shape = inputs.get("image_shape")
        else:
            images, image_shape = inputs, None
        images = tf.cast(images, tf.float32)
        if image_shape is None:
            shape = tf.shape(images)
            image_shape = tf.tile(shape[tf.newaxis, 1:3], [shape[0], 1])
        return images, tf.cast(image_shape, tf.int32)

    def rpn_forward(self, images, training=False):
        """Backbone + RPN: returns (feature_map, objectness_logits, box_deltas,
        anchors) with logits [batch, A, 2], deltas [batch, A, 4], anchors [A, 4]."""
        feature_map = self.features(images, training=training)
        logits, deltas = self.rpn_head(feature_map)
        anchors = self.anchor_generator(feature_map)
        return feature_map, logits, deltas, anchors

    def propose(self, images, image_shape, training=False):
        """Proposals of this model's own RPN: (proposals, scores, num_proposals)."""
        _, logits, deltas, anchors = self.rpn_forward(images, training=False)
        return self.proposal_layer(logits, deltas, anchors, image_shape,
                                   use_training_counts=training)

    def detect(self, feature_map, rois, training=False):
        """Region-wise part: pooled ROI features -> head outputs."""
        pooled = self.roi_pooling(feature_map, rois)
        return self.detector_head(pooled, training=training)

    def call(self, inputs, training=False):
        return self.infer(inputs, training=training)

    def infer(self, inputs, training=False, recall_proposal_layer=None, proposal_source=None):
        """The forward pass of ``call``; with ``recall_proposal_layer`` (a
        ``ProposalLayer`` keeping more boxes, for RPN recall at 1,000) it also
        returns that layer's proposals as "recall_proposals" and
        "num_recall_proposals", sharing the backbone and RPN computation.
        ``proposal_source`` (images, image_shape) -> (proposals, scores,
        num_proposals) replaces this model's RPN (stage 2 of the alternating
        schedule detects on stage 1's proposals); no recall proposals then."""
        images, image_shape = self._unpack(inputs)
        if proposal_source is not None:
            feature_map = self.features(images, training=training)
            proposals, _, num_proposals = proposal_source(images, image_shape)
            recall_proposal_layer = None
        else:
            feature_map, logits, deltas, anchors = self.rpn_forward(images, training=training)
            proposals, _, num_proposals = self.proposal_layer(
                logits, deltas, anchors, image_shape, use_training_counts=training)
        class_logits, box_deltas = self.detect(feature_map, proposals, training=training)
        detections = postprocess_detections(
            class_logits, box_deltas, proposals, num_proposals, image_shape,
            box_stds=self.roi_sampler_args.get("box_stds", (0.1, 0.1, 0.2, 0.2)),
            **self.detection_args)
        detections["proposals"] = proposals
        detections["num_proposals"] = num_proposals
        if recall_proposal_layer is not None:
            more, _, count = recall_proposal_layer(logits, deltas, anchors, image_shape)
            detections["recall_proposals"] = more
            detections["num_recall_proposals"] = count
        return detections

    # -- training -------------------------------------------------------------
    def compute_losses(self, batch, training=True, step=None):
        """The loss terms of the current stage on a batch of the input pipeline
        (dict with "images", "image_shape", "boxes" absolute [batch, M, 4],
        "labels" int32 [batch, M], 0 = padding). Returns a dict of scalars,
        "loss" being their sum.

        With ``self.seed`` set, the anchor and ROI sampling depend only on
        (seed, step), so the same step of a resumed run samples the same."""
        images, image_shape = self._unpack(batch)
        seed = None
        if self.seed is not None:
            step = tf.constant(0, tf.int64) if step is None else step
            seed = tf.stack([tf.constant(self.seed, tf.int32), tf.cast(step, tf.int32)])
        gt_boxes = tf.cast(batch["boxes"], tf.float32)
        gt_labels = tf.cast(batch["labels"], tf.int32)
        losses = {}
        if self._trains_detector and not self._trains_rpn and self.proposal_source is not None:
            # Stage 2: proposals come from stage 1's network; this RPN is idle.
            feature_map = self.features(images, training=training)
        else:
            feature_map, logits, deltas, anchors = self.rpn_forward(images, training=training)
        if self._trains_rpn:
            labels, targets = anchor_targets(anchors, gt_boxes, gt_labels, image_shape,
                                             seed=sampling.derive(seed, 0),
                                             **self.anchor_target_args)
            num_locations = tf.shape(feature_map)[1] * tf.shape(feature_map)[2]
            losses.update(rpn_loss(logits, deltas, labels, targets, num_locations,
                                   lambda_reg=self.rpn_lambda))
        if self._trains_detector:
            if self.proposal_source is not None:
                proposals, _, num_proposals = self.proposal_source(images, image_shape)
            else:
                proposals, _, num_proposals = self.proposal_layer(
                    logits, deltas, anchors, image_shape, use_training_counts=True)
            sampled = sample_rois(tf.stop_gradient(proposals), num_proposals, gt_boxes,
                                  gt_labels, seed=sampling.derive(seed, 1),
                                  **self.roi_sampler_args)
            class_logits, box_deltas = self.detect(feature_map, sampled["rois"],
                                                   training=training)
            losses.update(fast_rcnn_loss(class_logits, box_deltas, sampled["labels"],
                                         sampled["targets"]))
        losses["loss"] = tf.add_n(list(losses.values()))
        return losses

    def train_step(self, data):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            watch_trainable(tape, variables)
            losses = self.compute_losses(data, training=True, step=self.optimizer.iterations)
        gradients = tape.gradient(losses["loss"], variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._track(losses)

    def test_step(self, data):
        return self._track(self.compute_losses(data, training=False))

    def _track(self, losses):
        for name, value in losses.items():
            self.loss_trackers[name].update_state(value)
        return {name: self.loss_trackers[name].result() for name in losses}

    @property
    def metrics(self):
        return list(self.loss_trackers.values())


def build_model(config, stage="joint", precision=None):
    """A ``FasterRCNN`` from a ``tf_frcnn.config.Config``: the one place where
    configuration turns into layer arguments.

    ``precision`` (False, "float16" or "bfloat16"; None: ``train.mixed_precision``)
    is the dtype policy of the backbone and the two heads (see ``tf_frcnn.precision``);
    the other parts stay float32. With ``train.jit_compile`` the ROIs are pooled by
    ``ROIPoolingBuiltin``: XLA has no kernel for ``crop_and_resize``."""
    m, rpn, roi, det = config.model, config.rpn, config.roi, config.detection
    for key in ("anchor_scales", "anchor_ratios"):
        if getattr(m, key) == "auto":
            raise ConfigError(f"config key 'model.{key}' is 'auto': fit it first "
                              "(tf_frcnn.data.analysis.resolve_anchors; tf-frcnn train does)")
    precision = config.train.mixed_precision if precision is None else precision
    anchor_generator = AnchorGenerator(base_size=m.anchor_base_size, scales=m.anchor_scales,
                                       ratios=m.anchor_ratios, stride=STRIDE)
    with policy_scope(precision):
        backbone = build_backbone(m.backbone, m.weights, alpha=m.alpha,
                                  tiny_channels=tuple(m.tiny_channels))
        rpn_head = RPNHead(num_anchors=anchor_generator.num_anchors_per_location,
                           channels=m.rpn_channels)
        pool_size = m.pool_size or backbone.pool_size
        detector_head = FastRCNNHead.for_backbone(backbone, m.num_classes, m.fc_units,
                                                  m.dropout, pool_size)
    backbone = dataclasses.replace(backbone, fc_weights=None)  # the head holds them now
    pooling = ROIPoolingBuiltin if config.train.jit_compile else ROIPooling
    return FasterRCNN(
        backbone, m.num_classes,
        anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        proposal_layer=ProposalLayer(train_pre_nms=rpn.train_pre_nms,
                                     train_post_nms=rpn.train_post_nms,
                                     test_pre_nms=rpn.test_pre_nms,
                                     test_post_nms=rpn.test_post_nms,
                                     nms_iou=rpn.nms_iou, min_size=rpn.min_size),
        roi_pooling=pooling(pool_size=pool_size, stride=backbone.stride),
        detector_head=detector_head,
        anchor_target_args=dict(positive_iou=rpn.positive_iou, negative_iou=rpn.negative_iou,
                                batch_size=rpn.batch_size,
                                positive_fraction=rpn.positive_fraction,
                                ignore_cross_boundary=rpn.ignore_cross_boundary),
        rpn_lambda=rpn.lambda_reg,
        roi_sampler_args=dict(num_rois=roi.num_rois, fg_fraction=roi.fg_fraction,
                              fg_iou=roi.fg_iou, bg_iou_low=roi.bg_iou_low,
                              bg_iou_high=roi.bg_iou_high, fill=roi.fill,
                              box_stds=tuple(roi.box_stds)),
        detection_args=dict(nms_iou=det.nms_iou, score_threshold=det.score_threshold,
                            max_detections=det.max_detections),
        stage=stage, seed=config.train.seed)


def builtin_twin(model):
    """A ``FasterRCNN`` that shares every part and weight of ``model`` but pools ROIs with
    ``ROIPoolingBuiltin`` (same pool size and stride): for TFLite conversion, where
    ``CropAndResize`` is no built-in op, and for XLA, which has no kernel for it."""
    pooling = model.roi_pooling
    return FasterRCNN(
        model.backbone, model.num_classes,
        anchor_generator=model.anchor_generator, rpn_head=model.rpn_head,
        proposal_layer=model.proposal_layer,
        roi_pooling=ROIPoolingBuiltin(pool_size=pooling.pool_size, stride=pooling.stride),
        detector_head=model.detector_head,
        anchor_target_args=model.anchor_target_args, rpn_lambda=model.rpn_lambda,
        roi_sampler_args=model.roi_sampler_args, detection_args=model.detection_args,
        stage=model.stage, seed=model.seed)
