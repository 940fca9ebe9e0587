"""The feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017):
the optional neck between the backbone and the heads (docs/fpn.md).

From the backbone's stride 4 ... 32 maps C2 ... C5 (``backbones.build_backbone(pyramid=True)``):
a 1x1 lateral conv per level to ``channels``, the top-down path (x2 nearest upsampling of the
coarser level added to the lateral), a 3x3 output conv per level, no activation (Sec. 3); P6, a
stride-2 subsample of P5, for the RPN only (detectron2's ``LastLevelMaxPool``). The pyramid is
built into the features network (``pyramid_features``), so the training stages share and freeze it
as the backbone ("backbone" in ``tf_frcnn.stages``).

Level sizes: the backbone pads its input to a multiple of 32, where level l of every backbone is
exactly H / 2**l and the top-down sums line up; each output level is then cropped to
ceil(H / 2**l) x ceil(W / 2**l) of the unpadded H x W input (the cells past it see only padding).
"""

import keras
import tensorflow as tf

# The coarsest level the backbones give (stride 32); levels above it subsample it.
BACKBONE_MAX_LEVEL = 5


def level_size(side, level):
    """Cells of level ``level`` (stride 2**level) along an input side of ``side`` pixels:
    ceil(side / 2**level)."""
    return -(-side // 2**level)


def _level_side(images, axis, level):
    side = images.shape[axis]
    if side is not None:
        return level_size(side, level)
    return (tf.shape(images)[axis] + 2**level - 1) // 2**level


@keras.saving.register_keras_serializable(package="tf_frcnn")
class FeaturePyramid(keras.layers.Layer):
    """The pyramid's lateral, top-down and output layers.

    Args:
      min_level, max_level: the levels l (stride 2**l) returned; above 5 they subsample P5.
      channels: channels of every level.
      separable: depthwise-separable 3x3 output convs (Model Garden's option; cheap on CPU).

    Call with ``(feature_maps, images)``: feature_maps a list of the backbone's maps C_l
    [batch, H_p / 2**l, W_p / 2**l, C_l] for l = min_level ... min(max_level, 5), H_p x W_p the
    padded input (a multiple of 2**min(max_level, 5)); images [batch, H, W, 3], read only for
    their size. Returns the list of P_l [batch, ceil(H / 2**l), ceil(W / 2**l), channels] for
    l = min_level ... max_level, finest first.
    """

    def __init__(self, min_level=2, max_level=6, channels=256, separable=False, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= min_level <= max_level:
            raise ValueError(f"levels {min_level}..{max_level}: need 1 <= min_level <= max_level")
        self.min_level = min_level
        self.max_level = max_level
        self.channels = channels
        self.separable = separable
        self.top_level = min(max_level, BACKBONE_MAX_LEVEL)
        output_conv = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
        levels = range(min_level, self.top_level + 1)
        self.laterals = [keras.layers.Conv2D(channels, 1, name=f"lateral_p{lv}") for lv in levels]
        self.outputs = [
            output_conv(channels, 3, padding="same", name=f"output_p{lv}") for lv in levels
        ]
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")

    def build(self, feature_maps_shape, images_shape=None):
        for lateral, output, shape in zip(
            self.laterals, self.outputs, feature_maps_shape, strict=True
        ):
            lateral.build(shape)
            output.build(tuple(shape[:-1]) + (self.channels,))

    def call(self, feature_maps, images):
        if len(feature_maps) != len(self.laterals):
            raise ValueError(
                f"FeaturePyramid: {len(feature_maps)} maps for levels "
                f"{self.min_level}..{self.top_level}"
            )
        laterals = [lateral(c) for lateral, c in zip(self.laterals, feature_maps, strict=True)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            merged.insert(0, lateral + self.upsample(merged[0]))
        pyramid = [output(m) for output, m in zip(self.outputs, merged, strict=True)]
        for _ in range(self.top_level + 1, self.max_level + 1):
            pyramid.append(pyramid[-1][:, ::2, ::2, :])
        return [
            p[:, : _level_side(images, 1, level), : _level_side(images, 2, level), :]
            for level, p in zip(range(self.min_level, self.max_level + 1), pyramid, strict=True)
        ]

    def compute_output_shape(self, feature_maps_shape, images_shape):
        def side(size, level):
            return None if size is None else level_size(size, level)

        batch, height, width = images_shape[:3]
        levels = range(self.min_level, self.max_level + 1)
        return [(batch, side(height, lv), side(width, lv), self.channels) for lv in levels]

    def get_config(self):
        names = ("min_level", "max_level", "channels", "separable")
        return {**super().get_config(), **{name: getattr(self, name) for name in names}}


def pyramid_features(backbone, *, min_level=2, max_level=6, channels=256, separable=False):
    """The features network of a pyramid model: images float32 [batch, H, W, 3] RGB 0..255 ->
    the list of P_min_level ... P_max_level (``FeaturePyramid``), the backbone's layers and the
    pyramid's in one flat functional model (so ``Backbone.frozen_layers`` name its layers).

    Args:
      backbone: a ``backbones.Backbone`` built with ``pyramid=True``.

    Raises:
      ValueError: ``min_level`` finer than the backbone's finest tap.
    """
    if min_level not in backbone.levels:
        raise ValueError(
            f"min_level {min_level}: the {backbone.name} backbone gives levels "
            f"{backbone.levels[0]}..{backbone.levels[-1]}"
        )
    top = min(max_level, BACKBONE_MAX_LEVEL)
    maps = [
        output
        for level, output in zip(backbone.levels, backbone.features.outputs, strict=True)
        if min_level <= level <= top
    ]
    images = backbone.features.inputs[0]
    pyramid = FeaturePyramid(min_level, max_level, channels, separable, name="fpn")(maps, images)
    return keras.Model(images, pyramid, name=f"{backbone.name}_fpn_features")
