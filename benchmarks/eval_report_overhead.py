"""What the error analysis and report.html add to ``tf-frcnn eval``.

    PYTHONPATH=. .venv/bin/python benchmarks/eval_report_overhead.py --config configs/shapes.yaml \
        --model-dir runs/demo --data-dir runs/tfds --rounds 3

In one process with the model loaded once, each round runs the inference and metrics once
(``runner.evaluate``), then writes (a) what ``tf-frcnn eval`` wrote before the report:
metrics.json, the PR and loss plots and report.md, into a scratch directory, and (b) what it writes
now (``runner.write_outputs``: the same plus the error analysis, the RPN-recall and validation
plots, the gallery with its images read again, and report.html) into a copy of the model dir.
"Before" is the inference plus (a), "with report" the inference plus (b). Prints each round's
times, then one JSON line with the medians and their ratio.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tf_frcnn.config import load_config
    from tf_frcnn.data import inputs
    from tf_frcnn.evaluation.report import write_metrics_json, write_report
    from tf_frcnn.evaluation.report_plots import plot_loss_curves, plot_pr_curves
    from tf_frcnn.evaluation.runner import evaluate, write_outputs
    from tf_frcnn.rundir import load_trained_model
    from tf_frcnn.stages import stage_names
    from tf_frcnn.training.loop import read_history

    config = load_config(args.config)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    model, _ = load_trained_model(args.model_dir)
    scratch = tempfile.mkdtemp(prefix="eval-overhead-")
    copy = os.path.join(scratch, "model")
    shutil.copytree(args.model_dir, copy, ignore=shutil.ignore_patterns("stages", "*.h5"))
    split = config.data.eval_split
    _, class_names = inputs.source(config, split)

    def old_outputs(metrics, evaluator):
        out = os.path.join(scratch, "before")
        write_metrics_json(metrics, os.path.join(out, "metrics.json"))
        images = {
            "PR": plot_pr_curves(
                evaluator.voc_result(), class_names, os.path.join(out, "pr_curves.png")
            )
        }
        history = {
            stage: rows
            for stage in stage_names(config)
            if (rows := read_history(os.path.join(copy, "logs"), stage))
        }
        if history:
            images["loss"] = plot_loss_curves(history, os.path.join(out, "loss_curves.png"))
        write_report(out, metrics, images)

    def infer():
        return evaluate(
            model, class_names, inputs.batches(config, split, training=False), progress=False
        )

    infer()  # warm-up: dataset cache, first traces
    times = {"inference_s": [], "before_s": [], "with_report_s": [], "report_s": []}
    for round_index in range(args.rounds):
        start = time.perf_counter()
        metrics, evaluator = infer()
        inferred = time.perf_counter()
        old_outputs(dict(metrics), evaluator)
        old_done = time.perf_counter()
        write_outputs(config, copy, split, dict(metrics), evaluator, class_names)
        new_done = time.perf_counter()
        times["inference_s"].append(inferred - start)
        times["before_s"].append(old_done - start)
        times["with_report_s"].append(inferred - start + new_done - old_done)
        times["report_s"].append(new_done - old_done)
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{key} {values[-1]:.2f}" for key, values in times.items()),
            flush=True,
        )
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(
        json.dumps(
            {
                **{f"{k}_median": round(v, 2) for k, v in medians.items()},
                "ratio": round(medians["with_report_s"] / medians["before_s"], 3),
                "html_bytes": os.path.getsize(os.path.join(copy, "report.html")),
            }
        )
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
