"""From a config's ``data`` section to batches for the detector."""

import tensorflow as tf

from tf_frcnn import data


def source(config, split):
    """The records of ``split`` and the class names, for the configured source.

    Returns:
      (tf.data.Dataset of records, list of class names; index i is label i + 1).
    """
    d = config.data
    names = config.model.class_names
    if d.source == "synthetic":
        records = data.synthetic_dataset(split, data_dir=d.data_dir, image_size=d.image_size,
                                         num_train=d.num_train, num_validation=d.num_eval,
                                         num_test=d.num_eval)
        names = names or list(data.SYNTHETIC_CLASS_NAMES)
    elif d.source == "voc":
        names = names or list(data.VOC_CLASS_NAMES)
        records = data.voc_dataset(d.root, split, class_names=names)
    elif d.source == "coco":
        evaluating = split == d.eval_split and d.eval_annotations
        annotations = d.eval_annotations if evaluating else d.annotations
        records = data.coco_dataset(annotations, (d.eval_root or d.root) if evaluating else d.root)
        names = names or data.coco_class_names(annotations)
    elif d.source == "tfds":
        records = data.tfds_dataset(d.root, split, data_dir=d.data_dir)
        names = names or data.tfds_class_names(d.root, data_dir=d.data_dir)
    else:
        raise ValueError(f"config key 'data.source' = {d.source!r} must be one of "
                         "synthetic, voc, coco, tfds")
    return records, list(names)


def batches(config, split, training, batch_size=None, seed=None):
    """Padded batches of ``split`` (see ``tf_frcnn.data.build_pipeline``);
    ``data.augment`` applies when ``training`` only."""
    d = config.data
    records, _ = source(config, split)
    return data.build_pipeline(
        records, training=training, batch_size=batch_size or d.batch_size,
        min_size=d.min_size, max_size=d.max_size,
        pad_to=tuple(d.pad_to) if d.pad_to else None, max_boxes=d.max_boxes,
        flip=d.flip and training, seed=config.train.seed if seed is None else seed,
        drop_difficult=training, drop_crowd=training,
        augment=d.augment if training else None)


def training_batches(config, split, batch_size, start_step=0):
    """An endless, seeded stream of training batches positioned at
    ``start_step``, so a resumed run sees the batches an uninterrupted one
    would have seen next."""
    stream = batches(config, split, training=True, batch_size=batch_size).repeat()
    options = tf.data.Options()
    # Workers split every global batch between them (the records come from a
    # few files, too few to shard by file).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    stream = stream.with_options(options)
    return stream.skip(start_step) if start_step else stream

