"""The anchor generator: k = len(scales) * len(ratios) reference boxes at every
feature-map position (Faster R-CNN, Sec. 3.1.1)."""

import inspect

import keras
import numpy as np
import tensorflow as tf


def base_anchors(base_size=16, scales=(8, 16, 32), ratios=(0.5, 1.0, 2.0)):
    """The k anchors centred on the origin.

    An anchor of scale ``s`` and ratio ``r`` (= height / width) has area
    ``(base_size * s) ** 2``: base 16 with scales 8, 16, 32 gives 128^2, 256^2
    and 512^2 pixels.

    Returns:
      float32 numpy [k, 4] [ymin, xmin, ymax, xmax] relative to the centre,
      ordered ratio-major (all scales of the first ratio, then the next).
    """
    anchors = []
    for ratio in ratios:
        for scale in scales:
            side = float(base_size) * float(scale)
            height = side * np.sqrt(ratio)
            width = side / np.sqrt(ratio)
            anchors.append([-height / 2, -width / 2, height / 2, width / 2])
    return np.asarray(anchors, np.float32)


def cell_centres(size, stride):
    """float32 [size]: input-pixel centres (i + 0.5) * stride of the cells along a feature-map
    side, the centre of the stride x stride pixels each cell sees."""
    return (tf.range(size, dtype=tf.float32) + 0.5) * tf.cast(stride, tf.float32)


@keras.saving.register_keras_serializable(package="tf_frcnn")
class AnchorGenerator(keras.layers.Layer):
    """Anchors for a stride-``stride`` feature map.

    Call on a feature map float [batch, h, w, channels]; returns float32
    [h * w * k, 4] absolute [ymin, xmin, ymax, xmax] in input-image pixels,
    ordered (row, column, anchor) to match the RPN head's reshaped outputs.
    Position (i, j) is centred on ``cell_centres``. Anchors are the same for
    every image of the batch; the shape is static when h and w are.
    """

    def __init__(
        self, base_size=16, scales=(8, 16, 32), ratios=(0.5, 1.0, 2.0), stride=16, **kwargs
    ):
        super().__init__(**kwargs)
        self.base_size = base_size
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.stride = stride

    @property
    def num_anchors_per_location(self):
        return len(self.scales) * len(self.ratios)

    def call(self, feature_map):
        shape = tf.shape(feature_map)
        height = feature_map.shape[1] if feature_map.shape[1] is not None else shape[1]
        width = feature_map.shape[2] if feature_map.shape[2] is not None else shape[2]
        grid_y, grid_x = tf.meshgrid(
            cell_centres(height, self.stride), cell_centres(width, self.stride), indexing="ij"
        )
        centres = tf.stack([grid_y, grid_x, grid_y, grid_x], axis=-1)  # [h, w, 4]
        cell = tf.constant(base_anchors(self.base_size, self.scales, self.ratios))
        anchors = centres[:, :, tf.newaxis, :] + cell[tf.newaxis, tf.newaxis]
        return tf.reshape(anchors, [-1, 4])

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        n = None if h is None or w is None else h * w * self.num_anchors_per_location
        return (n, 4)

    def get_config(self):
        names = ("base_size", "scales", "ratios", "stride")
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}


# The FPN's anchors: one size per level, 8x its stride (32 px on P2 ... 512 px on P6).
PYRAMID_SCALES = (8.0,)
_SINGLE_LEVEL_SCALES = tuple(
    float(s) for s in inspect.signature(AnchorGenerator).parameters["scales"].default
)


def pyramid_levels(fpn):
    """Strides [2**min_level, ..., 2**max_level] of the anchor levels of `fpn` (anything with
    `min_level` and `max_level`, e.g. the config's model.fpn). Level l carries the anchors of
    `AnchorGenerator(base_size=2**l, scales, ratios, stride=2**l)` on its ceil(H / 2**l) x
    ceil(W / 2**l) map, so scales are multiples of each level's stride."""
    return [2**level for level in range(fpn.min_level, fpn.max_level + 1)]


def level_scales(scales, fpn):
    """The anchor scales a model uses: with a pyramid (`fpn` not None), the single-level
    default (8, 16, 32) means the pyramid's default PYRAMID_SCALES."""
    if fpn is not None and tuple(float(s) for s in scales) == _SINGLE_LEVEL_SCALES:
        return list(PYRAMID_SCALES)
    return [float(s) for s in scales]


@keras.saving.register_keras_serializable(package="tf_frcnn")
class PyramidAnchorGenerator(keras.layers.Layer):
    """Anchors on a feature pyramid: level l (stride 2**l) carries the anchors of
    ``AnchorGenerator(base_size=2**l, scales, ratios, stride=2**l)`` on its own map, so
    ``scales`` are multiples of each level's stride (8: 32 px on P2 ... 512 px on P6, FPN
    Sec. 4.1).

    Call on the list of level maps [batch, h_l, w_l, channels], finest (``min_level``)
    first; returns the list of each level's anchors float32 [h_l * w_l * k, 4] absolute
    [ymin, xmin, ymax, xmax] in input pixels, ordered as ``AnchorGenerator``'s. Their
    concatenation (P2 first) matches the RPN head's outputs on the same list.
    """

    def __init__(self, min_level=2, max_level=6, scales=(8.0,), ratios=(0.5, 1.0, 2.0), **kwargs):
        super().__init__(**kwargs)
        self.min_level = min_level
        self.max_level = max_level
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.levels = [
            AnchorGenerator(2**level, self.scales, self.ratios, stride=2**level)
            for level in range(min_level, max_level + 1)
        ]

    @property
    def num_anchors_per_location(self):
        return len(self.scales) * len(self.ratios)

    def build(self, input_shape):
        for level, shape in zip(self.levels, input_shape):
            level.build(shape)

    def call(self, feature_maps):
        return [level(feature_map) for level, feature_map in zip(self.levels, feature_maps)]

    def compute_output_shape(self, input_shape):
        return [level.compute_output_shape(shape) for level, shape in zip(self.levels, input_shape)]

    def get_config(self):
        names = ("min_level", "max_level", "scales", "ratios")
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}
