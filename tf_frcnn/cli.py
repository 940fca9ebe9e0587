"""The ``tf-frcnn`` command: train, eval, export, predict, demo.

Every user error ends the program with one line naming its cause and a
non-zero exit status; progress bars show every long step.
"""

import argparse
import json
import os
import sys
import time

from tf_frcnn.choices import STRATEGIES

EXAMPLES = {
    "train": "examples:\n  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes\n"
    "  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes --resume\n"
    "  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes --minutes 20",
    "eval": "examples:\n  tf-frcnn eval --config configs/shapes.yaml --model-dir runs/shapes\n"
    "  tf-frcnn eval --config configs/shapes.yaml --model-dir runs/shapes "
    "--weights final",
    "export": "examples:\n  tf-frcnn export --model-dir runs/shapes --out saved_models/shapes\n"
    "  tf-frcnn export --model-dir runs/shapes --out saved_models/shapes --tflite\n"
    "  tf-frcnn export --model-dir runs/shapes --format keras",
    "predict": "examples:\n"
    "  tf-frcnn predict --model saved_models/shapes img1.jpg img2.png --out preds/\n"
    "  tf-frcnn predict --model saved_models/shapes/1/model.tflite img.jpg --out preds/\n"
    "  tf-frcnn predict --model saved_models/shapes img.jpg --out preds/ \\\n"
    "      --thresholds runs/shapes/metrics.json --html",
    "demo": "example:\n  tf-frcnn demo        (what `make demo` runs)",
    "analyze": "examples:\n  tf-frcnn analyze --config configs/mobilenet_cpu.yaml --fit-anchors\n"
    "  tf-frcnn analyze --config my.yaml --out runs/analysis/my",
}


WEIGHTS_HELP = (
    "best.weights.h5 (the final stage's best validation, train.select_by), final.weights.h5 "
    "(default: best where it exists, else final) or model.keras (written by "
    "export --format keras)"
)


class UserError(Exception):
    """An error the user can act on; printed as one line."""


def version_text():
    """tf-frcnn's version, TensorFlow's and Keras', and what the CPU offers for reduced
    precision (``tf_frcnn.hardware``)."""
    import keras
    import tensorflow as tf

    from tf_frcnn import __version__
    from tf_frcnn.hardware import cpu_summary

    return (
        f"tf-frcnn {__version__}\nTensorFlow {tf.__version__}, Keras {keras.__version__}\n"
        f"CPU {cpu_summary()}"
    )


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _command(sub, name, help_text, run):
    """The parser of one ``tf-frcnn`` command, running ``run(args)``."""
    command_parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command_parser.set_defaults(run=run)
    return command_parser


def _config_options(command_parser):
    command_parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    command_parser.add_argument("--data-dir", help="TFDS data dir for the synthetic dataset")


def _trained_model_options(command_parser, svd_outputs=""):
    command_parser.add_argument("--model-dir", required=True)
    command_parser.add_argument("--weights", choices=["best", "final", "keras"], help=WEIGHTS_HELP)
    command_parser.add_argument(
        "--svd-ranks",
        type=int,
        nargs="+",
        metavar="RANK",
        help="truncated SVD of the head's fc layers, one rank per layer (0 keeps a layer), "
        f"e.g. 1024 256 for VGG16's fc6/fc7 (Fast R-CNN Sec. 3.1){svd_outputs}",
    )


def _train_parser(sub):
    train = _command(sub, "train", "Train a model directory with the config's schedule.", cmd_train)
    _config_options(train)
    train.add_argument(
        "--model-dir", help="where checkpoints and state.json go (default: runs/<config name>)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint of the unfinished stage",
    )
    train.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="tf.distribute strategy (default: the config's train.strategy)",
    )
    train.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="fit the whole schedule into M minutes on this machine, each "
        "stage keeping its share of the config's steps (train.minutes); "
        "measured when training starts, kept by --resume",
    )


def _evaluate_parser(sub):
    evaluate = _command(
        sub,
        "eval",
        "Evaluate a trained model; writes metrics.json, report.md and "
        "report.html (error analysis, per-class thresholds, gallery).",
        cmd_eval,
    )
    _config_options(evaluate)
    _trained_model_options(evaluate, "; writes metrics_svd.json and report_svd.md")
    evaluate.add_argument("--split", help="split to evaluate (default: the config's eval_split)")


def _export_parser(sub):
    export = _command(
        sub,
        "export",
        "Export a trained model as a TF Serving SavedModel "
        "(and a built-in-only TFLite model), or as one .keras file.",
        cmd_export,
    )
    _trained_model_options(export)
    export.add_argument(
        "--format",
        choices=["saved_model", "keras"],
        default="saved_model",
        help="keras: the whole model in one file that keras.models.load_model "
        "reads after `import tf_frcnn` (default OUT: MODEL_DIR/model.keras, "
        "which --weights keras loads)",
    )
    export.add_argument(
        "--out",
        help="saved_model: base dir (required), version N goes in OUT/N/; keras: the .keras file",
    )
    export.add_argument("--tflite", action="store_true", help="also write OUT/N/model.tflite")
    export.add_argument(
        "--tflite-variants",
        action="store_true",
        help="also write the float16, dynamic_int8 and int8 TFLite files",
    )
    export.add_argument(
        "--tflite-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="TFLite input size, resized in the graph by the config's rule "
        "(default: a data.pad_to canvas the image is resized into on the host)",
    )
    export.add_argument(
        "--calibration",
        type=int,
        default=200,
        metavar="N",
        help="training images that calibrate the int8 TFLite file",
    )
    export.add_argument(
        "--verify",
        action="store_true",
        help="run every artifact over the eval split against the Keras model; "
        "writes verify.json and verify.md, fails naming a worse artifact",
    )
    export.add_argument(
        "--tolerance", type=float, default=0.005, help="--verify: largest AP drop allowed"
    )
    export.add_argument("--images", type=int, metavar="N", help="--verify: first N images only")


def _predict_parser(sub):
    predict = _command(
        sub, "predict", "Draw detections of an exported model on images.", cmd_predict
    )
    predict.add_argument("--model", required=True, help="SavedModel dir or .tflite file")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--out", required=True, help="directory for the PNGs")
    predict.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="draw detections scoring at least this (default 0.5)",
    )
    predict.add_argument(
        "--thresholds",
        metavar="METRICS_JSON",
        help="per-class thresholds (max F1) from the metrics.json of "
        "tf-frcnn eval; --score-threshold for a class without one",
    )
    predict.add_argument(
        "--html",
        action="store_true",
        help="also write OUT/index.html, a page of the drawn predictions",
    )


def _demo_parser(sub):
    demo = _command(
        sub, "demo", "Generate the synthetic data, train, evaluate, export, predict.", cmd_demo
    )
    demo.add_argument("--config", default=None, help="default: configs/shapes.yaml")
    demo.add_argument("--model-dir", default="runs/demo")
    demo.add_argument("--data-dir", default=None, help="TFDS data dir (default: runs/tfds)")


def _analyze_parser(sub):
    analyze = _command(
        sub,
        "analyze",
        "Analyse the training split: box sizes after the resize, "
        "anchor coverage, same-class overlap, and the settings they imply.",
        cmd_analyze,
    )
    _config_options(analyze)
    analyze.add_argument(
        "--out", help="where analysis.json and the PNGs go (default: runs/analysis/<config name>)"
    )
    analyze.add_argument(
        "--fit-anchors",
        action="store_true",
        help="also fit scales x ratios to the boxes (done anyway when the "
        "config says anchor_scales/anchor_ratios: auto)",
    )
    analyze.add_argument("--split", help="split to analyse (default: the config's train_split)")


def _parser():
    parser = argparse.ArgumentParser(
        prog="tf-frcnn",
        description="Faster R-CNN in TensorFlow / Keras: train with the paper's "
        "4-step alternating schedule, evaluate, export to SavedModel and TFLite, predict.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions and the CPU's AMX / AVX512_BF16 / VNNI support",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _export_parser(sub)
    _predict_parser(sub)
    _demo_parser(sub)
    _analyze_parser(sub)
    return parser


def _config(path, data_dir=None):
    from tf_frcnn.config import load_config

    config = load_config(path)
    if data_dir:
        config.data.data_dir = data_dir
    return config


def _config_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def cmd_train(args):
    from tf_frcnn.data.resolve import resolve_config
    from tf_frcnn.training import train

    config = _config(args.config, args.data_dir)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise UserError(f"--minutes {args.minutes:g} must be > 0")
        config.train.minutes = args.minutes
    model_dir = args.model_dir or os.path.join("runs", _config_name(args.config))
    _check_writable(model_dir)
    start = time.perf_counter()
    train(config, model_dir, resume=args.resume, strategy=args.strategy, resolve=resolve_config)
    print(f"trained {model_dir} in {time.perf_counter() - start:.0f} s")
    return model_dir


def _check_writable(directory, what="model dir"):
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, ".write-test")
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UserError(f"{what} {directory} is not writable: {error.strerror}") from None


def cmd_eval(args):
    from tf_frcnn.data.analysis import resolve_sizes
    from tf_frcnn.evaluation import format_table
    from tf_frcnn.evaluation.runner import evaluate_model_dir

    # data.min_size/max_size "auto": the sizes the model dir was trained with.
    config = resolve_sizes(_config(args.config, args.data_dir), model_dir=args.model_dir)
    model, _, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    print(
        f"evaluating {args.model_dir} ({weights}) on split '{args.split or config.data.eval_split}'"
    )
    suffix = "_svd" if args.svd_ranks else ""
    extra = {"weights": weights.split()[0]}
    if args.svd_ranks:
        extra["svd_ranks"] = list(args.svd_ranks)
    metrics, report = evaluate_model_dir(
        config, model, args.model_dir, args.split, suffix=suffix, extra=extra
    )
    print(format_table(metrics))
    print(
        f"wrote {os.path.join(args.model_dir, f'metrics{suffix}.json')}, {report} and "
        f"{os.path.splitext(report)[0]}.html"
    )
    return metrics


def _load_model(model_dir, svd_ranks=None, weights=None):
    """(model, config, "best (stage detector4, step 40, mAP50 0.81)" or "final")."""
    from tf_frcnn.rundir import (
        BEST_WEIGHTS,
        FINAL_WEIGHTS,
        KERAS_MODEL,
        RunState,
        load_trained_model,
        trained_weights,
    )

    if not os.path.exists(os.path.join(model_dir, FINAL_WEIGHTS)):
        raise UserError(
            f"model dir {model_dir} has no finished training "
            f"({FINAL_WEIGHTS} missing): run tf-frcnn train first"
        )
    weights, path = trained_weights(model_dir, weights)
    if not os.path.exists(path) and weights == "keras":
        raise UserError(
            f"model dir {model_dir} has no {KERAS_MODEL}: run tf-frcnn export "
            f"--model-dir {model_dir} --format keras first"
        )
    if not os.path.exists(path):
        raise UserError(
            f"model dir {model_dir} has no {BEST_WEIGHTS} (its final stage did "
            "not validate: set train.eval_every and data.val_split); use "
            "--weights final"
        )
    described = weights
    best = RunState.load(model_dir).best if weights == "best" else None
    if best:
        values = (f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.items())
        described += f" ({', '.join(values)})"
    try:
        return (*load_trained_model(model_dir, svd_ranks, weights), described)
    except ValueError as error:
        if svd_ranks and "rank" in str(error).lower():
            raise UserError(str(error)) from None
        raise


def cmd_export(args):
    from tf_frcnn.export import export_saved_model, read_labels
    from tf_frcnn.export.verify import VerifyError, format_table, verify_export

    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.format == "keras":
        return _export_keras(args)
    if not args.out:
        raise UserError("--out is required: the SavedModel's base dir")
    model, config, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    print(f"exporting {args.model_dir} ({weights})")
    class_names = read_labels(args.model_dir)
    d = config.data
    version_dir = export_saved_model(
        model, args.out, class_names, min_size=d.min_size, max_size=d.max_size, pad_to=d.pad_to
    )
    print(f"SavedModel: {version_dir}")
    tflite = _export_tflite(args, model, config, version_dir)
    if args.verify:
        print(f"verifying on split '{d.eval_split}'")
        try:
            report = verify_export(
                model,
                config,
                class_names,
                version_dir,
                tflite,
                num_images=args.images,
                tolerance=args.tolerance,
            )
        except VerifyError as error:
            print(format_table(json.loads((version_dir / "verify.json").read_text())))
            raise UserError(f"verify failed: {error}") from None
        print(format_table(report))
    return version_dir


def _export_keras(args):
    from tf_frcnn.rundir import KERAS_MODEL, save_weights_atomic

    if args.tflite or args.tflite_variants or args.verify:
        raise UserError("--tflite, --tflite-variants and --verify go with --format saved_model")
    path = args.out or os.path.join(args.model_dir, KERAS_MODEL)
    if not path.endswith(".keras"):
        raise UserError(f"--out {path}: a Keras model file's name ends in .keras")
    model, _, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_weights_atomic(model, path)
    print(f"Keras model ({weights}): {path}")
    return path


def _export_tflite(args, model, config, version_dir):
    """The TFLite files --tflite / --tflite-variants ask for, as (name, path, resize)."""
    if not (args.tflite or args.tflite_variants):
        return []
    from tf_frcnn.data import inputs
    from tf_frcnn.export.tflite import calibration_inputs, export_tflite_variants

    d = config.data
    canvas = args.tflite_size is None
    height, width = args.tflite_size or d.pad_to or (d.max_size, d.max_size)
    variants = ["float32"]
    calibration = None
    if args.tflite_variants:
        variants += ["float16", "dynamic_int8", "int8"]
        records, _ = inputs.source(config, d.train_split)
        images = [r["image"] for r in records.take(args.calibration).as_numpy_iterator()]
        calibration = calibration_inputs(
            images, height, width, (d.min_size, d.max_size) if canvas else None
        )
    written = export_tflite_variants(
        model,
        version_dir,
        height=height,
        width=width,
        min_size=d.min_size,
        max_size=d.max_size,
        representative_images=calibration,
        canvas=canvas,
        variants=variants,
    )
    for name, entry in written.items():
        print(f"TFLite {name}: {entry['path']}")
    return [(name, entry["path"], entry["resize"]) for name, entry in written.items()]


def cmd_predict(args):
    from tf_frcnn.data import read_image_rgb
    from tf_frcnn.evaluation.html_report import write_prediction_index
    from tf_frcnn.evaluation.thresholds import read_thresholds
    from tf_frcnn.export import load_predictor, read_labels
    from tf_frcnn.visualize import draw_predictions

    if not os.path.exists(args.model):
        raise UserError(f"model not found: {args.model}")
    predictor = load_predictor(args.model)
    class_names = read_labels(args.model)
    thresholds = {}
    if args.thresholds:
        try:
            thresholds = read_thresholds(args.thresholds, class_names)
        except ValueError as error:
            raise UserError(f"--thresholds: {error}") from None
    written, entries = [], []
    for path in args.images:
        if not os.path.isfile(path):
            raise UserError(f"image not found: {path}")
        try:
            image = read_image_rgb(path)
        except Exception as error:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UserError(f"cannot read image {path}: {error}") from None
        target = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        kept = draw_predictions(
            predictor, image, class_names, target, thresholds, args.score_threshold
        )
        print(
            f"{path}: {len(kept)} detections {kept[:5]}{' ...' if len(kept) > 5 else ''} "
            f"-> {target}"
        )
        written.append(target)
        entries.append({"picture": os.path.basename(target), "source": path, "detections": kept})
    if args.html:
        index = write_prediction_index(args.out, entries, args.model)
        print(f"wrote {index}")
    return written


def cmd_demo(args):
    from tf_frcnn.demo import run_demo

    return run_demo(config_path=args.config, model_dir=args.model_dir, data_dir=args.data_dir)


def cmd_analyze(args):
    from tf_frcnn.data.analysis import analyze
    from tf_frcnn.data.analysis_report import format_analysis, write_analysis

    config = _config(args.config, args.data_dir)
    out = args.out or os.path.join("runs", "analysis", _config_name(args.config))
    _check_writable(out, "output dir")
    result = analyze(config, split=args.split, fit=args.fit_anchors)
    print(format_analysis(result.summary))
    paths = write_analysis(result, out)
    print(f"wrote {', '.join(str(path) for path in paths)}")
    return result.summary


def main(argv=None):
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tf_frcnn.config import ConfigError
    from tf_frcnn.data import DataError
    from tf_frcnn.training import TrainingDiverged

    try:
        args.run(args)
        return 0
    except (UserError, ConfigError, DataError, TrainingDiverged) as error:
        message = " ".join(str(error).split())
    except FileNotFoundError as error:
        message = f"file not found: {error.filename or error}"
    except OSError as error:
        message = f"{error.strerror or error}: {error.filename}"
    except KeyboardInterrupt:
        print(f"tf-frcnn {args.command}: interrupted", file=sys.stderr)
        return 130
    print(f"tf-frcnn {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
