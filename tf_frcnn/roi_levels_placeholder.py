"""A stand-in for ``roi.MultiLevelRoIAlign`` (issue #21, written on another branch) so the
pyramid model runs end to end: the same constructor and call and the FPN level rule, but
each level pools every ROI with ``ROIPooling`` (crop and max pool, not RoIAlign) and each ROI
keeps its level's. The lead replaces it with the real layer when merging; nothing else
imports it but ``model``."""

import keras
import tensorflow as tf

from tf_frcnn.roi import ROIPooling, ROIPoolingBuiltin


@keras.saving.register_keras_serializable(package="tf_frcnn")
class MultiLevelRoIAlign(keras.layers.Layer):
    """Call with ``(feature_maps, rois)``: the list of level maps [batch, h_l, w_l, C] for
    ``min_level`` ... ``max_level`` and rois float32 [batch, R, 4] absolute [ymin, xmin,
    ymax, xmax] in input pixels; returns [batch * R, pool_size, pool_size, C]."""

    def __init__(
        self,
        pool_size=7,
        sampling_ratio=2,
        canonical_size=224,
        canonical_level=4,
        min_level=2,
        max_level=5,
        builtin=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level
        self.min_level = min_level
        self.max_level = max_level
        self.builtin = builtin
        pooling = ROIPoolingBuiltin if builtin else ROIPooling
        self.poolings = [
            pooling(pool_size=pool_size, stride=2**level)
            for level in range(min_level, max_level + 1)
        ]

    def call(self, feature_maps, rois):
        heights = rois[..., 2] - rois[..., 0]
        widths = rois[..., 3] - rois[..., 1]
        side = tf.sqrt(tf.maximum(heights * widths, 1e-6))
        level = tf.floor(
            self.canonical_level + tf.math.log(side / self.canonical_size) / tf.math.log(2.0)
        )
        level = tf.clip_by_value(level, self.min_level, self.max_level)
        level = tf.reshape(level, [-1, 1, 1, 1])
        pooled = 0.0
        for index, pooling in enumerate(self.poolings):
            here = tf.cast(tf.equal(level, self.min_level + index), tf.float32)
            pooled += here * pooling(feature_maps[index], rois)
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            pool_size=self.pool_size,
            sampling_ratio=self.sampling_ratio,
            canonical_size=self.canonical_size,
            canonical_level=self.canonical_level,
            min_level=self.min_level,
            max_level=self.max_level,
            builtin=self.builtin,
        )
        return config
