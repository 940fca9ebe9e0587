"""Backbones: the shared convolutional layers that turn an image into the stride-16 feature map.

The paper's backbone is VGG16 cut before pool5 (conv5_3, stride 16, 512 channels), shared by the RPN
and the Fast R-CNN detector. `Backbone.features` maps float32 RGB pixels 0..255 [batch, H, W, 3] to
the feature map [batch, h, w, channels]; its first layer is the backbone's normalisation, so callers
never normalise. The region-wise fc layers belong to `head.FastRCNNHead`; VGG16's ImageNet fc6/fc7
weights travel with the backbone as `Backbone.fc_weights`.

Feature-map size h for an input side H ('same' convolutions keep sizes; only strided steps count):

=========  ========================================================  =========  =========
backbone   h                                                         800x800    320x480
=========  ========================================================  =========  =========
vgg16      floor(H / 16): 'same' convs, four 2x2 max pools            50x50      20x30
resnet50   ceil(H / 16): padded 7x7/2 conv, padded 3x3/2 pool, two   50x50      20x30
           1x1/2 convs (C4 = conv4_block6_out)
mobilenet  floor(ceil(H / 2) / 8): 'same' 3x3/2 conv, then three      50x50      20x30
           bottom/right zero-padded 3x3/2 depthwise convs
tiny       ceil(H / 16): four 'same' 3x3/2 convs                      50x50      20x30
=========  ========================================================  =========  =========

All four agree with H / 16 whenever H is a multiple of 16 (the paper's 800x800 -> 50x50); for
other sizes they differ by at most one cell, which is why anchors come from the feature map's shape.

Pyramid taps (`build_backbone(..., pyramid=True)`, for `tf_frcnn.fpn`): `features` pads the input
bottom/right with black to a multiple of 32 (`PadToMultiple`), then returns the stride 4, 8, 16 and
32 maps (levels 2 to 5) of `PYRAMID_LAYERS`: on a multiple of 32 every backbone's level l is exactly
H / 2**l, so the top-down path of the pyramid adds maps of equal sizes. VGG16 has no stride-32 conv:
its level 5 is block5_pool (2x2/2 max pool of conv5_3, no new weights). `tiny` taps its stages
by stride and appends one more 3x3/2 stage (as wide as its last) for stride 32; a 2-stage tiny
starts at stride 8, so its pyramid starts at level 3.

Freezing: with pretrained weights VGG16's conv1_x/conv2_x (as in the paper) and ResNet50's
conv1/conv2_x stay at their ImageNet values, and BatchNorm layers are always frozen (inference mode:
detection trains with 1-2 images per batch). `features.trainable = True` would unfreeze them all;
`Backbone.set_trainable` keeps `Backbone.frozen_layers` frozen.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import keras
from keras import ops

from tf_frcnn import gradients
from tf_frcnn.choices import BACKBONES

# Keras Applications' "caffe" mode subtracts these from the BGR-ordered channels.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)

STRIDE = 16
POOL_SIZE = 7
# The coarsest backbone stride of the pyramid taps: their inputs are padded to a multiple of it.
PYRAMID_STRIDE = 32


def feature_size(backbone: str, side: int) -> int:
    """Feature-map cells along an input side of ``side`` pixels: the table above, for code that
    needs the anchor grid of an image without running the network."""
    if backbone == "vgg16":
        return side // STRIDE
    if backbone == "mobilenet":
        return -(-side // 2) // 8
    if backbone in BACKBONES:
        return -(-side // STRIDE)
    raise ValueError(f"unknown backbone {backbone!r} (expected one of: {', '.join(BACKBONES)})")


# Last layer of each backbone's stride-16 feature map.
_FEATURE_LAYER = {
    "vgg16": "block5_conv3",
    "resnet50": "conv4_block6_out",
    "mobilenet": "conv_pw_11_relu",
}

# The stride 4, 8, 16, 32 maps (levels 2 to 5) of each backbone, for the feature pyramid.
PYRAMID_LAYERS = {
    "vgg16": ("block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"),
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "mobilenet": ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
}

# freeze_until="default" with pretrained weights: the layers computing the stride-4 features stay
# frozen (VGG16 conv1_x/conv2_x as in the paper, ResNet50 conv1/conv2_x, MobileNet up to its first
# stride-8 block).
_DEFAULT_FREEZE_UNTIL = {
    "vgg16": "block2_pool",
    "resnet50": "conv2_block3_out",
    "mobilenet": "conv_pw_3_relu",
    "tiny": None,
}

TINY_CHANNELS = (16, 32, 64, 128)


@keras.saving.register_keras_serializable(package="tf_frcnn")
class CaffePreprocessing(keras.layers.Layer):
    """RGB pixels in 0..255 -> BGR minus the ImageNet mean, the "caffe" mode of Keras Applications.

    Numerically `keras.applications.vgg16.preprocess_input` (and resnet50's), but as a layer that
    runs on symbolic tensors, serialises, and converts to TFLite built-in ops (REVERSE_V2, SUB).

    Args:
        mean: per-channel mean in BGR order.

    Call: images float32 [..., 3] RGB 0..255 -> float32 [..., 3] BGR, mean-subtracted.
    """

    def __init__(self, mean=IMAGENET_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        return ops.flip(images, axis=-1) - ops.convert_to_tensor(
            self.mean, dtype=self.compute_dtype
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


@keras.saving.register_keras_serializable(package="tf_frcnn")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad images at the bottom and right to a multiple of ``multiple`` pixels.

    Call: images [batch, H, W, C] -> [batch, ceil(H / m) * m, ceil(W / m) * m, C]; the pixels
    keep their coordinates, so boxes and anchors need no change.
    """

    def __init__(self, multiple=PYRAMID_STRIDE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, images):
        shape = ops.shape(images)
        pads = [(-shape[axis]) % self.multiple for axis in (1, 2)]
        return ops.pad(images, [[0, 0], [0, pads[0]], [0, pads[1]], [0, 0]])

    def compute_output_shape(self, input_shape):
        def padded(side):
            return None if side is None else -(-side // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def preprocessing_layer(name: str) -> keras.layers.Layer:
    """A fresh normalisation layer for backbone `name`: RGB 0..255 in, what it was trained on out.

    vgg16, resnet50: `CaffePreprocessing` (BGR, ImageNet mean subtracted, as Keras Applications).
    mobilenet, tiny: `keras.layers.Rescaling` to [-1, 1] (Keras Applications' "tf" mode).
    """
    _check_name(name)
    if name in ("vgg16", "resnet50"):
        return CaffePreprocessing(name="preprocessing")
    return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocessing")


@dataclass(frozen=True, eq=False)
class Backbone:
    """A backbone split as Faster R-CNN uses it.

    Attributes:
        name: one of `BACKBONES`.
        features: images float32 [batch, H, W, 3] RGB 0..255 -> feature map [batch, h, w, channels].
        stride: input pixels per feature-map cell (16).
        pool_size: s, the ROI pooling output size (7).
        frozen_layers: names of layers in `features` that stay frozen whatever is trained.
        fc_weights: VGG16's ImageNet fc6, fc7 as [kernel, bias] each when the weights had them,
            else None (`FastRCNNHead.for_backbone` sets them).
        levels: with pyramid taps, the levels l (stride 2**l) of the maps `features` returns, a
            list finest first; () for the single stride-16 map.
    """

    name: str
    features: keras.Model
    stride: int
    pool_size: int
    frozen_layers: tuple = ()
    fc_weights: list | None = None
    levels: tuple = ()

    def set_trainable(self, trainable: bool) -> None:
        set_trainable(self.features, trainable, self.frozen_layers)


def set_trainable(features, trainable, frozen_layers):
    """Make a feature network trainable (or not), keeping its `frozen_layers` frozen: Keras
    propagates `trainable = True` to every sub-layer."""
    features.trainable = trainable
    for layer_name in frozen_layers:
        features.get_layer(layer_name).trainable = False


def build_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    alpha: float = 0.25,
    freeze_until: str | None = "default",
    tiny_channels=TINY_CHANNELS,
    pyramid: bool = False,
) -> Backbone:
    """Build backbone `name`.

    Args:
        name: "vgg16" (the paper's; conv5_3, 512 channels), "resnet50" (C4, conv4_block6_out,
            1024 channels), "mobilenet" (MobileNet v1 conv_pw_11_relu, 512 * alpha channels) or
            "tiny" (for tests and CPU demos, see `tiny_channels`).
        weights: None (random init); "imagenet" (Keras downloads them); or a Keras .h5 / .weights.h5
            file, loaded into the include_top=False application model before it is cut (so Keras'
            no-top files fit), or into `features` for "tiny". VGG16 also keeps ImageNet's fc1/fc2 as
            `fc_weights` from "imagenet" (the with-top file) or from a with-top legacy .h5 file.
        alpha: MobileNet width multiplier (0.25 matches the offline ImageNet file).
        freeze_until: a layer of `features`: it and every weighted layer before it are frozen.
            "default": `_DEFAULT_FREEZE_UNTIL` with pretrained weights, nothing without (frozen
            random filters only hurt). None: nothing. BatchNorm layers are frozen regardless.
        tiny_channels: "tiny" only: the channels of its 2 to 4 stages. Each later stage halves the
            resolution with a 3x3/2 conv; the first takes the rest of the stride 16, by a 3x3/2 conv
            when that is 2, else by a non-overlapping s x s / s conv ("patchify"). Three stages
            (a 4x4/4 stem) suit inputs upscaled 4x.
        pyramid: `features` pads its input to a multiple of 32 and returns the list of the
            stride 4 to 32 maps (`levels`, see the module docstring) instead of the stride-16 map.

    Raises:
        ValueError: unknown `name`, `weights` neither None, "imagenet" nor an existing .h5 file, a
            file that does not fit, or `freeze_until` naming no layer of `features`.
    """
    _check_name(name)
    weights = _check_weights(name, weights)

    images = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    padded = PadToMultiple(name="pad_to_stride")(images) if pyramid else images
    normalised = preprocessing_layer(name)(padded)
    fc_weights = None
    if name == "vgg16":
        features, fc_weights = _vgg16(images, normalised, weights, pyramid)
    elif name == "resnet50":
        application = keras.applications.ResNet50
        features = _application(application, images, normalised, weights, name, pyramid)
    elif name == "mobilenet":
        application = functools.partial(keras.applications.MobileNet, alpha=alpha)
        features = _application(application, images, normalised, weights, name, pyramid)
    else:
        features = _tiny(images, normalised, weights, tiny_channels, pyramid)
    levels = ()
    if pyramid:
        # Each output's stride on a multiple of 32: input side / output side.
        levels = tuple(int(math.log2(64 // output.shape[1])) for output in _probe(features))

    if freeze_until == "default":
        freeze_until = _DEFAULT_FREEZE_UNTIL[name] if weights is not None else None
    backbone = Backbone(
        name=name,
        features=features,
        stride=STRIDE,
        pool_size=POOL_SIZE,
        frozen_layers=_frozen_layer_names(features, freeze_until),
        fc_weights=fc_weights,
        levels=levels,
    )
    backbone.set_trainable(True)
    return backbone


def head_defaults(name: str) -> tuple:
    """(fc_units, dropout) of the detector head on backbone `name` when the config leaves them null:
    VGG16's own fc6/fc7 (4096, 4096, dropout 0.5, as the paper's VGG16), else (1024, 1024), none."""
    _check_name(name)
    return ((4096, 4096), 0.5) if name == "vgg16" else ((1024, 1024), 0.0)


def _check_name(name):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


def _check_weights(name, weights):
    if weights is None:
        return None
    if weights == "imagenet":
        if name == "tiny":
            raise ValueError(
                "weights 'imagenet': the tiny backbone has no ImageNet weights; use None or a file"
            )
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights {weights!r}: expected None, 'imagenet' or the path of a .h5 file"
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"weights {path!r}: not 'imagenet' and no such file")
    if not path.endswith((".h5", ".hdf5")):
        raise ValueError(f"weights {path!r}: expected a Keras .h5 or .weights.h5 file")
    return path


def _load_file(model, path, what):
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"weights {path!r} do not fit {what}: {error}") from error


def _outputs(model, name, pyramid):
    """The stride-16 map of application ``model``, or the list of its pyramid taps."""
    if pyramid:
        return [model.get_layer(layer).output for layer in PYRAMID_LAYERS[name]]
    return model.get_layer(_FEATURE_LAYER[name]).output


def _probe(features):
    """The outputs of ``features`` on a 64x64 input (symbolic: nothing is computed)."""
    outputs = features.compute_output_spec(keras.KerasTensor((1, 64, 64, 3)))
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


def _vgg16(images, normalised, weights, pyramid=False):
    no_top = keras.applications.VGG16(
        include_top=False, weights=None, input_tensor=normalised, input_shape=(None, None, 3)
    )
    features = keras.Model(images, _outputs(no_top, "vgg16", pyramid), name="vgg16_features")

    source = None
    if weights == "imagenet":
        source = keras.applications.VGG16(include_top=True, weights="imagenet")
    elif weights is not None:
        try:
            no_top.load_weights(weights)
        except ValueError:
            # A with-top legacy .h5 has more weighted layers than the no-top model ("Layer count
            # mismatch").
            source = keras.applications.VGG16(include_top=True, weights=None)
            _load_file(source, weights, "VGG16 (with or without top)")
    fc_weights = None
    if source is not None:
        for layer in no_top.layers:
            if layer.weights:
                layer.set_weights(source.get_layer(layer.name).get_weights())
        fc_weights = [source.get_layer(fc).get_weights() for fc in ("fc1", "fc2")]
    return gradients.with_training_convs(features), fc_weights


def _application(application, images, normalised, weights, name, pyramid=False):
    base = application(
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        input_tensor=normalised,
        input_shape=(None, None, 3),
    )
    if weights not in (None, "imagenet"):
        _load_file(base, weights, f"{name} (include_top=False)")
    return keras.Model(images, _outputs(base, name, pyramid), name=f"{name}_features")


def tiny_stem_stride(tiny_channels) -> int:
    """The first tiny stage's stride: what the later 2x stages leave of the stride 16."""
    stages = len(tiny_channels)
    if not 2 <= stages <= 4 or not all(int(c) == c and c > 0 for c in tiny_channels):
        raise ValueError(
            f"tiny_channels = {list(tiny_channels)} must be 2 to 4 positive integers "
            "(one per stage)"
        )
    return STRIDE // 2 ** (stages - 1)


def _tiny(images, normalised, weights, tiny_channels=TINY_CHANNELS, pyramid=False):
    # Downsample first, then refine at the new stride: nothing runs at full resolution.
    stem = tiny_stem_stride(tiny_channels)
    if pyramid:
        # One more stage for stride 32.
        tiny_channels = tuple(tiny_channels) + (tiny_channels[-1],)
    x = normalised
    taps = []
    for stage, channels in enumerate(tiny_channels, start=1):
        stride = stem if stage == 1 else 2
        x = keras.layers.Conv2D(
            int(channels),
            3 if stride == 2 else stride,
            strides=stride,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            name=f"stage{stage}_down",
        )(x)
        x = keras.layers.Conv2D(
            int(channels),
            3,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            name=f"stage{stage}_conv",
        )(x)
        if stem * 2 ** (stage - 1) >= 4:
            taps.append(x)
    features = keras.Model(images, taps if pyramid else x, name="tiny_features")
    if weights is not None:
        _load_file(features, weights, "the tiny backbone")
    return features


def _frozen_layer_names(features, freeze_until):
    """Weighted layers up to and including `freeze_until`, then every BatchNorm layer."""
    names = []
    if freeze_until is not None:
        layer_names = [layer.name for layer in features.layers]
        if freeze_until not in layer_names:
            raise ValueError(f"freeze_until {freeze_until!r} is not a layer of {features.name}")
        last = layer_names.index(freeze_until)
        names = [layer.name for layer in features.layers[: last + 1] if layer.weights]
    names += [
        layer.name
        for layer in features.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name not in names
    ]
    return tuple(names)
