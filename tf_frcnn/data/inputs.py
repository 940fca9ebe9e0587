"""From a config's ``data`` section to batches for the detector: what training, evaluation,
export and data analysis read."""

import math

import tensorflow as tf

from tf_frcnn.config import ConfigError
from tf_frcnn.data.catalog import tfds_class_names, tfds_dataset
from tf_frcnn.data.coco import coco_class_names, coco_dataset
from tf_frcnn.data.csv_table import csv_class_names, csv_dataset
from tf_frcnn.data.pipeline import PipelineOptions, build_pipeline
from tf_frcnn.data.synthetic import SYNTHETIC_CLASS_NAMES, synthetic_dataset
from tf_frcnn.data.voc import VOC_CLASS_NAMES, voc_dataset
from tf_frcnn.data.yolo import yolo_class_names, yolo_dataset


def source(config, split):
    """The records of ``split`` and the class names, for the configured source.

    Returns:
      (tf.data.Dataset of records, list of class names; index i is label i + 1).
    """
    d = config.data
    names = config.model.class_names
    if d.source == "synthetic":
        records = synthetic_dataset(split, data_dir=d.data_dir, **synthetic_options(d))
        names = names or list(SYNTHETIC_CLASS_NAMES)
    elif d.source == "voc":
        names = names or list(VOC_CLASS_NAMES)
        records = voc_dataset(d.root, split, class_names=names)
    elif d.source == "coco":
        evaluating = split == d.eval_split and d.eval_annotations
        annotations = d.eval_annotations if evaluating else d.annotations
        records = coco_dataset(annotations, (d.eval_root or d.root) if evaluating else d.root)
        names = names or coco_class_names(annotations)
    elif d.source == "yolo":
        names = names or yolo_class_names(_required(d, "root"))
        records = yolo_dataset(_required(d, "root"), split, class_names=names)
    elif d.source == "csv":
        # The training table for the training split, the evaluation table for any other
        # (eval_split, or a named val_split): a CSV source has no split names of its own.
        evaluating = split != d.train_split
        annotations = _required(d, "eval_annotations" if evaluating else "annotations")
        names = names or csv_class_names(_required(d, "annotations"))
        image_dir = d.eval_root if evaluating and d.eval_root else _required(d, "root")
        records = csv_dataset(annotations, image_dir, class_names=names)
    else:  # tfds; config validation allows choices.DATA_SOURCES only
        records = tfds_dataset(d.root, split, data_dir=d.data_dir)
        names = names or tfds_class_names(d.root, data_dir=d.data_dir)
    return records, list(names)


def synthetic_options(data):
    """The ``shapes_config`` options of a ``data`` section: data.num_eval images for both the
    validation and the test split."""
    sizes = dict(image_size=data.image_size, num_train=data.num_train)
    return dict(sizes, num_validation=data.num_eval, num_test=data.num_eval)


def _required(data_config, key):
    value = getattr(data_config, key)
    if not value:
        raise ConfigError(
            f"config key 'data.{key}' must be set for data.source {data_config.source!r}"
        )
    return value


# The split name that stands for the validation images (``data.val_split``): a
# configured split, or the images held out of the training split.
VALIDATION = "<val_split>"
_HASH_BUCKETS = 1 << 20


def held_out(image_ids, fraction):
    """Whether each image is in the validation hold-out: bool of the shape of
    ``image_ids`` (string). Decided by a fingerprint of the id alone (TF's
    Fingerprint64, fixed across runs and platforms), so the same images are held
    out on every run, on resume and whatever the order of the records."""
    bucket = tf.strings.to_hash_bucket_fast(image_ids, _HASH_BUCKETS)
    return bucket < int(round(fraction * _HASH_BUCKETS))


def split_records(config, split):
    """``source`` of ``split`` with the hold-out applied: with ``data.val_split`` a
    fraction, the training split loses the images ``held_out`` and ``VALIDATION`` is
    those; with it a split name, ``VALIDATION`` is that split, cut to
    ``train.val_images`` where set."""
    d = config.data
    fraction = None if isinstance(d.val_split, str) or d.val_split is None else d.val_split
    if split == VALIDATION:
        if d.val_split is None:
            raise ValueError("no validation split: config key 'data.val_split' is not set")
        if fraction is None:
            records, names = source(config, d.val_split)
        else:
            records, names = source(config, d.train_split)
            records = records.filter(lambda record: held_out(record["image_id"], fraction))
        if config.train.val_images:
            records = records.take(config.train.val_images)
        return records, names
    records, names = source(config, split)
    if fraction is not None and split == d.train_split:
        records = records.filter(lambda record: ~held_out(record["image_id"], fraction))
    return records, names


def num_images(config, split):
    """The number of images of ``split`` (after the hold-out, see
    ``split_records``): the records' cardinality where tf.data knows it,
    otherwise one pass over them (which decodes each image once)."""
    records, _ = split_records(config, split)
    count = int(records.cardinality())
    if count >= 0:
        return count
    return int(
        records.map(lambda record: record["image_id"]).reduce(
            tf.constant(0, tf.int64), lambda total, _: total + 1
        )
    )


def epoch_steps(epochs, images, batch_size):
    """Steps of ``epochs`` passes over ``images`` at ``batch_size``: ceil(epochs * images
    / batch_size), at least 1 (rounded first, so 0.1 * 30 / 1 is 3 steps, not 4)."""
    return max(1, math.ceil(round(epochs * images / batch_size, 6)))


def pipeline_options(config, training, batch_size=None, seed=None):
    """The ``PipelineOptions`` of ``config.data`` for training or evaluation batches:
    ``data.flip`` and ``data.augment`` apply when ``training`` only, which also drops
    difficult and crowd objects."""
    d = config.data
    return PipelineOptions(
        training=training,
        batch_size=batch_size or d.batch_size,
        min_size=d.min_size,
        max_size=d.max_size,
        pad_to=tuple(d.pad_to) if d.pad_to else None,
        max_boxes=d.max_boxes,
        flip=d.flip and training,
        seed=config.train.seed if seed is None else seed,
        drop_difficult=training,
        drop_crowd=training,
        augment=d.augment if training else None,
    )


def batches(config, split, training, batch_size=None, seed=None):
    """Padded batches of ``split`` (see ``tf_frcnn.data.build_pipeline``; the
    hold-out and ``VALIDATION`` of ``split_records`` apply) with
    ``pipeline_options``."""
    records, _ = split_records(config, split)
    return build_pipeline(records, pipeline_options(config, training, batch_size, seed))


def training_batches(config, split, batch_size, start_step=0):
    """An endless, seeded stream of training batches positioned at
    ``start_step``, so a resumed run sees the batches an uninterrupted one
    would have seen next."""
    stream = batches(config, split, training=True, batch_size=batch_size).repeat()
    options = tf.data.Options()
    # Workers split every global batch between them (the records come from a
    # few files, too few to shard by file).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    stream = stream.with_options(options)
    return stream.skip(start_step) if start_step else stream
