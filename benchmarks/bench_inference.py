"""Inference (and training-step) speed of a config's model, against the FLOP floor.

    .venv/bin/python benchmarks/bench_inference.py --config configs/voc07_vgg16.yaml \
        --size 600 1000 --runs 5 --train --threads 2

Weights are random (``model.weights`` is ignored): timing only. The input is one
image of exactly H x W (no resizing), like ../shared/bench/torchvision_vgg16_frcnn.py.
Prints progress lines, then one JSON line last with ``infer_s_median``,
``train_step_s_median`` (with --train: the approximate-joint step with both losses,
two ground-truth boxes, the config's 2,000 training proposals and 128 ROIs), the
model's FLOPs counted from the graph (conv and matmul apart), the machine's conv and
matmul ceilings measured on the paper model's own layer shapes (best of the runs),
the floor (conv FLOPs / conv rate + matmul FLOPs / matmul rate + the rest at the conv
rate), the ratio to it, the time split and peak RSS.

The split times each part alone (backbone convs; RPN head + proposals; ROI pooling;
the region-wise fc layers; the sibling output layers + post-processing), traced on
the previous part's outputs, in interleaved rounds; ``split_sum_s`` next to
``infer_s_median`` shows what the parts leave out (the glue between them).
``non_backbone_fraction`` counts the backbone network as its convs plus, where the
backbone brings them (VGG16's fc6/fc7), its fc layers.
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
    parser.add_argument("--inter-op", type=int, default=None,
                        help="TF inter-op threads (default: --threads)")
    parser.add_argument("--frozen", action="store_true",
                        help="also time the inference graph with its variables frozen to "
                        "constants (oneDNN can then keep reordered weights between calls)")
    parser.add_argument("--svd-ranks", type=int, nargs="+", metavar="RANK",
                        help="time the head with its fc layers truncated (tf_frcnn.svd), e.g. "
                        "1024 256")
    return parser.parse_args()


def _median_time(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _flops_by_op(concrete):
    """Float operations of a traced function's graph, per op type (tfprof's count)."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=options)
    return {child.name: int(child.total_float_ops) for child in profile.children
            if child.total_float_ops}


def _best_rate(fn, flops, runs):
    """GFLOP/s of ``fn`` at its fastest of ``runs`` (the machine's ceiling for it)."""
    fn()
    best = min(_timed(fn) for _ in range(runs))
    return flops / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ceilings(height, width, rois, runs):
    """The machine's float32 conv and matmul rates on the paper model's own shapes.

    conv: the best of VGG16's 3x3 convs at stride 4, 8 and 16 (256 -> 256, 512 ->
    512, 512 -> 512 channels), where the backbone spends its time; matmul: fc6
    over the test ROIs ([R, 25088] x [25088, 4096]). Best of ``runs`` each: a
    ceiling, not a typical time."""
    import tensorflow as tf
    rates = []
    for stride, cin, cout in ((4, 256, 256), (8, 512, 512), (16, 512, 512)):
        h, w = -(-height // stride), -(-width // stride)
        x = tf.random.normal([1, h, w, cin])
        kernel = tf.random.normal([3, 3, cin, cout])
        conv = tf.function(lambda x=x, kernel=kernel: tf.nn.conv2d(x, kernel, 1, "SAME"))
        rates.append(_best_rate(lambda conv=conv: conv().numpy(), 2 * h * w * 9 * cin * cout,
                                max(runs, 3)))
    a = tf.random.normal([rois, 25088])
    b = tf.random.normal([25088, 4096])
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul_rate = _best_rate(lambda: matmul().numpy(), 2 * rois * 25088 * 4096, max(runs, 3))
    return max(rates), matmul_rate


def main():
    args = _args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op or args.threads)
    import keras

    from tf_frcnn import load_config
    from tf_frcnn.head import postprocess_detections
    from tf_frcnn.model import build_model

    config = load_config(args.config)
    config.model.weights = None
    keras.utils.set_random_seed(0)
    model = build_model(config)
    height, width = args.size
    images = tf.random.uniform([1, height, width, 3], maxval=255.0, seed=0)
    image_shape = tf.constant([[height, width]])
    model({"images": images, "image_shape": image_shape})
    if args.svd_ranks:
        from tf_frcnn.svd import truncate_head
        truncate_head(model, args.svd_ranks)

    spec = [tf.TensorSpec([1, height, width, 3], tf.float32), tf.TensorSpec([1, 2], tf.int32)]

    # The parts of the inference graph, each traced alone on the previous part's
    # real outputs, so the split is measured, not differenced.
    head = model.detector_head
    feature_map = model.features(images)
    logits, deltas = model.rpn_head(feature_map)
    anchors = model.anchor_generator(feature_map)
    proposals, _, num_proposals = model.proposal_layer(logits, deltas, anchors, image_shape)
    pooled = model.roi_pooling(feature_map, proposals)
    hidden = head.region_features(pooled)

    def rpn_and_proposals(feature_map, shape):
        logits, deltas = model.rpn_head(feature_map)
        return model.proposal_layer(logits, deltas, model.anchor_generator(feature_map), shape)

    def outputs_and_post(hidden, proposals, num_proposals, shape):
        class_logits, box_deltas = head.outputs(hidden)
        return postprocess_detections(class_logits, box_deltas, proposals, num_proposals, shape,
                                      box_stds=model.roi_sampler_args.get("box_stds"),
                                      **model.detection_args)

    def full(x, shape):
        out = model({"images": x, "image_shape": shape})
        return out["detection_boxes"], out["num_detections"]

    jit = args.jit or None
    parts = {
        "backbone": (tf.function(model.features, jit_compile=jit), (images,)),
        "rpn_and_proposals": (tf.function(rpn_and_proposals, jit_compile=jit),
                              (feature_map, image_shape)),
        "roi_pooling": (tf.function(model.roi_pooling, jit_compile=jit), (feature_map, proposals)),
        "region_fc": (tf.function(head.region_features, jit_compile=jit), (pooled,)),
        "outputs_and_postprocessing": (tf.function(outputs_and_post, jit_compile=jit),
                                       (hidden, proposals, num_proposals, image_shape)),
        "full": (tf.function(full, input_signature=spec, jit_compile=jit), (images, image_shape)),
    }

    if args.frozen:
        from tensorflow.python.framework import convert_to_constants
        frozen = convert_to_constants.convert_variables_to_constants_v2(
            parts["full"][0].get_concrete_function())
        parts["full_frozen"] = (frozen, (images, image_shape))

    def runner(fn, inputs):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(*inputs))

    # Interleaved rounds: drift on a shared machine hits every part alike.
    for fn, inputs in parts.values():
        runner(fn, inputs)()
    times = {name: [] for name in parts}
    for _ in range(args.runs):
        for name, (fn, inputs) in parts.items():
            times[name].append(_timed(runner(fn, inputs)))
    timings = {name: statistics.median(values) for name, values in times.items()}
    for name, value in timings.items():
        print(f"{name:21s} {value:.3f} s", file=sys.stderr, flush=True)
    infer_median, infer_times = timings["full"], times["full"]
    split = {name: timings[name] for name in parts if not name.startswith("full")}

    by_op = _flops_by_op(parts["full"][0].get_concrete_function())
    flops = sum(by_op.values())
    conv_flops = sum(v for k, v in by_op.items() if k.startswith("Conv2D") or "Conv2D" in k)
    matmul_flops = sum(v for k, v in by_op.items() if "MatMul" in k)
    backbone_flops = sum(_flops_by_op(
        parts["backbone"][0].get_concrete_function(images)).values())
    rois = int(proposals.shape[1])
    conv_rate, matmul_rate = _ceilings(height, width, rois, args.runs)
    floor = (conv_flops / conv_rate + matmul_flops / matmul_rate
             + (flops - conv_flops - matmul_flops) / conv_rate) / 1e9
    backbone_network = split["backbone"] + (
        split["region_fc"] if model.backbone.head is not None else 0.0)
    result = {
        "ours": "tf_frcnn", "config": args.config, "size": [height, width],
        "threads": args.threads, "tf": tf.__version__, "svd_ranks": args.svd_ranks,
        "infer_s_median": infer_median, "infer_s": infer_times,
        "infer_frozen_s_median": timings.get("full_frozen"),
        "flops_g": flops / 1e9, "backbone_flops_g": backbone_flops / 1e9,
        "conv_flops_g": conv_flops / 1e9, "matmul_flops_g": matmul_flops / 1e9,
        "conv_rate_gflops": conv_rate, "matmul_rate_gflops": matmul_rate,
        "floor_s": floor, "ratio_to_floor": infer_median / floor,
        "split_s": split, "split_sum_s": sum(split.values()),
        # The backbone network's own layers: its convs and, where it has them (VGG16's
        # fc6/fc7), its fc layers over the ROIs. The rest is the detector's overhead.
        "backbone_network_s": backbone_network,
        "non_backbone_fraction": 1.0 - backbone_network / sum(split.values()),
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
