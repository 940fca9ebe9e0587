"""The ``tf-frcnn`` commands: train, eval, export, predict, demo, analyze, run on the arguments
that ``tf_frcnn_cli`` (the entry point, which parses them without loading TensorFlow) parsed.

Every user error ends the program with one line naming its cause and a non-zero exit status;
every command ends with a summary of what it made (``tf_frcnn.summary``); progress prints as
bars in a terminal and as plain lines elsewhere (``tf_frcnn.progress``).
"""

import json
import os
import re
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_frcnn import __version__
from tf_frcnn.config import ConfigError, load_config
from tf_frcnn.config_diff import config_differences
from tf_frcnn.config_paths import absolute_paths
from tf_frcnn.data import DataError, inputs, read_image_rgb
from tf_frcnn.data.analysis import analyze
from tf_frcnn.data.analysis_report import format_analysis, write_analysis
from tf_frcnn.data.resolve import resolve_config, resolve_sizes
from tf_frcnn.demo import run_demo
from tf_frcnn.evaluation import format_table
from tf_frcnn.evaluation.html_report import write_prediction_index
from tf_frcnn.evaluation.runner import evaluate_model_dir
from tf_frcnn.evaluation.thresholds import keep_mask, read_thresholds
from tf_frcnn.export import export_saved_model, load_predictor, read_labels
from tf_frcnn.export.tflite import calibration_inputs, export_tflite_variants
from tf_frcnn.export.verify import VerifyError, verify_export
from tf_frcnn.export.verify import format_table as format_verify_table
from tf_frcnn.hardware import cpu_summary
from tf_frcnn.predict import (
    NoImages,
    coco_results,
    default_output_dir,
    image_paths,
    write_predictions,
)
from tf_frcnn.progress import one_line_warnings, own_lines, resolve_format
from tf_frcnn.rundir import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    FINAL_WEIGHTS,
    KERAS_MODEL,
    LABELS_FILE,
    RunState,
    load_trained_model,
    read_config,
    save_weights_atomic,
    trained_weights,
)
from tf_frcnn.summary import eval_summary, export_summary, train_summary
from tf_frcnn.training import TrainingDiverged, train
from tf_frcnn.visualize import draw_predictions


class UserError(Exception):
    """An error the user can act on; printed as one line."""


def version_text():
    """tf-frcnn's version, TensorFlow's and Keras', and what the CPU offers for reduced
    precision (``tf_frcnn.hardware``)."""
    return (
        f"tf-frcnn {__version__}\nTensorFlow {tf.__version__}, Keras {keras.__version__}\n"
        f"CPU {cpu_summary()}"
    )


def _config(path, data_dir=None):
    """The config at ``path``, its relative paths read from the current directory
    (``tf_frcnn.config_paths``); ``data_dir`` replaces data.data_dir."""
    config = load_config(path)
    if data_dir:
        config.data.data_dir = data_dir
    return absolute_paths(config)


def _config_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def _run_config(args):
    """The config of ``eval``/``export``: ``--config``, or the model dir's config.yaml (the one
    training wrote). A ``--config`` that differs from it is used, and what differs is said."""
    trained = os.path.join(args.model_dir, CONFIG_FILE)
    if not args.config:
        if not os.path.exists(trained):
            raise UserError(
                f"model dir {args.model_dir} has no {CONFIG_FILE} "
                f"({os.path.abspath(trained)}): pass --config"
            )
        print(f"config: {trained} (the one training used)")
        return _config(trained, args.data_dir)
    config = _config(args.config, args.data_dir)
    if os.path.exists(trained):
        differences = config_differences(config, read_config(args.model_dir))
        if differences:
            print(
                f"config: {args.config}, which differs from {trained} (the training's) in "
                f"{len(differences)} keys: {'; '.join(differences)}"
            )
    return config


def cmd_train(args):
    config = _config(args.config, args.data_dir)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise UserError(f"--minutes {args.minutes:g} must be > 0")
        config.train.minutes = args.minutes
    model_dir = args.model_dir or os.path.join("runs", _config_name(args.config))
    _check_writable(model_dir)
    if resolve_format(args.log_format) == "lines":
        # TFDS' tqdm bars (building the synthetic dataset) redraw with "\r" too.
        tfds.disable_progress_bar()
    start = time.perf_counter()
    options = dict(resume=args.resume, strategy=args.strategy, progress=args.log_format)
    train(config, model_dir, resolve=resolve_config, **options)
    print(train_summary(model_dir, time.perf_counter() - start))
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


def _file_part(text):
    return re.sub(r"[^\w.-]+", "-", text).strip("-")


def eval_suffix(args, config):
    """The suffix of the files an evaluation writes: "" for the default one (the config's eval
    split, the default weights), else "_<split>", "_<weights>" and "_svd" as they differ."""
    parts = []
    if args.split and args.split != config.data.eval_split:
        parts.append(_file_part(args.split))
    if args.weights and args.weights != trained_weights(args.model_dir)[0]:
        parts.append(args.weights)
    if args.svd_ranks:
        parts.append("svd")
    return "".join(f"_{part}" for part in parts)


def cmd_eval(args):
    _check_trained(args.model_dir)
    # data.min_size/max_size "auto": the sizes the model dir was trained with.
    config = resolve_sizes(_run_config(args), model_dir=args.model_dir)
    model, _, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    print(
        f"evaluating {args.model_dir} ({weights}) on split '{args.split or config.data.eval_split}'"
    )
    suffix = eval_suffix(args, config)
    extra = {"weights": weights.split()[0]}
    if args.svd_ranks:
        extra["svd_ranks"] = list(args.svd_ranks)
    metrics, report = evaluate_model_dir(
        config, model, args.model_dir, args.split, suffix=suffix, extra=extra
    )
    print(format_table(metrics))
    print()
    files = {
        "report": f"{os.path.splitext(report)[0]}.html (and {report})",
        "metrics": os.path.join(args.model_dir, f"metrics{suffix}.json"),
    }
    print(eval_summary(metrics, files))
    return metrics


def _check_trained(model_dir):
    if not os.path.exists(os.path.join(model_dir, FINAL_WEIGHTS)):
        raise UserError(
            f"model dir {model_dir} has no finished training "
            f"({FINAL_WEIGHTS} missing): run tf-frcnn train first"
        )


def _load_model(model_dir, svd_ranks=None, weights=None):
    """(model, config, "best (stage detector4, step 40, mAP50 0.81)" or "final")."""
    _check_trained(model_dir)
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
    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.format == "keras":
        return _export_keras(args)
    if not args.out:
        raise UserError("--out is required: the SavedModel's base dir")
    model, trained_config, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    # The network is the trained one; --config changes what export reads (data, sizes).
    config = _run_config(args) if args.config else trained_config
    print(f"exporting {args.model_dir} ({weights})")
    class_names = read_labels(args.model_dir)
    d = config.data
    version_dir = export_saved_model(
        model, args.out, class_names, min_size=d.min_size, max_size=d.max_size, pad_to=d.pad_to
    )
    artifacts = {"SavedModel": str(version_dir)}
    tflite = _export_tflite(args, model, config, version_dir)
    artifacts.update({f"TFLite {name}": str(path) for name, path, _ in tflite})
    artifacts["labels"] = os.path.join(version_dir, LABELS_FILE)
    report = None
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
            print(format_verify_table(json.loads((version_dir / "verify.json").read_text())))
            raise UserError(f"verify failed: {error}") from None
        print(format_verify_table(report))
        artifacts["verify report"] = os.path.join(version_dir, "verify.md")
    print()
    next_command = f"tf-frcnn predict --model {args.out} IMAGES_OR_DIR"
    print(export_summary(f"{args.model_dir} ({weights})", artifacts, report, next_command))
    return version_dir


def _export_keras(args):
    if args.tflite or args.tflite_variants or args.verify:
        raise UserError("--tflite, --tflite-variants and --verify go with --format saved_model")
    path = args.out or os.path.join(args.model_dir, KERAS_MODEL)
    if not path.endswith(".keras"):
        raise UserError(f"--out {path}: a Keras model file's name ends in .keras")
    model, _, weights = _load_model(args.model_dir, args.svd_ranks, args.weights)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_weights_atomic(model, path)
    own = os.path.abspath(path) == os.path.abspath(os.path.join(args.model_dir, KERAS_MODEL))
    next_command = f"tf-frcnn eval --model-dir {args.model_dir} --weights keras" if own else None
    artifacts = {"Keras model": path}
    print(export_summary(f"{args.model_dir} ({weights})", artifacts, None, next_command))
    return path


def _export_tflite(args, model, config, version_dir):
    """The TFLite files --tflite / --tflite-variants ask for, as (name, path, resize)."""
    if not (args.tflite or args.tflite_variants):
        return []
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
    return [(name, entry["path"], entry["resize"]) for name, entry in written.items()]


def _predict_one(predictor, path, target, class_names, thresholds, score_threshold):
    """Draws ``path``'s detections into ``target``; returns (drawn [(name, score)], COCO
    results rows)."""
    try:
        image = read_image_rgb(path)
    except Exception as error:  # noqa: BLE001 - any decoder failure is the file's fault
        raise UserError(f"cannot read image {path}: {error}") from None
    outputs = []

    def detect(picture):
        outputs.append(predictor(picture))
        return outputs[-1]

    kept = draw_predictions(detect, image, class_names, target, thresholds, score_threshold)
    scores, classes = (np.asarray(outputs[0][k]) for k in ("detection_scores", "detection_classes"))
    keep = keep_mask(scores, classes, thresholds, score_threshold)
    return kept, coco_results(path, outputs[0], keep, image.shape, class_names)


def cmd_predict(args):
    if not os.path.exists(args.model):
        raise UserError(f"model not found: {args.model}")
    try:
        paths = image_paths(args.images)
    except NoImages as error:
        raise UserError(str(error)) from None
    out = args.out
    if out is None:
        out = default_output_dir(args.model)
        print(f"no --out: writing to {out} (runs/predict/<model name> in the current directory)")
    predictor = load_predictor(args.model)
    class_names = read_labels(args.model)
    thresholds = {}
    if args.thresholds:
        try:
            thresholds = read_thresholds(args.thresholds, class_names)
        except ValueError as error:
            raise UserError(f"--thresholds: {error}") from None
    written, entries, results = [], [], []
    for path in paths:
        target = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".png")
        kept, rows = _predict_one(
            predictor, path, target, class_names, thresholds, args.score_threshold
        )
        print(
            f"{path}: {len(kept)} detections {kept[:5]}{' ...' if len(kept) > 5 else ''} "
            f"-> {target}"
        )
        written.append(target)
        results += rows
        entries.append({"picture": os.path.basename(target), "source": path, "detections": kept})
    predictions = write_predictions(out, results)
    print(
        f"predicted {len(paths)} images with {args.model}: {len(results)} detections\n"
        f"  pictures:    {out}/ (one PNG per image)\n"
        f"  predictions: {predictions} (COCO results: image_id, category_id, bbox [x, y, w, h] "
        "in pixels, score, category_name, file_name)"
    )
    if args.html:
        index = write_prediction_index(out, entries, args.model)
        print(f"  page:        {index}")
    return written


def cmd_demo(args):
    return run_demo(config_path=args.config, model_dir=args.model_dir, data_dir=args.data_dir)


def cmd_analyze(args):
    config = _config(args.config, args.data_dir)
    out = args.out or os.path.join("runs", _config_name(args.config), "analysis")
    _check_writable(out, "output dir")
    result = analyze(config, split=args.split, fit=args.fit_anchors)
    print(format_analysis(result.summary))
    paths = write_analysis(result, out)
    where = "" if args.out else " (no --out: runs/<config name>/analysis, the config's run dir)"
    print(f"wrote into {out}{where}: {', '.join(os.path.basename(str(p)) for p in paths)}")
    return result.summary


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "export": cmd_export,
    "predict": cmd_predict,
    "demo": cmd_demo,
    "analyze": cmd_analyze,
}


def run(args):
    """Runs the command ``args`` (parsed by ``tf_frcnn_cli``) names; returns the exit status:
    0, 2 after a one-line error on stderr, 130 when interrupted."""
    try:
        with own_lines(), one_line_warnings():
            COMMANDS[args.command](args)
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
