"""Inference (and training-step) speed of a config's model, against the FLOP floor.

    .venv/bin/python benchmarks/bench_inference.py --config configs/voc07_vgg16.yaml \
        --size 600 1000 --runs 5 --train --threads 2

Weights are random (``model.weights`` is ignored): timing only. The input is one
image of exactly H x W (no resizing), like ../shared/bench/torchvision_vgg16_frcnn.py.
Prints progress lines, then one JSON line last with ``infer_s_median``,
``train_step_s_median`` (with --train: the approximate-joint step with both losses,
two ground-truth boxes, the config's 2,000 training proposals and 128 ROIs), the
model's FLOPs counted from the graph, the machine's measured conv rate, the floor
(FLOPs / rate), the ratio to it, the time split and peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time


def _args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=[600, 1000], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the inference function")
    return parser.parse_args()


def _median_time(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _flops(concrete):
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return int(profile.total_float_ops)


def _conv_rate(runs):
    """GFLOP/s of a VGG-sized 3x3 conv (512 -> 512 channels on a 38x63 map)."""
    import tensorflow as tf
    x = tf.random.normal([1, 38, 63, 512])
    kernel = tf.random.normal([3, 3, 512, 512])
    conv = tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME"))
    seconds, _ = _median_time(lambda: conv().numpy(), max(runs, 5))
    return 2 * 38 * 63 * 512 * 512 * 9 / seconds / 1e9


def main():
    args = _args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from tf_frcnn import load_config
    from tf_frcnn.model import build_model

    config = load_config(args.config)
    config.model.weights = None
    keras.utils.set_random_seed(0)
    model = build_model(config)
    height, width = args.size
    images = tf.random.uniform([1, height, width, 3], maxval=255.0, seed=0)
    image_shape = tf.constant([[height, width]])
    model({"images": images, "image_shape": image_shape})

    spec = [tf.TensorSpec([1, height, width, 3], tf.float32), tf.TensorSpec([1, 2], tf.int32)]

    def backbone(x, shape):
        return model.features(x)

    def rpn(x, shape):
        feature_map, logits, deltas, anchors = model.rpn_forward(x)
        return model.proposal_layer(logits, deltas, anchors, shape)[0]

    def region(x, shape):
        feature_map, logits, deltas, anchors = model.rpn_forward(x)
        proposals, _, _ = model.proposal_layer(logits, deltas, anchors, shape)
        return model.detect(feature_map, proposals)

    def full(x, shape):
        out = model({"images": x, "image_shape": shape})
        return out["detection_boxes"], out["num_detections"]

    functions = {name: tf.function(fn, input_signature=spec, jit_compile=args.jit or None)
                 for name, fn in (("backbone", backbone), ("rpn", rpn), ("region", region),
                                  ("full", full))}
    timings = {}
    for name, fn in functions.items():
        timings[name], _ = _median_time(
            lambda fn=fn: tf.nest.map_structure(lambda t: t.numpy(), fn(images, image_shape)),
            args.runs)
        print(f"{name:9s} {timings[name]:.3f} s", file=sys.stderr, flush=True)
    infer_median, infer_times = _median_time(
        lambda: tf.nest.map_structure(lambda t: t.numpy(), functions["full"](images, image_shape)),
        args.runs)

    flops = _flops(functions["full"].get_concrete_function())
    backbone_flops = _flops(functions["backbone"].get_concrete_function())
    rate = _conv_rate(args.runs)
    floor = flops / (rate * 1e9)
    result = {
        "ours": "tf_frcnn", "config": args.config, "size": [height, width],
        "threads": args.threads, "tf": tf.__version__,
        "infer_s_median": infer_median, "infer_s": infer_times,
        "flops_g": flops / 1e9, "backbone_flops_g": backbone_flops / 1e9,
        "conv_rate_gflops": rate, "floor_s": floor, "ratio_to_floor": infer_median / floor,
        "split_s": {"backbone": timings["backbone"],
                    "rpn_and_proposals": timings["rpn"] - timings["backbone"],
                    "roi_pooling_and_head": timings["region"] - timings["rpn"],
                    "postprocessing": timings["full"] - timings["region"]},
        "non_backbone_fraction": 1.0 - timings["backbone"] / timings["full"],
    }
    if args.train:
        from tf_frcnn.training import StageLoop, make_optimizer
        from tf_frcnn.training.schedule import stage_config
        model.set_stage("joint")
        batch = {"images": images, "image_shape": image_shape,
                 "boxes": tf.constant([[[60.0, 50.0, 400.0, 300.0],
                                        [100.0, 400.0, 500.0, 700.0]]]),
                 "labels": tf.constant([[min(3, model.num_classes), min(7, model.num_classes)]])}
        config.train.optimizer = "sgd"
        loop = StageLoop(model, make_optimizer(config.train, stage_config(config, "joint")),
                         tf.distribute.get_strategy(), weight_decay=config.train.weight_decay)
        result["train_step_s_median"], result["train_step_s"] = _median_time(
            lambda: loop.step(batch), args.runs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
