"""The optional "pretrain" stage (``train.stages.pretrain``): supervised pre-training of a
backbone without pretrained weights, standing in for the paper's ImageNet model.

Each cell of the stride-16 feature map is labelled with the class of the smallest
ground-truth box containing its centre, and a 1x1 conv classifier learns it with softmax
cross-entropy. On a feature pyramid every level's cells are labelled so at the level's stride
and one classifier, shared as the RPN head is, averages the levels' losses: the pyramid's
layers train with the backbone, as they will be shared in the 4-step schedule.

The classifier is thrown away; the backbone becomes the run's initial
backbone (``initial_backbone.weights.h5``) that steps 1 and 2 start from.
"""

import keras
import tensorflow as tf

from tf_frcnn.anchors import cell_centres


def cell_labels(boxes, labels, feature_shape, stride, image_shape=None):
    """The dense classification target of each feature-map cell.

    Args:
      boxes: float32 [batch, M, 4] absolute [ymin, xmin, ymax, xmax] in input pixels.
      labels: int32 [batch, M], 1-based classes; 0 marks padding.
      feature_shape: (h, w) of the feature map.
      stride: input pixels per cell; cells are centred as the anchors are
        (``anchors.cell_centres``).
      image_shape: optional int32 [batch, 2] valid (height, width); cells whose
        centre falls in the padding get -1 (ignored).

    Returns:
      int32 [batch, h, w]: the label of the smallest box containing the cell's
      centre, 0 (background) where none does, -1 in the padding.
    """
    h, w = feature_shape
    boxes = tf.cast(boxes, tf.float32)
    cy, cx = cell_centres(h, stride), cell_centres(w, stride)
    ymin, xmin, ymax, xmax = [boxes[..., i, tf.newaxis, tf.newaxis] for i in range(4)]
    inside = (
        (cy[:, tf.newaxis] >= ymin)
        & (cy[:, tf.newaxis] < ymax)
        & (cx[tf.newaxis, :] >= xmin)
        & (cx[tf.newaxis, :] < xmax)
        & (labels > 0)[..., tf.newaxis, tf.newaxis]
    )  # [batch, M, h, w]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    masked_area = tf.where(inside, area[..., tf.newaxis, tf.newaxis], float("inf"))
    smallest = tf.argmin(masked_area, axis=1, output_type=tf.int32)  # [batch, h, w]
    target = tf.where(tf.reduce_any(inside, axis=1), tf.gather(labels, smallest, batch_dims=1), 0)
    if image_shape is not None:
        image_shape = tf.cast(image_shape, tf.float32)
        valid = (cy[tf.newaxis, :, tf.newaxis] < image_shape[:, 0, tf.newaxis, tf.newaxis]) & (
            cx[tf.newaxis, tf.newaxis, :] < image_shape[:, 1, tf.newaxis, tf.newaxis]
        )
        target = tf.where(valid, target, -1)
    return tf.cast(target, tf.int32)


class BackbonePretrainer(keras.Model):
    """A backbone's feature model plus a 1x1 conv classifier over C + 1 classes,
    whose ``compute_losses`` is the ``losses_of`` a ``training.StageLoop`` runs.

    ``stride``: the feature map's, or for a pyramid's features (a list of levels) the list of
    the levels' strides, finest first."""

    def __init__(self, features, num_classes, stride, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.num_classes = num_classes
        self.strides = list(stride) if isinstance(stride, (list, tuple)) else [stride]
        self.classifier = keras.layers.Conv2D(num_classes + 1, 1, name="cell_classifier")

    def call(self, images, training=False):
        maps = self.features(images, training=training)
        if not isinstance(maps, (list, tuple)):  # one map (or a pyramid of one level)
            maps = [maps]
        return [self.classifier(feature_map) for feature_map in maps]

    def compute_losses(self, batch, step=None, training=True):
        levels = self(tf.cast(batch["images"], tf.float32), training=training)
        losses = []
        for logits, stride in zip(levels, self.strides, strict=True):
            shape = tf.shape(logits)
            size = (shape[1], shape[2])
            target = cell_labels(
                batch["boxes"], batch["labels"], size, stride, batch.get("image_shape")
            )
            valid = tf.cast(target >= 0, tf.float32)
            cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.maximum(target, 0), logits=logits
            )
            losses.append(
                tf.reduce_sum(cross_entropy * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)
            )
        loss = tf.add_n(losses) / len(losses)
        return {"pretrain_class": loss, "loss": loss}
