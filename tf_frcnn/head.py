"""The Fast R-CNN detector head: region-wise layers, its loss, and detection
post-processing."""

import math

import keras
import tensorflow as tf

from tf_frcnn import boxes as box_ops
from tf_frcnn import gradients
from tf_frcnn.backbones import head_defaults


@keras.saving.register_keras_serializable(package="tf_frcnn")
class FastRCNNHead(keras.layers.Layer):
    """Region-wise fc layers on pooled ROI features, then sibling outputs: C + 1 class logits
    (index 0 is background) and class-specific deltas.

    Args:
      num_classes: C, the object classes (background excluded).
      fc_units: widths of the fc layers (Dense + ReLU, named fc6, fc7, ...; VGG16's are 4096,
        4096: ``backbones.head_defaults``).
      dropout: dropout rate after each fc layer when training.

    Call on pooled features [N, s, s, channels]; returns ``(class_logits [N, C + 1],
    box_deltas [N, C + 1, 4])``, float32 also under a mixed dtype policy
    (``tf_frcnn.precision``). Deltas are (ty, tx, th, tw) scaled by the sampler's
    ``box_stds``; row 0 (background) is unused.
    """

    def __init__(self, num_classes, fc_units=(1024, 1024), dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.fc_units = tuple(fc_units)
        self.dropout = dropout
        self.flatten = keras.layers.Flatten()
        self.fcs = [
            gradients.TrainingDense(units, activation="relu", name=f"fc{i + 6}")
            for i, units in enumerate(self.fc_units)
        ]
        self.dropouts = [keras.layers.Dropout(dropout) for _ in self.fcs]
        self.cls_score = keras.layers.Dense(
            num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="cls_score",
        )
        self.bbox_pred = keras.layers.Dense(
            4 * (num_classes + 1),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="bbox_pred",
        )

    @classmethod
    def for_backbone(
        cls, backbone, num_classes, fc_units=None, dropout=None, pool_size=None, **kwargs
    ):
        """The head on ``backbone``'s pooled features: ``fc_units`` and ``dropout`` None take
        ``backbones.head_defaults``; the backbone's ``fc_weights`` (VGG16's ImageNet fc6/fc7)
        are set when their shapes match (pooled ``pool_size``, None: the backbone's)."""
        default_units, default_dropout = head_defaults(backbone.name)
        fc_units = default_units if fc_units is None else fc_units
        head = cls(num_classes, fc_units, default_dropout if dropout is None else dropout, **kwargs)
        if backbone.fc_weights is not None:
            size = pool_size or backbone.pool_size
            channels = backbone.features.outputs[0].shape[-1]
            head.set_fc_weights(backbone.fc_weights, (None, size, size, channels))
        return head

    def build(self, input_shape):
        hidden = (input_shape[0], math.prod(input_shape[1:]))
        for fc in self.fcs:
            fc.build(hidden)
            hidden = (input_shape[0], fc.units)
        self.cls_score.build(hidden)
        self.bbox_pred.build(hidden)

    def call(self, roi_features, training=False):
        return self.logits_and_deltas(self.region_features(roi_features, training=training))

    def region_features(self, roi_features, training=False):
        """The fc layers (fc6, fc7, ...): pooled [N, s, s, channels] -> [N, D]."""
        hidden = self.flatten(roi_features)
        for fc, dropout in zip(self.fcs, self.dropouts):
            hidden = dropout(fc(hidden, training=training), training=training)
        return hidden

    def logits_and_deltas(self, hidden):
        """The sibling layers: [N, D] -> (class logits, class-specific deltas)."""
        # float32 out whatever the policy: post-processing and the loss stay float32.
        logits = tf.cast(self.cls_score(hidden), tf.float32)
        deltas = tf.reshape(
            tf.cast(self.bbox_pred(hidden), tf.float32), [-1, self.num_classes + 1, 4]
        )
        return logits, deltas

    def set_fc_weights(self, fc_weights, input_shape):
        """Set fc6, fc7, ... to ``fc_weights`` ([kernel, bias] per layer, e.g. a backbone's
        ImageNet fc layers) when every shape matches the head built on pooled features of
        ``input_shape`` [N, s, s, channels]; returns whether it did."""
        if not self.built:
            self.build(input_shape)
        shapes = [tuple(fc.kernel.shape) for fc in self.fcs]
        if shapes != [tuple(kernel.shape) for kernel, _ in fc_weights]:
            return False
        for fc, weights in zip(self.fcs, fc_weights):
            fc.set_weights(weights)
        return True

    def get_config(self):
        config = {"num_classes": self.num_classes, "fc_units": list(self.fc_units)}
        return {**super().get_config(), **config, "dropout": self.dropout}


def fast_rcnn_loss(class_logits, box_deltas, roi_labels, roi_targets, lambda_reg=1.0):
    """Fast R-CNN's multi-task loss over the sampled ROIs:
    L = Lcls(p, u) + lambda [u >= 1] Lloc(t^u, v), averaged over the valid ROIs
    (labels >= 0); Lloc is smooth L1 on the true class's deltas only.

    Args:
      class_logits: float32 [N, C + 1].
      box_deltas: float32 [N, C + 1, 4].
      roi_labels: int32 [N] (or [batch, R], flattened here), -1 = ignored.
      roi_targets: float32 [N, 4] (or [batch, R, 4]).

    Returns:
      dict with float32 scalars "detector_class" and "detector_box".
    """
    labels = tf.reshape(roi_labels, [-1])
    targets = tf.reshape(roi_targets, [-1, 4])
    valid = tf.cast(labels >= 0, tf.float32)
    foreground = tf.cast(labels > 0, tf.float32)
    n_valid = tf.maximum(tf.reduce_sum(valid), 1.0)
    log_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=class_logits
    )
    true_class_deltas = tf.gather(box_deltas, tf.maximum(labels, 0), batch_dims=1)
    box_loss = tf.reduce_sum(box_ops.smooth_l1(true_class_deltas - targets), axis=-1)
    return {
        "detector_class": tf.reduce_sum(log_loss * valid) / n_valid,
        "detector_box": lambda_reg * tf.reduce_sum(box_loss * foreground) / n_valid,
    }


def postprocess_detections(
    class_logits,
    box_deltas,
    rois,
    num_rois,
    image_shape,
    *,
    box_stds=box_ops.DETECTOR_BOX_STDS,
    nms_iou=0.3,
    score_threshold=0.05,
    max_detections=100,
):
    """Per-class NMS of the detector's outputs.

    All classes go through one non-maximum suppression with each
    class's boxes shifted to a disjoint region, which is per-class NMS exactly
    (boxes of different classes never overlap) in one op that TFLite also has.

    Args:
      class_logits: float32 [batch * R, C + 1]; box_deltas: [batch * R, C + 1, 4].
      rois: float32 [batch, R, 4] absolute; num_rois: int32 [batch] valid ROIs.
      image_shape: int32 [batch, 2] valid (height, width).

    Returns:
      dict of "detection_boxes" float32 [batch, max_detections, 4] absolute
      [ymin, xmin, ymax, xmax] in input pixels, "detection_scores" float32
      [batch, max_detections], "detection_classes" int32 [batch, max_detections]
      (1-based; 0 on padding), "num_detections" int32 [batch].
    """
    batch = tf.shape(rois)[0]
    per_image = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
    num_classes = class_logits.shape[-1] - 1
    probs = tf.reshape(tf.nn.softmax(class_logits, axis=-1)[:, 1:], [batch, per_image, num_classes])
    deltas = tf.reshape(box_deltas[:, 1:], [batch, per_image * num_classes, 4])
    anchors = tf.reshape(tf.repeat(rois, num_classes, axis=1), [batch, -1, 4])
    boxes = box_ops.clip(box_ops.decode(deltas, anchors, stds=box_stds), image_shape)
    valid_roi = tf.range(per_image)[tf.newaxis, :] < num_rois[:, tf.newaxis]
    probs = tf.where(valid_roi[..., tf.newaxis], probs, 0.0)
    scores = tf.reshape(probs, [batch, -1])
    classes = tf.tile(tf.range(1, num_classes + 1), [per_image])  # [R * C]
    extent = tf.reduce_max(tf.cast(image_shape, tf.float32)) + 1.0
    offsets = tf.cast(classes, tf.float32)[:, tf.newaxis] * extent  # [R * C, 1]

    keep, count = box_ops.batched_padded_nms(
        boxes + offsets, scores, max_detections, nms_iou, score_threshold
    )
    is_valid = tf.range(max_detections)[tf.newaxis, :] < count[:, tf.newaxis]
    return {
        "detection_boxes": tf.where(
            is_valid[..., tf.newaxis], tf.gather(boxes, keep, batch_dims=1), 0.0
        ),
        "detection_scores": tf.where(is_valid, tf.gather(scores, keep, batch_dims=1), 0.0),
        "detection_classes": tf.where(is_valid, tf.gather(classes, keep), 0),
        "num_detections": count,
    }
