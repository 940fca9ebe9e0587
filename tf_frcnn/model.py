"""FasterRCNN: the keras.Model that composes backbone, RPN, proposals, ROI pooling and
the Fast R-CNN head into inference. Training (which parts, which losses, whose
proposals) lives in ``tf_frcnn.training``; the model holds no schedule state."""

import dataclasses

import keras
import tensorflow as tf

from tf_frcnn.anchors import AnchorGenerator, PyramidAnchorGenerator
from tf_frcnn.backbones import STRIDE, build_backbone
from tf_frcnn.config import ConfigError, kwargs_for
from tf_frcnn.fpn import BACKBONE_MAX_LEVEL, pyramid_features
from tf_frcnn.head import FastRCNNHead, postprocess_detections
from tf_frcnn.precision import policy_scope
from tf_frcnn.proposals import ProposalLayer
from tf_frcnn.roi import MultiLevelRoIAlign, ROIPooling, ROIPoolingBuiltin
from tf_frcnn.rpn import RPNHead

_PARTS = (
    "features",
    "anchor_generator",
    "rpn_head",
    "proposal_layer",
    "roi_pooling",
    "detector_head",
)


@keras.saving.register_keras_serializable(package="tf_frcnn")
class FasterRCNN(keras.Model):
    """Faster R-CNN on a stride-16 backbone or on a feature pyramid (``tf_frcnn.fpn``).

    Args:
      features: the backbone's feature network (``Backbone.features``): RGB pixels 0..255
        [batch, H, W, 3] -> feature map [batch, h, w, channels]; for a pyramid
        (``fpn.pyramid_features``) the list of levels P_min ... P_max, with a
        ``PyramidAnchorGenerator`` and a ``MultiLevelRoIAlign`` pooling the ROIs from its
        levels (P6 is the RPN's only). "feature_map" below is then that list, and the
        anchors of ``rpn_forward`` the list of each level's.
      num_classes: C, object classes without background.
      anchor_generator, rpn_head, proposal_layer, roi_pooling, detector_head: the parts;
        defaults follow the paper.
      detection_args: keyword arguments of ``head.postprocess_detections`` (box_stds,
        nms_iou, score_threshold, max_detections).
      frozen_layers: names of ``features`` layers that stay frozen whatever a stage trains
        (``Backbone.frozen_layers``).

    Inputs: a dict with "images" float32 [batch, H, W, 3] RGB pixels 0..255 (the backbone
    normalises) and optionally "image_shape" int32 [batch, 2], the valid (height, width) of
    each image inside the padding (default: H, W).

    ``call`` returns the detections of ``head.postprocess_detections`` (absolute
    input-pixel boxes) plus "proposals" [batch, post_nms, 4] and "num_proposals" [batch].
    """

    def __init__(
        self,
        features,
        num_classes,
        *,
        anchor_generator=None,
        rpn_head=None,
        proposal_layer=None,
        roi_pooling=None,
        detector_head=None,
        detection_args=None,
        frozen_layers=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.features = features
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator or AnchorGenerator(stride=STRIDE)
        self.rpn_head = rpn_head or RPNHead(
            num_anchors=self.anchor_generator.num_anchors_per_location
        )
        self.proposal_layer = proposal_layer or ProposalLayer()
        self.roi_pooling = roi_pooling or ROIPooling(stride=self.anchor_generator.stride)
        self.detector_head = detector_head or FastRCNNHead(num_classes)
        self.detection_args = dict(detection_args or {})
        self.frozen_layers = tuple(frozen_layers)

    @property
    def pyramid(self):
        """Whether the model runs on a feature pyramid (a list of levels)."""
        return isinstance(self.anchor_generator, PyramidAnchorGenerator)

    # -- forward --------------------------------------------------------------
    @staticmethod
    def unpack(inputs):
        """(images float32, image_shape int32 [batch, 2]) of a model input."""
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

    def feature_maps(self, images, training=False):
        """The features network's output: a map, or a pyramid's list of levels (also of one
        level, which a functional model would return as a bare tensor)."""
        feature_map = self.features(images, training=training)
        if self.pyramid and not isinstance(feature_map, (list, tuple)):
            feature_map = [feature_map]
        return feature_map

    def rpn_forward(self, images, training=False):
        """Backbone + RPN: returns (feature_map, objectness_logits, box_deltas,
        anchors) with logits [batch, A, 2], deltas [batch, A, 4], anchors [A, 4]."""
        feature_map = self.feature_maps(images, training=training)
        logits, deltas = self.rpn_head(feature_map)
        anchors = self.anchor_generator(feature_map)
        return feature_map, logits, deltas, anchors

    def propose(self, images, image_shape, training_counts=False):
        """Proposals of this model's own RPN: (proposals, scores, num_proposals);
        ``training_counts`` keeps the proposal layer's training pre/post-NMS counts."""
        _, logits, deltas, anchors = self.rpn_forward(images)
        return self.proposal_layer(
            logits, deltas, anchors, image_shape, use_training_counts=training_counts
        )

    def region_outputs(self, feature_map, rois, training=False):
        """Region-wise part: ROIs [batch, R, 4] pooled from the feature map -> the
        head's (class_logits [batch * R, C + 1], box_deltas [batch * R, C + 1, 4])."""
        if self.pyramid:  # the ROIs pool from the pooling's levels, the first ones
            pooling = self.roi_pooling
            feature_map = feature_map[: pooling.max_level - pooling.min_level + 1]
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
        images, image_shape = self.unpack(inputs)
        if proposal_source is not None:
            feature_map = self.feature_maps(images, training=training)
            proposals, _, num_proposals = proposal_source(images, image_shape)
            recall_proposal_layer = None
        else:
            feature_map, logits, deltas, anchors = self.rpn_forward(images, training=training)
            proposals, _, num_proposals = self.proposal_layer(
                logits, deltas, anchors, image_shape, use_training_counts=training
            )
        class_logits, box_deltas = self.region_outputs(feature_map, proposals, training=training)
        detections = postprocess_detections(
            class_logits, box_deltas, proposals, num_proposals, image_shape, **self.detection_args
        )
        detections["proposals"] = proposals
        detections["num_proposals"] = num_proposals
        if recall_proposal_layer is not None:
            more, _, count = recall_proposal_layer(logits, deltas, anchors, image_shape)
            detections["recall_proposals"] = more
            detections["num_recall_proposals"] = count
        return detections

    # -- Keras serialisation --------------------------------------------------
    def get_config(self):
        config = {
            "name": self.name,
            "num_classes": self.num_classes,
            "detection_args": self.detection_args,
            "frozen_layers": list(self.frozen_layers),
        }
        for part in _PARTS:
            config[part] = keras.saving.serialize_keras_object(getattr(self, part))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        parts = {part: keras.saving.deserialize_keras_object(config.pop(part)) for part in _PARTS}
        return cls(parts.pop("features"), **parts, **config)

    def get_build_config(self):
        return {"image_side": 64}

    def build_from_config(self, config):
        # Every weight exists after one forward pass at any size (the graph is size-free).
        side = config["image_side"]
        self({"images": tf.zeros([1, side, side, 3])})


def build_model(config, precision=None):
    """A ``FasterRCNN`` from a ``tf_frcnn.config.Config``: the one place where
    configuration turns into layer arguments.

    ``precision`` (False, "float16" or "bfloat16"; None: ``train.mixed_precision``)
    is the dtype policy of the backbone and the two heads (see ``tf_frcnn.precision``);
    the other parts stay float32. With ``train.jit_compile`` the ROIs are pooled by
    the built-in twin (``ROIPoolingBuiltin``): XLA has no kernel for ``crop_and_resize``.
    With ``model.fpn`` the model runs on the feature pyramid (its defaults:
    ``tf_frcnn.config.PYRAMID_DEFAULTS``)."""
    m = config.model
    for key in ("anchor_scales", "anchor_ratios"):
        if getattr(m, key) == "auto":
            raise ConfigError(
                f"config key 'model.{key}' is 'auto': fit it first "
                "(tf_frcnn.data.resolve.resolve_anchors; tf-frcnn train does)"
            )
    precision = config.train.mixed_precision if precision is None else precision
    fpn = m.fpn
    if fpn is None:
        anchor_generator = AnchorGenerator(
            base_size=m.anchor_base_size,
            scales=m.anchor_scales,
            ratios=m.anchor_ratios,
            stride=STRIDE,
        )
    else:
        if fpn.max_level < fpn.min_level:
            raise ConfigError(
                f"config key 'model.fpn.max_level' = {fpn.max_level} must be >= "
                f"model.fpn.min_level = {fpn.min_level}"
            )
        anchor_generator = PyramidAnchorGenerator(
            fpn.min_level, fpn.max_level, scales=m.anchor_scales, ratios=m.anchor_ratios
        )
    with policy_scope(precision):
        backbone = build_backbone(
            m.backbone,
            m.weights,
            alpha=m.alpha,
            tiny_channels=tuple(m.tiny_channels),
            pyramid=fpn is not None,
        )
        if fpn is not None:
            try:
                features = pyramid_features(
                    backbone,
                    min_level=fpn.min_level,
                    max_level=fpn.max_level,
                    channels=fpn.channels,
                    separable=fpn.separable,
                )
            except ValueError as error:
                raise ConfigError(f"config key 'model.fpn.min_level': {error}") from None
            # VGG16's ImageNet fc6 reads conv5_3 (7 x 7 x 512), not pooled pyramid levels.
            backbone = dataclasses.replace(backbone, features=features, fc_weights=None)
        rpn_head = RPNHead(
            num_anchors=anchor_generator.num_anchors_per_location, channels=m.rpn_channels
        )
        pool_size = m.pool_size or backbone.pool_size
        detector_head = FastRCNNHead.for_backbone(
            backbone, m.num_classes, m.fc_units, m.dropout, pool_size
        )
    if fpn is None:
        pooling = ROIPoolingBuiltin if config.train.jit_compile else ROIPooling
        roi_pooling = pooling(pool_size=pool_size, stride=backbone.stride)
    else:
        roi_pooling = MultiLevelRoIAlign(
            pool_size=pool_size,
            canonical_size=fpn.roi_canonical_size,
            canonical_level=fpn.roi_canonical_level,
            min_level=fpn.min_level,
            max_level=min(fpn.max_level, BACKBONE_MAX_LEVEL),
            builtin=config.train.jit_compile,
        )
    return FasterRCNN(
        backbone.features,
        m.num_classes,
        anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        proposal_layer=ProposalLayer(**kwargs_for(ProposalLayer, config.rpn)),
        roi_pooling=roi_pooling,
        detector_head=detector_head,
        detection_args=kwargs_for(
            postprocess_detections, config.detection, box_stds=tuple(config.roi.box_stds)
        ),
        frozen_layers=backbone.frozen_layers,
    )


def builtin_pooling(pooling):
    """The built-in-ops twin of ROI pooling layer ``pooling`` (same arguments)."""
    if isinstance(pooling, ROIPooling):
        return ROIPoolingBuiltin(pool_size=pooling.pool_size, stride=pooling.stride)
    config = pooling.get_config()
    config.pop("name", None)
    return type(pooling).from_config({**config, "builtin": True})


def builtin_twin(model):
    """A ``FasterRCNN`` that shares every part and weight of ``model`` but pools ROIs with
    built-in ops only (``builtin_pooling``): for TFLite conversion, where ``CropAndResize``
    is no built-in op, and for XLA, which has no kernel for it."""
    names = (*_PARTS, "num_classes", "detection_args", "frozen_layers")
    parts = {name: getattr(model, name) for name in names}
    return FasterRCNN(**{**parts, "roi_pooling": builtin_pooling(model.roi_pooling)})
