"""Precision and recall of the label-error finder (`tf_frcnn.evaluation.label_errors`) on the
synthetic test split with errors planted on purpose.

    .venv/bin/python benchmarks/label_errors_synthetic.py --model-dir runs/demo \
        [--config configs/shapes.yaml] [--fraction 0.1] [--seed 0]

Runs the trained model once over the split, then, in a copy of the labels, removes a `fraction`
of the boxes (missing), gives another `fraction` a different class (wrong) and shifts another
`fraction` sideways by 0.43 of their width, so that the shifted box has IoU 0.4 with the object
(loose). A planted error is found when the finder reports its kind there: a missing issue at
IoU >= 0.5 with the removed box, a wrong or loose issue on the changed box. Precision counts every
issue reported, so the model's own mistakes on clean labels count against it. Prints one row per
score threshold; the clean labels' issue counts are the false alarms of an error-free set.
"""

import argparse

import numpy as np

from tf_frcnn.config import load_config
from tf_frcnn.data import inputs
from tf_frcnn.evaluation._records import box_iou
from tf_frcnn.evaluation.label_errors import LABEL_ERROR_KINDS, find_label_errors
from tf_frcnn.evaluation.runner import evaluate
from tf_frcnn.rundir import load_trained_model

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SHIFT = 0.6 / 1.4  # a sideways shift by s of the width leaves IoU (1 - s) / (1 + s) = 0.4


def plant(groundtruths, fraction, num_classes, seed):
    """(corrupted copies of the records, {kind: [(image index, planted box)]})."""
    rng = np.random.default_rng(seed)
    spots = [(i, j) for i, g in enumerate(groundtruths) for j in range(len(g["labels"]))]
    chosen = rng.permutation(len(spots))
    n = int(round(fraction * len(spots)))
    kinds = {
        kind: [spots[k] for k in chosen[m * n : (m + 1) * n]]
        for m, kind in enumerate(LABEL_ERROR_KINDS)
    }
    planted = {kind: [] for kind in LABEL_ERROR_KINDS}
    corrupted = []
    for i, g in enumerate(groundtruths):
        boxes = np.array(g["boxes"], np.float64)
        labels = np.array(g["labels"], np.int64)
        keep = np.ones(len(labels), bool)
        for j in range(len(labels)):
            if (i, j) in kinds["missing"]:
                keep[j] = False
                planted["missing"].append((i, boxes[j].copy()))
            elif (i, j) in kinds["wrong"]:
                labels[j] = (labels[j] + rng.integers(1, num_classes) - 1) % num_classes + 1
                planted["wrong"].append((i, boxes[j].copy()))
            elif (i, j) in kinds["loose"]:
                shift = SHIFT * (boxes[j, 3] - boxes[j, 1]) * rng.choice([-1, 1])
                boxes[j, [1, 3]] += shift
                planted["loose"].append((i, boxes[j].copy()))
        record = dict(g, boxes=boxes[keep], labels=labels[keep])
        for key in ("difficult", "iscrowd"):
            record[key] = np.asarray(g[key])[keep]
        corrupted.append(record)
    return corrupted, planted


def score(found, planted, image_index):
    """{kind: (precision, recall, reported, planted)} of one finder result."""
    result = {}
    for kind in LABEL_ERROR_KINDS:
        issues = [e for e in found["issues"] if e["kind"] == kind]
        hits, used = 0, set()
        for e in issues:
            i = image_index[e["image_id"]]
            for p, (image, box) in enumerate(planted[kind]):
                if image != i or p in used:
                    continue
                if kind == "missing":
                    hit = box_iou(np.array(e["box"]), box)[0, 0] >= 0.5
                else:
                    hit = np.allclose(e["label_box"], box)
                if hit:
                    hits += 1
                    used.add(p)
                    break
        precision = hits / len(issues) if issues else float("nan")
        result[kind] = (
            precision,
            len(used) / max(len(planted[kind]), 1),
            len(issues),
            len(planted[kind]),
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="runs/demo")
    parser.add_argument("--config", help="default: the model dir's config.yaml")
    parser.add_argument("--data-dir", help="TFDS data dir of the synthetic dataset")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, config = load_trained_model(args.model_dir)
    if args.config:
        config = load_config(args.config)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    split = config.data.eval_split
    _, class_names = inputs.source(config, split)
    metrics, evaluator = evaluate(
        model, class_names, inputs.batches(config, split, training=False), progress=False
    )
    truth = evaluator.groundtruths
    detections = evaluator.operating_point({}, 0.0)
    num_classes = len(class_names)
    corrupted, planted = plant(truth, args.fraction, num_classes, args.seed)
    image_index = {g["image_id"]: i for i, g in enumerate(truth)}
    print(
        f"{args.model_dir} on '{split}': {len(truth)} images, "
        f"{sum(len(g['labels']) for g in truth)} objects, AP50 {metrics['AP50']:.3f}; planted "
        + ", ".join(f"{len(v)} {k}" for k, v in planted.items())
    )
    print("threshold  " + "  ".join(f"{k:>8} P / R (n)" for k in LABEL_ERROR_KINDS) + "  clean")
    for threshold in THRESHOLDS:
        found = find_label_errors(corrupted, detections, num_classes, score_threshold=threshold)
        clean = find_label_errors(truth, detections, num_classes, score_threshold=threshold)
        rows = score(found, planted, image_index)
        cells = [f"{p:.2f} / {r:.2f} ({n:3d})" for p, r, n, _ in rows.values()]
        print(
            f"{threshold:9.2f}  "
            + "  ".join(f"{c:>19}" for c in cells)
            + f"  {sum(clean['counts'].values()):5d}"
        )


if __name__ == "__main__":
    main()
