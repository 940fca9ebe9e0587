"""Validation's share of training time: trains a config with validation on and
times every validation pass against the whole run (train + validate + saves).

  .venv/bin/python benchmarks/validation_share.py --config benchmarks/raccoon_mobilenet.yaml \
      --model-dir runs/valshare --val-split 0.2 --eval-every 50 --scale 0.25

``--scale`` multiplies every stage's steps (a shorter run, same proportions)."""

import argparse
import json
import time

from tf_frcnn import load_config
from tf_frcnn.training import Trainer, validation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument(
        "--val-split", default="0.2", help="a split name or a fraction of the training split"
    )
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--val-images", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()

    config = load_config(args.config)
    try:
        config.data.val_split = float(args.val_split)
    except ValueError:
        config.data.val_split = args.val_split
    config.train.eval_every = args.eval_every
    config.train.val_images = args.val_images
    for stage in config.train.stages.values():
        stage.steps = max(1, round(stage.steps * args.scale))

    seconds = {}
    measure = validation.ValidationSchedule.measure

    def timed(self, step):
        start = time.perf_counter()
        row = measure(self, step)
        seconds.setdefault(self.stage, []).append(time.perf_counter() - start)
        return row

    validation.ValidationSchedule.measure = timed
    start = time.perf_counter()
    Trainer(config, args.model_dir).run()
    total = time.perf_counter() - start
    validating = sum(sum(v) for v in seconds.values())
    print(
        json.dumps(
            {
                "total_s": round(total, 1),
                "validation_s": round(validating, 1),
                "share": round(validating / total, 4),
                "validations": {s: len(v) for s, v in seconds.items()},
                "per_validation_s": {s: round(sum(v) / len(v), 2) for s, v in seconds.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
