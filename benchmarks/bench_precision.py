"""float32 vs bfloat16 / float16 vs XLA: inference and training-step time on this machine,
and the AP a trained model loses under a policy.

    .venv/bin/python benchmarks/bench_precision.py --config configs/voc07_vgg16.yaml \\
        --size 300 500 --runs 3 --train
    .venv/bin/python benchmarks/bench_precision.py --config benchmarks/raccoon_mobilenet.yaml \\
        --size 608 800 --runs 3 --train
    .venv/bin/python benchmarks/bench_precision.py --ap-model-dir runs/demo \\
        --data-dir runs/tfds

Timing: one model per variant (fp32, bf16, and with --xla fp32_xla, bf16_xla; --fp16 adds
fp16; or exactly --variants), all holding the same random weights. Inference is the frozen
graph (``tf_frcnn.export.frozen_inference``, XLA-compiled for the _xla variants; with
--variables the graph reading variables, as a SavedModel runs); the training step is the
approximate-joint ``StageLoop`` step (SGD, both losses, two ground-truth boxes). The variants
run interleaved, round after round, so drift on a shared machine hits them alike; ratios to
fp32 are what to read. The CPU's AMX / AVX512_BF16 / VNNI support is printed first.

AP (--ap-model-dir): the model directory's final weights evaluated on its config's eval split
under each precision (nothing is written into the model directory).

Prints progress lines, then one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

PRECISION = {"fp32": False, "bf16": "bfloat16", "fp16": "float16"}


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="timing: the model's config (weights are random)")
    parser.add_argument("--size", type=int, nargs=2, default=[300, 500], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="TF intra/inter-op threads; 0: TF's default (use on a GPU)",
    )
    parser.add_argument(
        "--variables",
        action="store_true",
        help="time inference reading the weights from variables (as a "
        "SavedModel runs; a half-precision policy casts them on every call) "
        "instead of frozen: far less memory and set-up time for VGG16",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="timing variants, of fp32 bf16 fp16 and the same with _xla "
        "(default: fp32 bf16, plus fp16 with --fp16 and the _xla ones with "
        "--xla)",
    )
    parser.add_argument("--train", action="store_true", help="time the training step too")
    parser.add_argument("--xla", action="store_true", help="add the XLA-compiled variants")
    parser.add_argument("--fp16", action="store_true", help="add float16")
    parser.add_argument("--ap-model-dir", help="AP: a trained model directory (read only)")
    parser.add_argument("--data-dir", help="AP: TFDS data dir of a synthetic dataset")
    parser.add_argument(
        "--images", type=int, default=None, help="AP: evaluate the first N batches only"
    )
    return parser.parse_args()


def _variants(args):
    if args.variants:
        unknown = [name for name in args.variants if name.removesuffix("_xla") not in PRECISION]
        if unknown or args.variants[0] != "fp32":
            sys.exit(
                f"bench_precision.py: --variants must start with fp32 and name only "
                f"{', '.join(PRECISION)} (and _xla); got {' '.join(args.variants)}"
            )
        return args.variants
    names = ["fp32", "bf16"] + (["fp16"] if args.fp16 else [])
    if args.xla:
        names += [f"{name}_xla" for name in names]
    return names


def timing(args, result):
    import tensorflow as tf

    from tf_frcnn import load_config
    from tf_frcnn.export import frozen_inference
    from tf_frcnn.model import build_model, builtin_twin
    from tf_frcnn.training import Objective, StageLoop, make_optimizer
    from tf_frcnn.training.schedule import stage_config

    config = load_config(args.config)
    config.model.weights = None
    config.train.optimizer = "sgd"
    height, width = args.size
    images = tf.random.uniform([1, height, width, 3], maxval=255.0, seed=0)
    image_shape = tf.constant([[height, width]])
    batch = {
        "images": images,
        "image_shape": image_shape,
        "boxes": tf.constant(
            [
                [
                    [0.1 * height, 0.1 * width, 0.7 * height, 0.5 * width],
                    [0.2 * height, 0.4 * width, 0.9 * height, 0.8 * width],
                ]
            ]
        ),
        "labels": tf.constant([[1, min(2, config.model.num_classes)]]),
    }
    weights = None
    infer, train = {}, {}
    for name in _variants(args):
        precision, xla = PRECISION[name.split("_")[0]], name.endswith("_xla")
        config.train.mixed_precision, config.train.jit_compile = precision, xla
        model = build_model(config)
        model({"images": images, "image_shape": image_shape})
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        start = time.perf_counter()
        if args.variables:
            twin = builtin_twin(model) if xla else model
            infer[name] = tf.function(
                lambda x, shape, twin=twin: twin.infer({"images": x, "image_shape": shape}),
                jit_compile=xla or None,
            )
        else:
            infer[name] = frozen_inference(model, height, width, jit_compile=xla)
        infer[name](images, image_shape)
        print(
            f"{name}: inference traced and first run in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if args.train:
            settings = stage_config(config, "joint")
            train[name] = StageLoop.for_stage(
                model,
                "joint",
                Objective.from_config(config),
                make_optimizer(config.train, settings),
                tf.distribute.get_strategy(),
                jit_compile=xla,
            )
            start = time.perf_counter()
            train[name].step(batch)
            print(
                f"{name}: first training step (trace, compile) {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def run_infer(fn):
        out = fn(images, image_shape)
        return out["num_detections"].numpy()

    times = {("infer", name): [] for name in infer}
    times.update({("train", name): [] for name in train})
    for round_index in range(args.runs):
        for name, fn in infer.items():
            start = time.perf_counter()
            run_infer(fn)
            times[("infer", name)].append(time.perf_counter() - start)
        for name, loop in train.items():
            start = time.perf_counter()
            loop.step(batch)
            times[("train", name)].append(time.perf_counter() - start)
        print(f"round {round_index + 1}/{args.runs} done", file=sys.stderr, flush=True)
    for kind in ("infer", "train"):
        medians = {
            name: statistics.median(values) for (k, name), values in times.items() if k == kind
        }
        if not medians:
            continue
        result[f"{kind}_s_median"] = medians
        result[f"{kind}_s"] = {name: values for (k, name), values in times.items() if k == kind}
        result[f"{kind}_ratio_to_fp32"] = {
            name: value / medians["fp32"] for name, value in medians.items()
        }
        for name, value in medians.items():
            print(
                f"{kind:5s} {name:9s} {value:.3f} s  ({value / medians['fp32']:.2f}x fp32)",
                file=sys.stderr,
                flush=True,
            )


def average_precision(args, result):
    from tf_frcnn.data import inputs
    from tf_frcnn.evaluation.runner import evaluate
    from tf_frcnn.rundir import load_trained_model

    metrics = {}
    for name in ("fp32", "bf16") + (("fp16",) if args.fp16 else ()):
        model, config = load_trained_model(args.ap_model_dir, precision=PRECISION[name])
        if args.data_dir:
            config.data.data_dir = args.data_dir
        split = config.data.eval_split
        _, class_names = inputs.source(config, split)
        batches = inputs.batches(config, split, training=False)
        if args.images:
            batches = batches.take(args.images)
        start = time.perf_counter()
        values, _ = evaluate(model, class_names, batches, progress=False)
        seconds = time.perf_counter() - start
        metrics[name] = {
            key: values[key]
            for key in ("AP", "AP50", "AP75", "mAP_voc07", "recall@300")
            if key in values
        }
        metrics[name]["eval_s"] = seconds
        print(
            f"{name}: AP {values['AP']:.4f} AP50 {values['AP50']:.4f} on '{split}' "
            f"({seconds:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    result["ap"] = metrics
    result["ap_cost"] = {
        name: metrics["fp32"]["AP"] - entry["AP"] for name, entry in metrics.items()
    }


def main():
    args = _args()
    if not args.config and not args.ap_model_dir:
        sys.exit("bench_precision.py: give --config (timing) and/or --ap-model-dir (AP)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from tf_frcnn.hardware import cpu_features, cpu_summary

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    print(f"CPU {cpu_summary()}; GPU {', '.join(gpus) or 'none'}", file=sys.stderr, flush=True)
    result = {
        "cpu": cpu_summary(),
        "cpu_features": cpu_features(),
        "gpus": gpus,
        "tf": tf.__version__,
        "keras": keras.__version__,
        "threads": args.threads,
    }
    if args.config:
        result.update(config=args.config, size=args.size, runs=args.runs)
        timing(args, result)
    if args.ap_model_dir:
        result["ap_model_dir"] = args.ap_model_dir
        average_precision(args, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
