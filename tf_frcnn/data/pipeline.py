"""The `tf.data` input pipeline: records -> (augmented,) resized, flipped, padded batches.

Pixel values stay in 0..255 RGB (float32). Per-backbone normalisation (VGG mean subtraction,
MobileNet's [-1, 1], ...) happens inside the model, so training and the exported SavedModel,
which receives raw uint8 images, share one code path.

Boxes leave the pipeline in ABSOLUTE pixel [ymin, xmin, ymax, xmax] of the resized image, the
library's internal convention: record boxes (normalised) times the resized (height, width).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tf_frcnn.config import AugmentConfig, DataConfig
from tf_frcnn.data import augment as aug
from tf_frcnn.data.records import DataWarning


def resize_image(image, min_size: int, max_size: int | None = None):
    """Resizes so the shorter side is `min_size` and the longer at most `max_size`, keeping aspect.

    Dynamic shapes, so export can call it in a `tf.function` on any size (`keras.layers.Resizing`
    resizes to one fixed size). Bilinear without antialiasing, like the reference code's
    cv2.resize, which also keeps the op a TFLite built-in (antialiased resize is a Flex op).

    Args:
      image: [H, W, C] or [batch, H, W, C], pixel values in 0..255, any real dtype (not
        rescaled; the result is rounded to whole values).
      min_size: target length of the shorter side, pixels.
      max_size: cap on the longer side, pixels; None for no cap.
    Returns:
      (resized float32 [round(H * scale), round(W * scale), C] (batch dim kept),
       scale float32 scalar, the factor applied to both sides).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = resize_scale(tf.stack([shape[-3], shape[-2]]), min_size, max_size)
    new_size = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), 1)
    resized = tf.image.resize(
        tf.cast(image, tf.float32), new_size, method="bilinear", antialias=False
    )
    # Whole pixel values, as in the uint8 canvas a TFLite model is given after the same resize
    # on the host, so training, eval, the SavedModel and TFLite see the same pixels.
    return tf.round(resized), scale


def resize_scale(image_shape, min_size, max_size=None):
    """The factor `resize_image` applies to an image of `image_shape` (height, width) [2]:
    float32 scalar, `min_size` over the shorter side, capped so the longer is <= `max_size`."""
    height, width = tf.unstack(tf.cast(image_shape, tf.float32))
    scale = tf.cast(min_size, tf.float32) / tf.minimum(height, width)
    if max_size is not None:
        scale = tf.minimum(scale, tf.cast(max_size, tf.float32) / tf.maximum(height, width))
    return scale


def flip_boxes_left_right(boxes, width):
    """Mirrors absolute [ymin, xmin, ymax, xmax] boxes [..., 4] in an image `width` pixels wide."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)


@dataclass(frozen=True)
class PipelineOptions:
    """What `build_pipeline` does to each example and batch; set once (from a config:
    `tf_frcnn.data.inputs.pipeline_options`). Sizes default to `DataConfig`'s.

    Fields:
      training: shuffles (buffer `shuffle_buffer`), flips by default and drops the last
        incomplete batch by default.
      batch_size: examples per batch.
      min_size, max_size: see `resize_image`.
      pad_to: (height, width) every image is padded to; must be at least the resized size.
      max_boxes: rows of the padded box tensors.
      flip: random horizontal flip; None: `training`.
      seed: makes shuffling and flips reproducible; None draws fresh randomness.
      drop_difficult, drop_crowd: remove VOC difficult / COCO crowd objects.
      drop_remainder: drop a last incomplete batch; None: `training`.
      augment: None, or a `tf_frcnn.config.AugmentConfig` (`tf_frcnn.data.augment`), seeded
        like the flips; its zeros / None turn a step off.
    """

    training: bool
    batch_size: int
    min_size: int = DataConfig.min_size
    max_size: int | None = DataConfig.max_size
    pad_to: tuple | None = None
    max_boxes: int = DataConfig.max_boxes
    flip: bool | None = None
    shuffle_buffer: int = 256
    seed: int | None = None
    drop_difficult: bool = False
    drop_crowd: bool = False
    drop_remainder: bool | None = None
    augment: AugmentConfig | None = None

    @property
    def flips(self) -> bool:
        return self.training if self.flip is None else self.flip

    @property
    def jitter(self) -> dict:
        """The colour jitter's keyword arguments; empty when it is off."""
        a = self.augment
        jitter = {
            k: getattr(a, k) if a is not None else 0.0
            for k in ("brightness", "contrast", "saturation", "hue")
        }
        return jitter if any(jitter.values()) else {}


def build_pipeline(
    dataset: tf.data.Dataset, options: PipelineOptions | None = None, **fields
) -> tf.data.Dataset:
    """Batches of detector inputs from a dataset of records (see `tf_frcnn.data.records`).

    Per example (`prepare_example`): drop difficult / crowd objects (optional), crop, resize
    (`resize_image`, the shorter side drawn from `augment.scales` when given), flip with
    probability 1/2, jitter colours, keep the first `max_boxes` objects (one `DataWarning` per
    pipeline when there are more) padded to `max_boxes` rows. Images are zero-padded
    bottom/right to `pad_to` (a static shape, so a training graph traces once), else to the
    batch's largest. Does not repeat.

    Args:
      dataset: records (`tf_frcnn.data.records`).
      options: a `PipelineOptions`; `fields` are its fields, replacing those of `options`
        when both are given.
    Returns:
      tf.data.Dataset of {
        "images":         float32 [B, Hp, Wp, 3] RGB in 0..255, zero padding bottom/right,
        "image_shape":    int32   [B, 2] valid (height, width) after resizing, before padding,
        "boxes":          float32 [B, max_boxes, 4] absolute pixel [ymin, xmin, ymax, xmax] in
                          the resized image; padding rows are zeros,
        "labels":         int32   [B, max_boxes] 1-based, 0 for padding,
        "difficult":      bool    [B, max_boxes],
        "iscrowd":        bool    [B, max_boxes],
        "scale":          float32 [B] resize factor (resized = original * scale; after a
                          random crop, of the cropped image),
        "original_shape": int32   [B, 2] (height, width) of the record's image,
        "image_id":       string  [B]}.
    """
    o = PipelineOptions(**fields) if options is None else dataclasses.replace(options, **fields)
    if o.training and o.shuffle_buffer:
        dataset = dataset.shuffle(o.shuffle_buffer, seed=o.seed, reshuffle_each_iteration=True)
    # One random integer per example, from a stream that is fixed by `seed` and differs per
    # epoch; it keys the flip and the augmentation so results do not depend on the order
    # parallel calls finish.
    randoms = tf.data.Dataset.random(seed=o.seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, randoms)
    warn = TruncationWarner(o.max_boxes)
    dataset = dataset.map(
        lambda record, random_value: prepare_example(record, random_value, o, warn),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    drop_remainder = o.training if o.drop_remainder is None else o.drop_remainder
    dataset = dataset.padded_batch(o.batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def prepare_example(record, random_value, options: PipelineOptions, warn):
    """One record -> one example of `build_pipeline`'s batches (before batching);
    `random_value` int64 scalar keys its random draws, `warn` a `TruncationWarner`."""
    original_shape = tf.shape(record["image"])[:2]
    image, objects = crop(record["image"], kept_objects(record, options), random_value, options)
    image, scale, objects["boxes"] = resize_flip_jitter(
        image, objects["boxes"], random_value, options
    )
    image_shape = tf.shape(image)[:2]
    return {
        "images": pad_image(image, image_shape, options.pad_to),
        "image_shape": image_shape,
        **pad_objects(objects, record["image_id"], options.max_boxes, warn),
        "scale": scale,
        "original_shape": original_shape,
        "image_id": record["image_id"],
    }


def kept_objects(record, options: PipelineOptions):
    """The record's boxes, labels, difficult and iscrowd without the objects the options
    drop (difficult, crowd)."""
    keep = tf.ones_like(record["labels"], dtype=tf.bool)
    if options.drop_difficult:
        keep &= ~record["difficult"]
    if options.drop_crowd:
        keep &= ~record["iscrowd"]
    return {
        key: tf.boolean_mask(record[key], keep)
        for key in ("boxes", "labels", "difficult", "iscrowd")
    }


def crop(image, objects, random_value, options: PipelineOptions):
    """`augment.random_crop` with the options' probability (none when it is 0)."""
    a = options.augment
    if a is None or not a.crop_probability:
        return image, objects
    return aug.random_crop(
        image,
        objects,
        tf.stack([random_value, 1]),
        probability=a.crop_probability,
        min_crop=a.min_crop,
        min_visible=a.min_visible,
    )


def resize_flip_jitter(image, boxes, random_value, options: PipelineOptions):
    """Resizes (shorter side `min_size` or drawn from `augment.scales`), flips with
    probability 1/2 (`flips`) and jitters colours.

    Args:
      image: [H, W, 3] record image, 0..255; boxes: float32 [N, 4] normalised
        [ymin, xmin, ymax, xmax].
    Returns:
      (float32 [h, w, 3] image, scale float32 scalar, float32 [N, 4] absolute pixel boxes of it).
    """
    scales = options.augment.scales if options.augment is not None else None
    shorter = (
        aug.draw_scale(list(scales), tf.stack([random_value, 2])) if scales else options.min_size
    )
    jitter, jitter_seed = options.jitter, tf.stack([random_value, 3])
    if jitter:
        # Colour jitter is pointwise (contrast uses the mean), so it is applied at the
        # smaller of the two resolutions: the same change for less work.
        enlarging = resize_scale(tf.shape(image)[:2], shorter, options.max_size) > 1.0
        image = tf.cast(image, tf.float32)
        image = tf.cond(
            enlarging, lambda: aug.color_jitter(image, jitter_seed, **jitter), lambda: image
        )
    image, scale = resize_image(image, shorter, options.max_size)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    boxes = boxes * tf.concat([size, size], axis=0)
    if options.flips:
        # Keras' RandomFlip draws from a stateful seed generator, whose order under a
        # parallel map is not reproducible; a stateless draw keyed by a seeded stream is.
        flipped = tf.random.stateless_uniform([], seed=tf.stack([random_value, 0])) < 0.5
        image = tf.cond(flipped, lambda: tf.image.flip_left_right(image), lambda: image)
        boxes = tf.cond(flipped, lambda: flip_boxes_left_right(boxes, size[1]), lambda: boxes)
    if jitter:
        image = tf.cond(
            enlarging, lambda: image, lambda: aug.color_jitter(image, jitter_seed, **jitter)
        )
    return image, scale, boxes


class TruncationWarner:
    """Warns (a `DataWarning`) the first time an image has more than `max_boxes` objects;
    called through `tf.numpy_function`, once per pipeline."""

    def __init__(self, max_boxes: int):
        self.max_boxes = max_boxes
        self.warned = False

    def __call__(self, image_id, count):
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"image {image_id.decode()} has {count} objects, more than "
                f"max_boxes={self.max_boxes}; keeping the first ones (further images with too "
                "many objects are not reported)",
                DataWarning,
                stacklevel=2,
            )
        return np.bool_(True)


def pad_objects(objects, image_id, max_boxes: int, warn):
    """The first `max_boxes` rows of each object tensor [N, ...] of `objects`, zero-padded to
    exactly `max_boxes` rows (a static shape); calls `warn` when N is above `max_boxes`."""
    count = tf.shape(objects["boxes"])[0]
    reported = tf.cond(
        count > max_boxes,
        lambda: tf.numpy_function(warn, [image_id, count], tf.bool),
        lambda: tf.constant(False),
    )
    with tf.control_dependencies([reported]):
        padding = tf.maximum(max_boxes - count, 0)

    def pad(values):
        inner = values.shape[1:]
        values = tf.pad(values[:max_boxes], [[0, padding]] + [[0, 0]] * len(inner))
        return tf.ensure_shape(values, [max_boxes, *inner])

    return {key: pad(values) for key, values in objects.items()}


def pad_image(image, image_shape, pad_to):
    """Zero-pads `image` bottom/right to `pad_to` (height, width); None: unchanged (the batch
    pads to its largest). Fails when the image is larger than `pad_to`."""
    if pad_to is None:
        return image
    pad_height, pad_width = pad_to
    check = tf.debugging.assert_less_equal(
        image_shape,
        tf.constant([pad_height, pad_width], tf.int32),
        message=f"a resized image is larger than pad_to={tuple(pad_to)}; "
        "use pad_to >= (max_size, max_size)",
    )
    with tf.control_dependencies([check]):
        return tf.image.pad_to_bounding_box(image, 0, 0, pad_height, pad_width)
