"""Backbones: the shared convolutional layers that turn an image into the stride-16 feature map.

The paper's backbone is VGG16 cut before pool5 (conv5_3, stride 16, 512 channels); the RPN and the
Fast R-CNN detector share these conv layers, and the detector's region-wise part (fc6, fc7) runs on the
ROI-pooled features. `build_backbone` returns both halves:

- `features`: a `keras.Model` from float32 RGB pixels in 0..255 [batch, H, W, 3] (not normalised: the
  backbone's normalisation is its first layer, so callers never normalise) to the feature map
  [batch, h, w, channels].
- `head`: the region-wise layers [num_rois, pool_size, pool_size, channels] -> [num_rois, D], or None when
  the caller builds its own fc head.

Feature-map size h for an input side H ('same' convolutions keep sizes; only the strided steps count):

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

All four agree with H / 16 whenever H is a multiple of 16 (the paper's 800x800 -> 50x50 -> 22,500 anchors);
for other sizes they differ by at most one cell, which is why anchors are generated from the feature map's
actual shape.

Freezing. The paper fine-tunes VGG16 from conv3_1 up and keeps conv1_x and conv2_x at their ImageNet
values; for ResNet50 conv1 and conv2_x stay frozen likewise, and BatchNorm layers are always frozen
(inference mode, moving statistics kept) because detection trains with 1-2 images per batch. Keras
propagates `model.trainable = True` to every sub-layer, so the names of these layers are kept in
`Backbone.frozen_layers`, and `Backbone.set_trainable` re-applies them; training code should use it (or
re-apply `frozen_layers` itself) rather than setting `features.trainable` directly.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import keras
from keras import ops

BACKBONES = ("vgg16", "resnet50", "mobilenet", "tiny")

# Keras Applications' "caffe" mode subtracts these from the BGR-ordered channels.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)

STRIDE = 16
POOL_SIZE = 7


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

# freeze_until="default" with pretrained weights: the layers computing the stride-4 features stay frozen
# (VGG16 conv1_x/conv2_x as in the paper, ResNet50 conv1/conv2_x, MobileNet up to its first stride-8 block).
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

    Numerically `keras.applications.vgg16.preprocess_input` (and resnet50's), but as a layer that runs on
    symbolic tensors, serialises, and converts to TFLite built-in ops (REVERSE_V2, SUB).

    Args:
        mean: per-channel mean in BGR order.

    Call: images float32 [..., 3] RGB 0..255 -> float32 [..., 3] BGR, mean-subtracted.
    """

    def __init__(self, mean=IMAGENET_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        return ops.flip(images, axis=-1) - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


def preprocessing_layer(name: str) -> keras.layers.Layer:
    """A fresh normalisation layer for backbone `name`: RGB 0..255 in, what the backbone was trained on out.

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
        features: images float32 [batch, H, W, 3] RGB 0..255 -> feature map [batch, h, w, channels]
            (h, w: see the module docstring). Its first layer is the normalisation.
        channels: feature-map channels.
        stride: input pixels per feature-map cell (16).
        head: region-wise layers, roi_features [num_rois, pool_size, pool_size, channels] ->
            [num_rois, D] (D = head.output_shape[-1]); None when the caller builds its own fc head.
        pool_size: s, the ROI pooling output size the head expects.
        shared_layers: the layers of `features` (all but the input), shared by the RPN and the detector.
        frozen_layers: names of layers in `features` that stay frozen whatever is trained (see
            `set_trainable`).
    """

    name: str
    features: keras.Model
    channels: int
    stride: int
    head: keras.Model | None
    pool_size: int
    shared_layers: list = field(default_factory=list)
    frozen_layers: tuple = ()

    def set_trainable(self, trainable: bool) -> None:
        """Make the shared conv layers trainable (or not), keeping `frozen_layers` frozen either way."""
        self.features.trainable = trainable
        for layer_name in self.frozen_layers:
            self.features.get_layer(layer_name).trainable = False


def build_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    alpha: float = 0.25,
    freeze_until: str | None = "default",
    head_units=None,
    tiny_channels=TINY_CHANNELS,
) -> Backbone:
    """Build backbone `name` (one of `BACKBONES`).

    Args:
        name: "vgg16" (the paper's; conv5_3, 512 channels), "resnet50" (C4, conv4_block6_out, 1024
            channels), "mobilenet" (MobileNet v1 conv_pw_11_relu, 512 * alpha channels: 128 at the
            default alpha 0.25) or "tiny" (for tests and CPU demos: `tiny_channels` stages of a
            downsampling conv and a 3x3 conv, ReLU; see `tiny_channels`).
        weights: None (random init); "imagenet" (Keras downloads them: needs a connection); or the path
            of a Keras .h5 / .weights.h5 file. A file is loaded into the whole include_top=False
            application model before it is cut at the stride-16 layer, so Keras' published no-top files
            (and files saved from such a model) fit; for "tiny" it is loaded into `features`.
            VGG16: "imagenet" also initialises fc6/fc7 from ImageNet's fc1/fc2 (downloading the with-top
            file). A local file fills fc6/fc7 only when it is a with-top legacy Keras .h5 file (detected
            by the no-top model refusing it); with any other file fc6/fc7 stay random. fc6/fc7 are
            initialised only when their shapes match (head_units left at 4096, 4096).
        alpha: MobileNet width multiplier (0.25 matches the offline ImageNet file). Ignored otherwise.
        freeze_until: name of a layer in `features`: it and every layer before it are frozen. "default":
            the paper's choice when pretrained weights are loaded (vgg16: up to block2_pool, i.e. conv3_1
            and up trainable; resnet50: up to conv2_block3_out; mobilenet: up to conv_pw_3_relu; tiny:
            none) and nothing when weights is None, since frozen random filters only hurt. None: nothing.
            BatchNorm layers are frozen regardless.
        head_units: widths of the region-wise fc layers (Dense + ReLU each, named fc6, fc7, ...). None:
            the backbone's own (vgg16: 4096, 4096 with Dropout 0.5 after each, as the paper's VGG16;
            others: no head, `head` is None). An int n: two layers of n units (e.g. 1024 for a ResNet
            "2fc" head). A sequence: one layer per entry; an empty one: no head. Only VGG16's head has
            dropout.
        tiny_channels: "tiny" only: the channels of its stages, one entry per stage. The stages after
            the first halve the resolution with a 3x3/2 conv; the first downsamples by the rest of the
            stride 16 (two stages or more: 16 / 2^(n-1)), with a 3x3/2 conv when that is 2 and a
            non-overlapping s x s / s conv ("patchify") when it is s > 2. The default (16, 32, 64, 128)
            is four 3x3/2 stages; three stages (a 4x4/4 stem) suit inputs upscaled 4x, where a stem
            pixel is about one pixel of the original image.

    Raises:
        ValueError: unknown `name`, `weights` neither None, "imagenet" nor an existing .h5 file, a file
            that does not fit, or `freeze_until` naming no layer of `features`.
    """
    _check_name(name)
    weights = _check_weights(name, weights)
    units = _head_units(name, head_units)

    images = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    normalised = preprocessing_layer(name)(images)
    if name == "vgg16":
        features, channels, head = _vgg16(images, normalised, weights, units)
    elif name == "resnet50":
        features, channels = _application(keras.applications.ResNet50, images, normalised, weights, name)
        head = _fc_head(name, channels, units, dropout=0.0)
    elif name == "mobilenet":
        application = functools.partial(keras.applications.MobileNet, alpha=alpha)
        features, channels = _application(application, images, normalised, weights, name)
        head = _fc_head(name, channels, units, dropout=0.0)
    else:
        features, channels = _tiny(images, normalised, weights, tiny_channels)
        head = _fc_head(name, channels, units, dropout=0.0)

    if freeze_until == "default":
        freeze_until = _DEFAULT_FREEZE_UNTIL[name] if weights is not None else None
    frozen = _frozen_layer_names(features, freeze_until)
    backbone = Backbone(
        name=name,
        features=features,
        channels=channels,
        stride=STRIDE,
        head=head,
        pool_size=POOL_SIZE,
        shared_layers=[
            layer for layer in features.layers if not isinstance(layer, keras.layers.InputLayer)
        ],
        frozen_layers=frozen,
    )
    backbone.set_trainable(True)
    return backbone


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
        raise ValueError(f"weights {weights!r}: expected None, 'imagenet' or the path of a .h5 file")
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"weights {path!r}: not 'imagenet' and no such file")
    if not path.endswith((".h5", ".hdf5")):
        raise ValueError(f"weights {path!r}: expected a Keras .h5 or .weights.h5 file")
    return path


def _head_units(name, head_units):
    if head_units is None:
        return (4096, 4096) if name == "vgg16" else ()
    if isinstance(head_units, int):
        return (head_units, head_units)
    return tuple(int(units) for units in head_units)


def _load_file(model, path, what):
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"weights {path!r} do not fit {what}: {error}") from error


def _fc_head(name, channels, units, dropout):
    """roi_features [num_rois, s, s, channels] -> [num_rois, units[-1]], or None for no units."""
    if not units:
        return None
    roi_features = keras.Input(shape=(POOL_SIZE, POOL_SIZE, channels), name="roi_features")
    x = keras.layers.Flatten(name="flatten")(roi_features)
    for index, width in enumerate(units):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{6 + index}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"drop{6 + index}")(x)
    return keras.Model(roi_features, x, name=f"{name}_head")


def _vgg16(images, normalised, weights, units):
    no_top = keras.applications.VGG16(
        include_top=False, weights=None, input_tensor=normalised, input_shape=(None, None, 3)
    )
    features = keras.Model(images, no_top.get_layer(_FEATURE_LAYER["vgg16"]).output, name="vgg16_features")
    head = _fc_head("vgg16", 512, units, dropout=0.5)
    fc_from_imagenet = units == (4096, 4096)

    source = None
    if weights == "imagenet":
        source = keras.applications.VGG16(include_top=fc_from_imagenet, weights="imagenet")
    elif weights is not None:
        try:
            no_top.load_weights(weights)
        except ValueError:
            # A with-top legacy .h5 has more weighted layers than the no-top model ("Layer count mismatch").
            source = keras.applications.VGG16(include_top=True, weights=None)
            _load_file(source, weights, "VGG16 (with or without top)")

    if source is not None:
        for layer in no_top.layers:
            if layer.weights:
                layer.set_weights(source.get_layer(layer.name).get_weights())
        if fc_from_imagenet and head is not None and _has_layer(source, "fc1"):
            head.get_layer("fc6").set_weights(source.get_layer("fc1").get_weights())
            head.get_layer("fc7").set_weights(source.get_layer("fc2").get_weights())
    return features, 512, head


def _has_layer(model, layer_name):
    return any(layer.name == layer_name for layer in model.layers)


def _application(application, images, normalised, weights, name):
    base = application(
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        input_tensor=normalised,
        input_shape=(None, None, 3),
    )
    if weights not in (None, "imagenet"):
        _load_file(base, weights, f"{name} (include_top=False)")
    output = base.get_layer(_FEATURE_LAYER[name]).output
    return keras.Model(images, output, name=f"{name}_features"), int(output.shape[-1])


def tiny_stem_stride(tiny_channels) -> int:
    """The first tiny stage's stride: what the later 2x stages leave of the stride 16."""
    stages = len(tiny_channels)
    if not 2 <= stages <= 4 or not all(int(c) == c and c > 0 for c in tiny_channels):
        raise ValueError(
            f"tiny_channels = {list(tiny_channels)} must be 2 to 4 positive integers (one per stage)")
    return STRIDE // 2 ** (stages - 1)


def _tiny(images, normalised, weights, tiny_channels=TINY_CHANNELS):
    # Downsample first, then refine at the new stride: nothing runs at full resolution, so a
    # [2, 320, 480, 3] forward takes a few tens of milliseconds on a CPU.
    stem = tiny_stem_stride(tiny_channels)
    x = normalised
    for stage, channels in enumerate(tiny_channels, start=1):
        stride = stem if stage == 1 else 2
        x = keras.layers.Conv2D(
            int(channels), 3 if stride == 2 else stride, strides=stride, padding="same",
            activation="relu", kernel_initializer="he_normal", name=f"stage{stage}_down",
        )(x)
        x = keras.layers.Conv2D(
            int(channels), 3, padding="same", activation="relu",
            kernel_initializer="he_normal", name=f"stage{stage}_conv",
        )(x)
    features = keras.Model(images, x, name="tiny_features")
    if weights is not None:
        _load_file(features, weights, "the tiny backbone")
    return features, int(tiny_channels[-1])


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
