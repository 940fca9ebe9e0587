"""The model the speed benchmarks build and the training step they time, written once for
``bench_inference.py``, ``ours_worker.py`` and ``train_floor.py``.

The model is a config's, with random weights (``model.weights`` is ignored), called once on
one random H x W image (no resizing); the training step is ``StageLoop.step`` of the
``joint`` stage (approximate joint training, both losses) with SGD, on that image and two
ground-truth boxes.
"""


def build(config_path, size, threads, inter_op=None):
    """(config, model, images, image_shape): ``config_path``'s model built with random weights
    (seed 0) and called once on a random ``size`` = (H, W) image, TF running ``threads``
    intra-op and ``inter_op`` (default: ``threads``) inter-op threads."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op or threads)
    import keras

    from tf_frcnn import load_config
    from tf_frcnn.model import build_model

    config = load_config(config_path)
    config.model.weights = None
    keras.utils.set_random_seed(0)
    model = build_model(config)
    height, width = size
    images = tf.random.uniform([1, height, width, 3], maxval=255.0, seed=0)
    image_shape = tf.constant([[height, width]])
    model({"images": images, "image_shape": image_shape})
    return config, model, images, image_shape


def training_batch(model, images, image_shape):
    """The benchmarks' training batch: the image and two ground-truth boxes."""
    import tensorflow as tf

    return {
        "images": images,
        "image_shape": image_shape,
        "boxes": tf.constant([[[60.0, 50.0, 400.0, 300.0], [100.0, 400.0, 500.0, 700.0]]]),
        "labels": tf.constant([[min(3, model.num_classes), min(7, model.num_classes)]]),
    }


def training_loop(config, model):
    """The ``StageLoop`` of the ``joint`` stage with SGD (``config.train.optimizer`` is set to
    it), every part of ``model`` trained but its frozen layers."""
    import tensorflow as tf

    from tf_frcnn.training import Objective, StageLoop, make_optimizer
    from tf_frcnn.training.schedule import stage_config

    config.train.optimizer = "sgd"
    return StageLoop.for_stage(
        model,
        "joint",
        Objective.from_config(config),
        make_optimizer(config.train, stage_config(config, "joint")),
        tf.distribute.get_strategy(),
    )
