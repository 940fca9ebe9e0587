"""Size, per-image latency and AP of the exports: SavedModel and TFLite float32 / float16 /
dynamic-range int8 / int8 (networks in int8, box arithmetic in float), each TFLite model under
XNNPACK and without it. (`tf-frcnn export --verify` reports the same per export.)

    python benchmarks/export_sizes.py --model-dir runs/shapes [--eval] [--threads 2]
    python benchmarks/export_sizes.py --config configs/shapes.yaml    # untrained: size, latency
    python benchmarks/export_sizes.py --config configs/voc07_vgg16.yaml --no-tflite --size 600 1000

With ``--model-dir`` (a finished ``tf-frcnn train`` directory) the trained model is exported;
with ``--config`` a freshly initialised one (sizes and latency do not depend on the weights;
AP does, so ``--eval`` needs ``--model-dir``). ``--eval`` runs every export over the config's
evaluation split (the synthetic test split for configs/shapes.yaml) and prints COCO AP, AP50 and
VOC07 mAP with their change from the SavedModel.

Latency: one image of ``--size`` (default: the synthetic image size, else max_size square),
uint8, after two warm-up runs; the median of ``--repeats`` runs, on ``--threads`` CPU threads
(TensorFlow intra/inter-op threads for the SavedModel, the interpreter's for TFLite). The TFLite
models take that size as their fixed input. TFLite latency is measured twice: under the default
XNNPACK delegate and with the reference built-in kernels alone (``--no-xnnpack-too`` skips the
second). The int8 model is calibrated on the first ``--calibration`` images of the
config's training split (which must have the TFLite input size; with --config the calibration
images are random).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import tempfile
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a trained model directory (tf-frcnn train)")
    source.add_argument("--config", help="a config: export an untrained model of it")
    parser.add_argument("--out", help="where the exports go (default: a temporary directory)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="image size for latency and the TFLite input",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-tflite", action="store_true", help="SavedModel only")
    parser.add_argument("--eval", action="store_true", help="AP of every export (--model-dir)")
    parser.add_argument("--max-images", type=int, default=None, help="cap on --eval images")
    parser.add_argument(
        "--calibration",
        type=int,
        default=32,
        help="training images that calibrate the int8 model (0: no int8 model)",
    )
    parser.add_argument(
        "--no-xnnpack-too",
        action="store_true",
        help="skip the TFLite timings without the XNNPACK delegate",
    )
    args = parser.parse_args()
    if args.eval and not args.model_dir:
        parser.error("--eval needs --model-dir (an untrained model has no AP to compare)")
    return args


def directory_bytes(path):
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


def median_seconds(fn, repeats):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load(args):
    """(model, config, class names)."""
    from tf_frcnn import load_config
    from tf_frcnn.model import build_model

    if args.model_dir:
        from tf_frcnn.export import read_labels
        from tf_frcnn.rundir import load_trained_model

        model, config = load_trained_model(args.model_dir)
        return model, config, read_labels(args.model_dir)
    import tensorflow as tf

    config = load_config(args.config)
    config.model.weights = None  # untrained anyway; ImageNet weights would need a download
    model = build_model(config)
    model({"images": tf.zeros([1, 64, 64, 3])})
    names = config.model.class_names or [
        f"class_{label}" for label in range(1, config.model.num_classes + 1)
    ]
    return model, config, names


def calibration_images(args, config, height, width):
    """uint8 [1, height, width, 3] arrays from the training split (random with --config)."""
    import numpy as np

    if args.calibration <= 0:
        return None
    if not args.model_dir:
        rng = np.random.default_rng(1)
        return [
            rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
            for _ in range(args.calibration)
        ]
    from tf_frcnn.data import inputs

    records, _ = inputs.source(config, config.data.train_split)
    images = []
    for record in records.take(args.calibration).as_numpy_iterator():
        image = record["image"]
        if image.shape[:2] == (height, width):
            images.append(image[np.newaxis])
    return images or None


def evaluate(predictor, config, class_names, max_images):
    """COCO / VOC metrics of ``predictor`` on the config's evaluation split (original images)."""
    from tf_frcnn.data import inputs
    from tf_frcnn.evaluation import Evaluator

    records, _ = inputs.source(config, config.data.eval_split)
    if max_images:
        records = records.take(max_images)
    evaluator = Evaluator(len(class_names), class_names)
    for record in records.as_numpy_iterator():
        image = record["image"]
        height, width = image.shape[:2]
        scale = [height, width, height, width]
        out = predictor(image)
        evaluator.update(
            [
                {
                    "image_id": record["image_id"],
                    "boxes": record["boxes"] * scale,
                    "labels": record["labels"],
                    "difficult": record.get("difficult"),
                    "height": height,
                    "width": width,
                }
            ],
            [
                {
                    "image_id": record["image_id"],
                    "boxes": out["detection_boxes"] * scale,
                    "scores": out["detection_scores"],
                    "classes": out["detection_classes"],
                }
            ],
        )
    return evaluator.result()


def main():
    args = parse_args()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from tf_frcnn.export import export_saved_model, export_tflite_variants, load_predictor

    model, config, class_names = load(args)
    d = config.data
    if args.size:
        height, width = args.size
    elif d.source == "synthetic":
        height = width = d.image_size
    else:
        height = width = d.max_size
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="export_sizes-"))

    exports = {
        "SavedModel": export_saved_model(
            model,
            out / "saved_model",
            class_names,
            min_size=d.min_size,
            max_size=d.max_size,
            pad_to=d.pad_to,
        )
    }
    sizes = {"SavedModel": directory_bytes(exports["SavedModel"])}
    if not args.no_tflite:
        variants = export_tflite_variants(
            model,
            exports["SavedModel"],
            height=height,
            width=width,
            min_size=d.min_size,
            max_size=d.max_size,
            representative_images=calibration_images(args, config, height, width),
        )
        for name, variant in variants.items():
            exports[f"TFLite {name}"] = variant["path"]
            sizes[f"TFLite {name}"] = variant["bytes"]

    image = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    rows = []
    metrics = {}
    for name, path in exports.items():
        predictor = load_predictor(path, num_threads=args.threads)
        seconds = median_seconds(functools.partial(predictor, image), args.repeats)
        reference = None
        if name != "SavedModel" and not args.no_xnnpack_too:
            plain = load_predictor(path, num_threads=args.threads, xnnpack=False)
            reference = median_seconds(functools.partial(plain, image), args.repeats)
        if args.eval:
            metrics[name] = evaluate(predictor, config, class_names, args.max_images)
        rows.append((name, sizes[name], seconds, reference))

    backbone = config.model.backbone
    print(
        f"\n{backbone} backbone, {height}x{width} uint8 input, resize min_size {d.min_size} / "
        f"max_size {d.max_size}, {args.threads} threads; exports in {out}\n"
    )
    header = (
        "| export | size (MB) | latency (ms/image) | speed-up vs SavedModel |"
        " without XNNPACK (ms/image) |"
    )
    if args.eval:
        header += " AP | AP50 | mAP VOC07 | AP change |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    base_seconds = rows[0][2]
    for name, size, seconds, reference in rows:
        plain = "" if reference is None else f"{reference * 1e3:.1f}"
        line = (
            f"| {name} | {size / 1e6:.1f} | {seconds * 1e3:.1f} | "
            f"{base_seconds / seconds:.2f}x | {plain} |"
        )
        if args.eval:
            m, base = metrics[name], metrics["SavedModel"]
            line += (
                f" {m['AP']:.4f} | {m['AP50']:.4f} | {m['mAP_voc07']:.4f} |"
                f" {m['AP'] - base['AP']:+.4f} |"
            )
        print(line)


if __name__ == "__main__":
    main()
