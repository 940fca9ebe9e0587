"""The joint training step of trained models' configs on real training batches, side by side.

    .venv/bin/python benchmarks/step_on_data.py /tmp/e2e/single /tmp/e2e/fpn --runs 8

Each argument is a model directory (its ``config.yaml`` holds the resolved anchors and image
sizes) or a config file without ``auto`` keys. The model is built with random weights (timing
only) and steps on the first batch of its own training pipeline (augmentation, padding to
``data.pad_to`` and to ``data.max_boxes`` included), so the anchors, the ground-truth padding
and the image sizes are those of the real run; ``benchmarks/bench_fpn.py`` times one random
image with two boxes instead. The models step in turn, ``--runs`` rounds after one untimed
step each, so a change of the machine's load hits all of them; prints one JSON line per model
(median and fastest step) and the ratios of the medians to the first model's.
"""

import argparse
import json
import os
import statistics
import time

import tensorflow as tf

from tf_frcnn import load_config
from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.rundir import read_config
from tf_frcnn.stages import get_stage
from tf_frcnn.training import Objective, make_optimizer
from tf_frcnn.training.schedule import stage_config
from tf_frcnn.training.step import set_trainable, stage_losses, train_step


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="model directories or resolved configs")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def _step(config):
    """A traced joint training step of ``config``'s model and its first training batch."""
    config.model.weights = None
    joint = get_stage("joint")
    batch = next(iter(inputs.training_batches(config, config.data.train_split, None)))
    model = build_model(config)
    model({"images": batch["images"][:, :64, :64]})
    set_trainable(model, joint)
    optimizer = make_optimizer(config.train, stage_config(config, "joint"))
    losses_of = stage_losses(model, joint, Objective.from_config(config))
    step = tf.function(lambda b: train_step(losses_of, model, optimizer, b))
    step(batch)
    return step, batch


def main():
    args = _args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    timed = {}
    for path in args.models:
        config = read_config(path) if os.path.isdir(path) else load_config(path)
        step, batch = _step(config)
        objects = int(tf.reduce_sum(tf.cast(batch["labels"] > 0, tf.int32)))
        timed[path] = (step, batch, [])
        print(f"{path}: traced, batch {batch['images'].shape}, {objects} objects", flush=True)
    for _ in range(args.runs):
        for step, batch, times in timed.values():
            start = time.perf_counter()
            step(batch)["loss"].numpy()
            times.append(time.perf_counter() - start)
    first = None
    for path, (_, _, times) in timed.items():
        median = statistics.median(times)
        first = first or median
        row = {
            "model": path,
            "step_ms": round(1000 * median),
            "fastest_ms": round(1000 * min(times)),
        }
        print(json.dumps({**row, "over_first": round(median / first, 2)}))


if __name__ == "__main__":
    main()
