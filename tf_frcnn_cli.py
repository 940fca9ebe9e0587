"""The ``tf-frcnn`` command's entry point: parses the arguments, then loads the commands.

It lives outside the ``tf_frcnn`` package because importing anything of the package runs
``tf_frcnn/__init__``, which imports TensorFlow (the Keras classes must be registered by
``import tf_frcnn`` for ``keras.models.load_model`` to read a ``model.keras``). So this module
imports nothing of ours at its top: ``tf-frcnn --help`` and a usage error return in a fraction of
a second, and TensorFlow loads once the arguments are known, in ``main`` (``tf_frcnn.cli`` runs
the command). The choices below are the package's own (``tf_frcnn.choices``,
``tf_frcnn.progress``, ``tf_frcnn.rundir``); tests/test_cli_output.py pins them equal.
"""

import argparse
import os
import sys

STRATEGIES = ("default", "mirrored", "multiworker")
WEIGHT_CHOICES = ("best", "final", "keras")
LOG_FORMATS = ("auto", "bar", "lines")

EXAMPLES = {
    "train": "examples:\n  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes\n"
    "  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes --resume\n"
    "  tf-frcnn train --config configs/shapes.yaml --model-dir runs/shapes --minutes 20\n"
    "  tf-frcnn train --config configs/shapes.yaml > train.log   (one line per 50 steps)",
    "eval": "examples:\n  tf-frcnn eval --model-dir runs/shapes   (reads runs/shapes/config.yaml)\n"
    "  tf-frcnn eval --model-dir runs/shapes --weights final   (writes metrics_final.json)\n"
    "  tf-frcnn eval --model-dir runs/shapes --split validation",
    "export": "examples:\n  tf-frcnn export --model-dir runs/shapes --out saved_models/shapes\n"
    "  tf-frcnn export --model-dir runs/shapes --out saved_models/shapes --tflite --verify\n"
    "  tf-frcnn export --model-dir runs/shapes --format keras",
    "predict": "examples:\n"
    "  tf-frcnn predict --model saved_models/shapes photos/          (a directory)\n"
    "  tf-frcnn predict --model saved_models/shapes 'photos/*.jpg' img.png --out preds/\n"
    "  tf-frcnn predict --model saved_models/shapes/1/model.tflite img.jpg\n"
    "  tf-frcnn predict --model saved_models/shapes img.jpg \\\n"
    "      --thresholds runs/shapes/metrics.json --html",
    "demo": "example:\n  tf-frcnn demo        (what `make demo` runs)",
    "analyze": "examples:\n  tf-frcnn analyze --config configs/mobilenet_cpu.yaml --fit-anchors\n"
    "  tf-frcnn analyze --config my.yaml   (writes runs/my/analysis/)\n"
    "  tf-frcnn analyze --config my.yaml --out elsewhere/",
}

WEIGHTS_HELP = (
    "best: best.weights.h5 (the final stage's best validation, train.select_by), "
    "final: final.weights.h5 "
    "(default: best where it exists, else final), keras: model.keras (written by "
    "export --format keras)"
)
MODEL_DIR_HELP = (
    "the trained run's directory (train's --model-dir, default runs/<config name>): "
    "its config.yaml, labels.txt and weights"
)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        # Asked for: the versions need TensorFlow loaded.
        from tf_frcnn.cli import version_text

        print(version_text())
        parser.exit()


def _command(sub, name, help_text):
    """The parser of one ``tf-frcnn`` command."""
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _config_options(command_parser, required=True):
    command_parser.add_argument(
        "--config",
        required=required,
        help="YAML config (see configs/)"
        + ("" if required else "; default: MODEL_DIR/config.yaml, the one training used"),
    )
    command_parser.add_argument("--data-dir", help="TFDS data dir for the synthetic dataset")


def _trained_model_options(command_parser, svd_outputs=""):
    command_parser.add_argument("--model-dir", required=True, help=MODEL_DIR_HELP)
    command_parser.add_argument("--weights", choices=WEIGHT_CHOICES, help=WEIGHTS_HELP)
    command_parser.add_argument(
        "--svd-ranks",
        type=int,
        nargs="+",
        metavar="RANK",
        help="truncated SVD of the head's fc layers, one rank per layer (0 keeps a layer), "
        f"e.g. 1024 256 for VGG16's fc6/fc7 (Fast R-CNN Sec. 3.1){svd_outputs}",
    )


def _train_parser(sub):
    train = _command(sub, "train", "Train a model directory with the config's schedule.")
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
    train.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="bar: Keras progress bars; lines: one plain line every train.log_every steps "
        "and one per validation, for log files; auto (default): bar in a terminal, else lines",
    )


def _evaluate_parser(sub):
    evaluate = _command(
        sub,
        "eval",
        "Evaluate a trained model; writes metrics.json, report.md and report.html (error "
        "analysis, per-class thresholds, gallery); another --split or --weights writes "
        "metrics_<split>_<weights>.json and its own report.",
    )
    _config_options(evaluate, required=False)
    _trained_model_options(evaluate, "; writes metrics_svd.json and report_svd.md")
    evaluate.add_argument("--split", help="split to evaluate (default: the config's eval_split)")


def _export_parser(sub):
    export = _command(
        sub,
        "export",
        "Export a trained model as a TF Serving SavedModel "
        "(and a built-in-only TFLite model), or as one .keras file.",
    )
    _trained_model_options(export)
    _config_options(export, required=False)
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
        sub,
        "predict",
        "Detect objects with an exported model: draws each picture and writes "
        "predictions.json (COCO results format) beside them.",
    )
    predict.add_argument("--model", required=True, help="SavedModel dir or .tflite file")
    predict.add_argument(
        "images",
        nargs="+",
        help="image files, directories (their images, not recursive) and globs ('photos/*.jpg')",
    )
    predict.add_argument(
        "--out",
        help="directory for the drawn PNGs and predictions.json "
        "(default: runs/predict/<model name>, from the current directory)",
    )
    predict.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="keep detections scoring at least this (default 0.5)",
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
    demo = _command(sub, "demo", "Generate the synthetic data, train, evaluate, export, predict.")
    demo.add_argument("--config", default=None, help="default: configs/shapes.yaml")
    demo.add_argument("--model-dir", default="runs/demo")
    demo.add_argument("--data-dir", default=None, help="TFDS data dir (default: runs/tfds)")


def _analyze_parser(sub):
    analyze = _command(
        sub,
        "analyze",
        "Analyse the training split: box sizes after the resize, "
        "anchor coverage, same-class overlap, and the settings they imply.",
    )
    _config_options(analyze)
    analyze.add_argument(
        "--out",
        help="where analysis.json and the PNGs go (default: runs/<config name>/analysis, "
        "inside the run dir `train --config` makes)",
    )
    analyze.add_argument(
        "--fit-anchors",
        action="store_true",
        help="also fit scales x ratios to the boxes (done anyway when the "
        "config says anchor_scales/anchor_ratios: auto)",
    )
    analyze.add_argument("--split", help="split to analyse (default: the config's train_split)")


def build_parser():
    """The argument parser of every ``tf-frcnn`` command; builds without TensorFlow."""
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
    for add in (
        _train_parser,
        _evaluate_parser,
        _export_parser,
        _predict_parser,
        _demo_parser,
        _analyze_parser,
    ):
        add(sub)
    return parser


def main(argv=None):
    """Runs ``tf-frcnn`` with ``argv`` (default: the command line); returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow loads here, once the arguments are known (see the module's docstring).
    from tf_frcnn.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
