"""Our worker for ``benchmarks/interleaved.py``: a config's model built as
``benchmarks/bench_inference.py`` builds it (random weights, one H x W image), answering
``infer`` and ``train`` requests with the time of one call (protocol:
``benchmarks/worker_protocol.py``):

    PYTHONPATH=. .venv/bin/python benchmarks/ours_worker.py --size 300 500 --threads 2

Each call is what bench_inference.py times: inference is its ``full_frozen`` (the model's
call returning ``detection_boxes`` and ``num_detections``, traced on the image and frozen
with ``tf_frcnn.export.freeze``, its outputs fetched as numpy), or with ``--inference
variables`` its ``full`` (the same, reading the weights from variables); a training step is
``StageLoop.step`` of the ``joint`` stage (approximate joint training, both losses) with SGD,
on the same image and two ground-truth boxes. Nothing else is built (no split, no floor).
"""

import argparse
import os
import sys

import bench_model
import worker_protocol


def _args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/voc07_vgg16.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[600, 1000], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--inference",
        choices=("frozen", "variables"),
        default="frozen",
        help="time the frozen graph (bench_inference.py's infer_s, the default) or the same "
        "graph reading its weights from variables (its infer_variables_s: no frozen copy, "
        "which needs about 13 GB at its first call for VGG16)",
    )
    parser.add_argument(
        "--inter-op", type=int, default=None, help="TF inter-op threads (default: --threads)"
    )
    return parser.parse_args()


def _inference(model, images, image_shape, kind):
    """bench_inference.py's ``full_frozen`` (``kind`` "frozen") or ``full`` ("variables"), as
    a function timing one call."""
    import tensorflow as tf

    from tf_frcnn.export import freeze, unoptimized

    def full(x, shape):
        out = model({"images": x, "image_shape": shape})
        return out["detection_boxes"], out["num_detections"]

    if kind == "frozen":
        # Without Grappler: the same speed, 5.3 instead of 9.9 GB at the first call (#26).
        call = unoptimized(freeze(tf.function(full).get_concrete_function(images, image_shape)))
    else:
        spec = [tf.TensorSpec(images.shape, tf.float32), tf.TensorSpec([1, 2], tf.int32)]
        call = tf.function(full, input_signature=spec)
    return lambda: worker_protocol.timed(
        lambda: tf.nest.map_structure(lambda t: t.numpy(), call(images, image_shape))
    )


def _training(config, model, images, image_shape):
    """bench_inference.py's training step (--train), as a function timing one step."""
    batch = bench_model.training_batch(model, images, image_shape)
    loop = bench_model.training_loop(config, model)
    return lambda: worker_protocol.timed(lambda: loop.step(batch))


def main():
    args = _args()
    channel = worker_protocol.claim_stdout()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    config, model, images, image_shape = bench_model.build(
        args.config, args.size, args.threads, args.inter_op
    )
    import keras

    # Peak resident memory (MB) after each part of the set-up, to see which part needs it.
    stages = {"model_built": worker_protocol.memory_mb()[1]}
    # In bench_inference.py's order: the inference is frozen before the training loop
    # makes the stage's layers trainable.
    handlers = {"infer": _inference(model, images, image_shape, args.inference)}
    stages[f"inference_{args.inference}"] = worker_protocol.memory_mb()[1]
    handlers["train"] = _training(config, model, images, image_shape)
    stages["training_loop_built"] = worker_protocol.memory_mb()[1]
    ready = {
        "side": "ours",
        "framework": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "threads": args.threads,
        "config": args.config,
        "inference": args.inference,
        "hwm_mb_after": stages,
        "python": sys.version.split()[0],
    }
    worker_protocol.serve(channel, handlers, ready)


if __name__ == "__main__":
    main()
