"""TFDS catalog datasets (`voc/2007`, `voc/2012`, `coco/2017`, ...) mapped to records.

Nothing is downloaded: the dataset must already be prepared in `data_dir` (for example
with `tfds build voc/2007 --data_dir DIR` on a machine with network access).

TFDS detection datasets share one feature layout, which `tfds_to_record` reads:
  image            uint8 [H, W, 3]
  image/filename   string (VOC, synthetic)  or  image/id int64 (COCO)
  objects/bbox     float32 [N, 4] normalised [ymin, xmin, ymax, xmax] (no conversion needed)
  objects/label    int64 [N], 0-based ClassLabel (becomes 1-based)
  objects/is_difficult (VOC), objects/is_crowd (COCO): bool [N], False where absent.

Note that TFDS's VOC builder divides the 1-based VOC pixel coordinates by the image size
without subtracting 1, so its boxes sit up to one pixel right/below those of `voc_dataset`.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from tf_frcnn.data.records import DataError


def tfds_to_record(example: dict) -> dict:
    """Maps one example in TFDS detection layout (see module docstring) to a record.

    Works inside `tf.data.Dataset.map`; which optional features exist is decided when the
    function is traced, from the example's keys.
    """
    objects = example["objects"]
    labels = tf.cast(objects["label"], tf.int32) + 1
    no_flags = tf.zeros_like(labels, dtype=tf.bool)
    if "image/id" in example:
        image_id = tf.strings.as_string(example["image/id"])
    else:
        image_id = tf.strings.regex_replace(example["image/filename"], r"\.[^./]*$", "")
    return {
        "image": example["image"],
        "boxes": tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]),
        "labels": labels,
        "image_id": image_id,
        "difficult": (
            tf.cast(objects["is_difficult"], tf.bool) if "is_difficult" in objects else no_flags
        ),
        "iscrowd": tf.cast(objects["is_crowd"], tf.bool) if "is_crowd" in objects else no_flags,
    }


def _prepared_builder(name: str, data_dir):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        # TFDS's message goes on to list every registered dataset; its first line is enough.
        raise DataError(f"unknown TFDS dataset {name!r}: {str(error).splitlines()[0]}") from error
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; prepare it first, e.g. "
            f"`tfds build {name} --data_dir {data_dir or '~/tensorflow_datasets'}` "
            "(no download happens here)"
        )
    return builder


def tfds_class_names(name: str, data_dir=None) -> list[str]:
    """Class names of a prepared TFDS detection dataset; label i + 1 is names[i]."""
    return list(_prepared_builder(name, data_dir).info.features["objects"]["label"].names)


def tfds_dataset(name: str, split: str, data_dir=None) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of a prepared TFDS detection dataset.

    Args:
      name: TFDS name with config, e.g. "voc/2007" or "coco/2017".
      split: TFDS split expression, e.g. "train+validation" or "test".
      data_dir: TFDS data directory; None means TFDS's default (~/tensorflow_datasets).
    Raises:
      DataError when the dataset is unknown or not prepared in `data_dir`.
    """
    _prepared_builder(name, data_dir)
    dataset = tfds.load(name, split=split, data_dir=data_dir, download=False, shuffle_files=False)
    return dataset.map(tfds_to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
