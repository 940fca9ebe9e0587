"""The MobileNet CPU model on one stride-16 map vs on the feature pyramid, side by side
(issue #21): the training step (approximate joint, both losses) and inference ms/image
at 600x800, random weights (timing only), runs interleaved so both see the same machine.

    .venv/bin/python benchmarks/bench_fpn.py --size 600 800 --runs 5 --threads 2

The single-level model is configs/mobilenet_cpu.yaml with its fitted anchors replaced by
3 scales x 3 ratios (the count ``auto`` fits); the pyramid adds ``model.fpn`` with
``--channels`` (64) and separable output convs (``--dense`` for plain 3x3 convs), one
scale x 3 ratios per level and an RPN conv as wide as the levels (its defaults, docs/fpn.md;
the CPU config's explicit rpn_channels: 256 is replaced), 2,000 / 1,000 pre-NMS boxes per
level. Prints one JSON line per model and
the pyramid / single ratios last (the goal: the pyramid's step at most 1.6x).
"""

import argparse
import json
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "mobilenet_cpu.yaml"))
    parser.add_argument("--size", type=int, nargs=2, default=[600, 800], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--dense", action="store_true", help="dense 3x3 output convs")
    parser.add_argument("--min-level", type=int, default=2, help="finest pyramid level (2: P2)")
    parser.add_argument(
        "--rpn-channels", type=int, default=None, help="RPN conv width (default: --channels)"
    )
    return parser.parse_args()


def main():
    args = _args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from tf_frcnn.config import FPNConfig, apply_pyramid_defaults, load_config
    from tf_frcnn.model import build_model
    from tf_frcnn.stages import get_stage
    from tf_frcnn.training import Objective, make_optimizer
    from tf_frcnn.training.schedule import stage_config
    from tf_frcnn.training.step import set_trainable, stage_losses, train_step

    height, width = args.size
    images = tf.random.uniform([1, height, width, 3], 0, 255, seed=0)
    batch = {
        "images": images,
        "image_shape": tf.constant([[height, width]]),
        "boxes": tf.constant([[[100.0, 100.0, 300.0, 260.0], [350.0, 400.0, 380.0, 430.0]]]),
        "labels": tf.constant([[1, 1]]),
    }
    joint = get_stage("joint")
    timed = {}
    for name in ("single", "pyramid"):
        config = load_config(args.config)
        config.model.weights = None
        config.model.anchor_scales = [2.0, 4.0, 8.0]
        config.model.anchor_ratios = [0.5, 1.0, 2.0]
        config.train.schedule = "joint"
        if name == "pyramid":
            config.model.fpn = FPNConfig(
                min_level=args.min_level, channels=args.channels, separable=not args.dense
            )
            apply_pyramid_defaults(config)
            config.model.anchor_scales = [8.0]
            config.model.rpn_channels = args.rpn_channels or args.channels
        model = build_model(config)
        model({"images": images[:, :64, :64]})
        set_trainable(model, joint)
        optimizer = make_optimizer(config.train, stage_config(config, "joint"))
        losses_of = stage_losses(model, joint, Objective.from_config(config))
        step = tf.function(lambda b, m=model, o=optimizer, f=losses_of: train_step(f, m, o, b))
        infer = tf.function(lambda x, m=model: m({"images": x})["detection_boxes"])
        step(batch)
        infer(images)
        timed[name] = {"step": step, "infer": infer, "train_s": [], "infer_s": []}
        print(f"{name}: built and traced", flush=True)
    for run in range(args.runs):
        for entry in timed.values():
            start = time.perf_counter()
            entry["step"](batch)["loss"].numpy()
            entry["train_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            entry["infer"](images).numpy()
            entry["infer_s"].append(time.perf_counter() - start)
        print(f"run {run + 1}/{args.runs}", flush=True)
    result = {}
    for name, entry in timed.items():
        result[name] = {
            "train_step_ms": round(1000 * statistics.median(entry["train_s"]), 1),
            "infer_ms_per_image": round(1000 * statistics.median(entry["infer_s"]), 1),
        }
        print(json.dumps({"model": name, "size": args.size, **result[name]}))
    print(
        json.dumps(
            {
                "pyramid_over_single_train_step": round(
                    result["pyramid"]["train_step_ms"] / result["single"]["train_step_ms"], 2
                ),
                "pyramid_over_single_infer": round(
                    result["pyramid"]["infer_ms_per_image"]
                    / result["single"]["infer_ms_per_image"],
                    2,
                ),
                "fpn_channels": args.channels,
                "separable": not args.dense,
                "min_level": args.min_level,
                "rpn_channels": args.rpn_channels or args.channels,
            }
        )
    )


if __name__ == "__main__":
    main()
