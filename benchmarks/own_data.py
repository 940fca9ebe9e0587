"""Paper anchors vs fitted anchors, with and without augmentation, in the same CPU budget.

    python benchmarks/own_data.py --minutes 6 [--datasets aquarium raccoon]
        [--variants paper paper+aug fitted fitted+aug] [--out runs/own_data]
    python benchmarks/own_data.py --steps-scale 0.35 ...

Each run is what a new user does with `configs/mobilenet_cpu.yaml`: `tf-frcnn train --minutes M`
then `tf-frcnn eval`, in its own process, one after the other (never two at once: the budget is
wall time). `--steps-scale F` gives every variant the same steps instead (the config's stage
steps times F), for a machine shared with other work, where a wall-time budget would buy
different amounts of computation at different times. The variants differ only in the anchors
("paper": 128/256/512 px x 0.5/1/2; "fitted": `anchor_scales: auto`, `anchor_ratios: auto`) and
in `data.augment` (off, or the example config's). Prints a Markdown table of mAP50 (VOC
all-point), COCO AP and per-class AP50.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, "configs", "mobilenet_cpu.yaml")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")

DATASETS = {
    "aquarium": {
        "source": "yolo",
        "root": os.path.join(SHARED, "aquarium"),
        "train_split": "train",
        "val_split": "valid",
        "eval_split": "test",
        "num_classes": 7,
        "class_names": None,
    },
    "raccoon": {
        "source": "voc",
        "root": os.path.join(SHARED, "raccoon"),
        "train_split": "train",
        "val_split": 0.15,
        "eval_split": "val",
        "num_classes": 1,
        "class_names": ["raccoon"],
    },
}
PAPER_ANCHORS = {"anchor_scales": [8, 16, 32], "anchor_ratios": [0.5, 1.0, 2.0]}


def variant_config(base, dataset, variant, steps_scale=None):
    config = copy.deepcopy(base)
    if steps_scale:
        for stage in config["train"]["stages"].values():
            stage["steps"] = max(1, round(stage["steps"] * steps_scale))
    spec = DATASETS[dataset]
    config["model"]["num_classes"] = spec["num_classes"]
    config["model"]["class_names"] = spec["class_names"]
    config["model"]["weights"] = os.path.join(
        os.path.dirname(SHARED), "weights", "mobilenet_2_5_224_tf_no_top.h5"
    )
    for key in ("source", "root", "train_split", "val_split", "eval_split"):
        config["data"][key] = spec[key]
    if variant.startswith("paper"):
        config["model"].update(PAPER_ANCHORS)
    if not variant.endswith("+aug"):
        config["data"].pop("augment", None)
    return config


def run(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per run")
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=None,
        help="fixed steps (the config's times this) instead of --minutes",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["paper", "paper+aug", "fitted", "fitted+aug"],
        choices=["paper", "paper+aug", "fitted", "fitted+aug"],
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "own_data"))
    args = parser.parse_args()
    with open(BASE_CONFIG, encoding="utf-8") as handle:
        base = yaml.safe_load(handle)
    cli = [sys.executable, "-m", "tf_frcnn_cli"]
    rows = []
    for dataset in args.datasets:
        for variant in args.variants:
            model_dir = os.path.join(args.out, f"{dataset}-{variant}")
            os.makedirs(model_dir, exist_ok=True)
            config_path = os.path.join(model_dir, "experiment.yaml")
            with open(config_path, "w", encoding="utf-8") as handle:
                yaml.safe_dump(
                    variant_config(base, dataset, variant, args.steps_scale),
                    handle,
                    sort_keys=False,
                )
            budget = [] if args.steps_scale else ["--minutes", str(args.minutes)]
            train_s = run(
                cli + ["train", "--config", config_path, "--model-dir", model_dir] + budget
            )
            run(cli + ["eval", "--config", config_path, "--model-dir", model_dir])
            with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as handle:
                metrics = json.load(handle)
            with open(os.path.join(model_dir, "config.yaml"), encoding="utf-8") as handle:
                resolved = yaml.safe_load(handle)["model"]
            rows.append((dataset, variant, train_s, metrics, resolved))
            print(
                json.dumps(
                    {
                        "dataset": dataset,
                        "variant": variant,
                        "train_s": round(train_s),
                        "mAP50": metrics["mAP_voc"],
                        "AP": metrics["AP"],
                    }
                ),
                flush=True,
            )
    budget = (
        f"the config's steps x {args.steps_scale:g}"
        if args.steps_scale
        else f"{args.minutes:g} training minutes"
    )
    print(f"\n{budget} per run; mAP50 = VOC all-point mAP at IoU 0.5, on the eval split\n")
    print(
        "| dataset | variant | anchors (scales x ratios) | train s | mAP50 | AP | AP50 per class |"
    )
    print("|---|---|---|---:|---:|---:|---|")
    for dataset, variant, train_s, metrics, model in rows:
        anchors = (
            f"{[round(s, 2) for s in model['anchor_scales']]} x "
            f"{[round(r, 2) for r in model['anchor_ratios']]}"
        )
        per_class = ", ".join(
            f"{c['name']} {c['AP_voc']:.3f}" for c in metrics.get("per_class", {}).values()
        )
        print(
            f"| {dataset} | {variant} | {anchors} | {train_s:.0f} | {metrics['mAP_voc']:.3f} | "
            f"{metrics['AP']:.3f} | {per_class} |"
        )


if __name__ == "__main__":
    main()
