"""Reading a split's boxes as training keeps them, and laying them out in every view of the
resized image (the input of `tf-frcnn analyze`, `anchor_scales: auto` and `min_size: auto`).

The training split goes through the readers training uses (`inputs.source`): same class
names, same dropped objects (VOC difficult, COCO crowd), same resize rule
(`pipeline.resize_image`). The on-disk readers' examples are taken as indexed
(`records.captured_examples`), so no pixel is decoded; synthetic and TFDS records are decoded.
Every box counts once per shorter side (data.min_size and data.augment.scales), and with
data.flip also mirrored (the anchor grid's offset differs). The random crop is not modelled;
a fractional data.val_split reads the whole training split.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from tf_frcnn.backbones import feature_size
from tf_frcnn.config import ConfigError
from tf_frcnn.data import anchor_fit, inputs
from tf_frcnn.data.records import BoxRepairWarning, DataWarning, captured_examples, check_images


@dataclasses.dataclass
class SplitBoxes:
    """The objects of one split as training keeps them, before the resize.

    image_shapes: int [I, 2] (height, width) of each image file.
    boxes: float32 [N, 4] normalised [ymin, xmin, ymax, xmax]; labels: int [N] 1-based;
    image_index: int [N], the image each box belongs to.
    """

    source: str
    split: str
    class_names: list
    image_shapes: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    excluded: int  # difficult / crowd objects, dropped as training drops them
    reader: dict  # what the reader repaired or skipped, from its warnings


def resized_shapes(shapes, min_size, max_size):
    """(height, width) int [I, 2] after `pipeline.resize_image`, from the sizes alone.

    The same float32 arithmetic as `resize_image` (which needs the pixels), so the sizes agree
    exactly; tests pin the two together.
    """
    shapes = np.asarray(shapes, np.float32).reshape(-1, 2)
    scale = np.float32(min_size) / np.minimum(shapes[:, 0], shapes[:, 1])
    if max_size is not None:
        scale = np.minimum(scale, np.float32(max_size) / np.maximum(shapes[:, 0], shapes[:, 1]))
    return np.maximum(np.round(shapes * scale[:, np.newaxis]).astype(np.int64), 1)


def _from_examples(examples):
    sizes = check_images(
        [example.image_path for example in examples], strict=False, source="analysis"
    )
    for example, size in zip(examples, sizes):
        if size is not None:
            keep = ~(example.difficult | example.iscrowd)
            yield size, example.boxes[keep], example.labels[keep], int(np.sum(~keep))


def _from_records(records):
    import tensorflow as tf

    def sizes_and_objects(record):
        keep = ~(record["difficult"] | record["iscrowd"])
        return (
            tf.shape(record["image"])[:2],
            tf.boolean_mask(record["boxes"], keep),
            tf.boolean_mask(record["labels"], keep),
            tf.reduce_sum(tf.cast(~keep, tf.int32)),
        )

    stream = records.map(sizes_and_objects, num_parallel_calls=tf.data.AUTOTUNE)
    return (tuple(item) for item in stream.as_numpy_iterator())


def _collect(items):
    """(shapes, boxes, labels, image index, excluded) of the reader's items."""
    shapes, boxes, labels, index, excluded = [], [], [], [], 0
    for number, (size, image_boxes, image_labels, dropped) in enumerate(items):
        shapes.append(size)
        boxes.append(np.asarray(image_boxes, np.float32).reshape(-1, 4))
        labels.append(np.asarray(image_labels, np.int64).reshape(-1))
        index.append(np.full(len(labels[-1]), number))
        excluded += int(dropped)
    return shapes, boxes, labels, index, excluded


def _reader_summary(caught):
    """What the reader repaired or skipped, from the warnings it raised; warnings of other
    kinds are raised again."""
    repairs = [w.message for w in caught if isinstance(w.message, BoxRepairWarning)]
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    for other in (w for w in caught if not issubclass(w.category, DataWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return {
        "dropped_boxes": sum(r.dropped for r in repairs),
        "clipped_boxes": sum(r.clipped for r in repairs),
        "skipped_images": sum("skipping" in message for message in messages),
        "warnings": messages,
    }


def read_split(config, split=None) -> SplitBoxes:
    """The boxes of `split` (default data.train_split) as training reads them.

    Raises:
      DataError (from the reader) naming the file or class; ConfigError for a source that has
      no boxes to read.
    """
    split = split or config.data.train_split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        with captured_examples() as captured:
            records, names = inputs.source(config, split)
        items = _from_examples(captured[-1]) if captured else _from_records(records)
        shapes, boxes, labels, index, excluded = _collect(items)
    reader = _reader_summary(caught)
    if not shapes:
        raise ConfigError(f"data.source {config.data.source!r}, split {split!r}: no images")
    arrays = (np.asarray(shapes, np.int64), *map(np.concatenate, (boxes, labels, index)))
    return SplitBoxes(config.data.source, split, list(names), *arrays, excluded, reader)


def resize_sides(config) -> list:
    """The shorter sides training and evaluation resize to (see the module docstring)."""
    scales = config.data.augment.scales or []
    return sorted({int(config.data.min_size), *(int(side) for side in scales)})


def views(split: SplitBoxes, config, *, flip=None):
    """Every box in every view of its image (each resize side; mirrored too when `flip`,
    default data.flip).

    Returns:
      (anchor_fit.ResizedBoxes of M box views, mirrored bool [M]).
    """
    flip = config.data.flip if flip is None else flip
    parts, mirrored = [], []
    for side in resize_sides(config):
        resized = resized_shapes(split.image_shapes, side, config.data.max_size)
        shape = resized[split.image_index].astype(np.float32)
        boxes = split.boxes * np.concatenate([shape, shape], axis=1)
        cells = feature_size(config.model.backbone, resized)[split.image_index]
        ymin, xmin, ymax, xmax = boxes.T
        flipped = np.stack([ymin, shape[:, 1] - xmax, ymax, shape[:, 1] - xmin], axis=1)
        for view, is_mirrored in ((boxes, False), (flipped, True))[: 2 if flip else 1]:
            parts.append((view, shape, cells, split.labels))
            mirrored.append(np.full(len(split.labels), is_mirrored))
    # The views' boxes, image shapes, cells and labels, each joined.
    return anchor_fit.ResizedBoxes(*map(np.concatenate, zip(*parts))), np.concatenate(mirrored)
