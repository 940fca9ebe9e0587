"""Training-time augmentation: multi-scale sizes, random crops (zoom in), photometric jitter.

Every random choice is a stateless draw keyed by a `seed` int [2] that the pipeline derives
from the example's value in a seeded `tf.data.Dataset.random` stream, so a batch depends only
on (seed, position in the stream), not on the order parallel `map` calls finish.

Keras' random preprocessing layers are not used: they take only an int seed or a stateful
`SeedGenerator`, which advances in whatever order a parallel map runs; their crop is also a
fixed output size, not a crop by side fraction that drops boxes by visible area.

Conventions: images are [H, W, 3] RGB; `objects["boxes"]` normalised [ymin, xmin, ymax, xmax]
of the image they come with (the record's convention).
"""

from __future__ import annotations

import tensorflow as tf

from tf_frcnn import boxes as box_ops


def draw_scale(scales, seed):
    """The shorter side for one example, drawn uniformly from `scales` (the paper's
    multi-scale training). Returns int32 scalar."""
    index = tf.random.stateless_uniform([], seed, minval=0, maxval=len(scales), dtype=tf.int32)
    return tf.gather(tf.constant(scales, tf.int32), index)


def crop_window(image_shape, seed, min_crop: float):
    """A random crop keeping at least `min_crop` of each side, placed uniformly.

    Args:
      image_shape: int32 [2] (height, width).
      seed: int [2] stateless seed.
      min_crop: in (0, 1]; the height and width fractions are drawn independently from
        [min_crop, 1], so the aspect ratio changes too.
    Returns:
      (offset int32 [2] (top, left), size int32 [2] (height, width)), inside the image.
    """
    draws = tf.random.stateless_uniform([4], seed)
    extent = tf.cast(image_shape, tf.float32)
    fraction = min_crop + (1.0 - min_crop) * draws[:2]
    size = tf.clip_by_value(tf.cast(tf.math.ceil(extent * fraction), tf.int32), 1, image_shape)
    room = image_shape - size
    offset = tf.minimum(tf.cast(draws[2:] * tf.cast(room + 1, tf.float32), tf.int32), room)
    return offset, size


def crop_objects(objects, image_shape, offset, size, min_visible: float):
    """The objects of an image seen through a crop window.

    A box keeping less than `min_visible` of its area, or under one pixel of height or width
    (nothing of the object is visible), is dropped; the others are clipped to the window. All
    fields of `objects` are masked alike, so labels stay aligned with boxes. An image may end
    with no objects: a valid background-only example.

    Args:
      objects: {"boxes": float32 [N, 4] normalised [ymin, xmin, ymax, xmax] of the image, and
        any other per-object fields [N, ...] ("labels", "difficult", "iscrowd")}.
      image_shape: int32 [2] (height, width) of the image.
      offset, size: int32 [2] (top, left) and (height, width) of the window, in pixels.
      min_visible: in [0, 1].
    Returns:
      The same dict with M <= N objects, "boxes" normalised to the window.
    """
    extent = tf.cast(tf.concat([image_shape, image_shape], 0), tf.float32)
    boxes = objects["boxes"] * extent
    top_left = tf.cast(tf.concat([offset, offset], 0), tf.float32)
    window = tf.cast(tf.concat([size, size], 0), tf.float32)
    visible = tf.clip_by_value(boxes - top_left, 0.0, window)
    fraction = tf.math.divide_no_nan(box_ops.area(visible), box_ops.area(boxes))
    sides = visible[:, 2:] - visible[:, :2]
    keep = (fraction >= min_visible) & tf.reduce_all(sides >= 1.0, axis=1)
    kept = {key: tf.boolean_mask(value, keep) for key, value in objects.items()}
    kept["boxes"] = tf.boolean_mask(visible, keep) / window
    return kept


def random_crop(image, objects, seed, *, probability: float, min_crop: float, min_visible: float):
    """With `probability`, crops `image` to a `crop_window` and its objects with
    `crop_objects`; otherwise returns both unchanged.

    Args:
      image: [H, W, 3], any dtype.
      objects: see `crop_objects`.
      seed: int [2] stateless seed.
    Returns:
      (image [h, w, 3], objects with boxes normalised to the returned image).
    """
    choice_seed, window_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cropped = tf.random.stateless_uniform([], choice_seed) < probability

    def crop():
        image_shape = tf.shape(image)[:2]
        offset, size = crop_window(image_shape, window_seed, min_crop)
        window = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
        return window, crop_objects(objects, image_shape, offset, size, min_visible)

    return tf.cond(cropped, crop, lambda: (image, objects))


def color_jitter(image, seed, *, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """Random brightness, contrast, saturation and hue, in that order; a zero skips its step.

    Args:
      image: float32 [H, W, 3] RGB in 0..255.
      seed: int [2] stateless seed.
      brightness: the largest added delta, as a fraction of 255.
      contrast, saturation: factors drawn from [1 - c, 1 + c] (c <= 1).
      hue: the largest hue rotation, in [0, 0.5] of the colour circle.
    Returns:
      float32 [H, W, 3] in 0..255 (clipped after every step); `image` itself when all are 0.
    """
    # A factor range too narrow to represent (c below ~1e-16) is no jitter; tf.image rejects it.
    contrast = contrast if 1.0 - contrast < 1.0 + contrast else 0.0
    saturation = saturation if 1.0 - saturation < 1.0 + saturation else 0.0
    if not (brightness or contrast or saturation or hue):
        return image
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    pixels = image / 255.0
    jitters = (
        (brightness, tf.image.stateless_random_brightness, (brightness,)),
        (contrast, tf.image.stateless_random_contrast, (1.0 - contrast, 1.0 + contrast)),
        (saturation, tf.image.stateless_random_saturation, (1.0 - saturation, 1.0 + saturation)),
        (hue, tf.image.stateless_random_hue, (hue,)),
    )
    for (amount, jitter, args), step_seed in zip(jitters, seeds):
        if amount:
            pixels = tf.clip_by_value(jitter(pixels, *args, seed=step_seed), 0.0, 1.0)
    return pixels * 255.0
