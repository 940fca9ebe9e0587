"""The training recipe compared under one time budget (issue #22): a config trained with a
constant rate, with cosine + warm-up, and with cosine + warm-up + weight averaging, each with
and without patience, one run at a time (a shared CPU changes what a budget buys: run nothing
else meanwhile). Prints one JSON line per run: the budget used (s of s), the steps each stage
trained, the selected weights (``state.json``'s ``best``: their validation values) and their
test values (``data.eval_split``).

  .venv/bin/python benchmarks/recipe_compare.py --config configs/mobilenet_cpu.yaml \\
      --out runs/recipe_raccoon --minutes 25
  .venv/bin/python benchmarks/recipe_compare.py --config benchmarks/aquarium_mobilenet.yaml \\
      --out runs/recipe_aquarium --minutes 25 --eval-every 200

A config that does not validate gets ``--eval-every`` (default 200) and ``--val-split``
(default 0.15 of the training split). ``--only cosine_ema:patience`` (or ``:none``) runs one
of the six. A check of the script itself (about a minute):
  .venv/bin/python benchmarks/recipe_compare.py --config configs/smoke.yaml --out /tmp/rc \\
      --minutes 0.3 --eval-every 4 --val-split 0.25 --only cosine_ema:patience"""

import argparse
import json
import os
import time

from tf_frcnn import load_config
from tf_frcnn.config import EMAConfig
from tf_frcnn.data import inputs
from tf_frcnn.data.resolve import resolve_config
from tf_frcnn.evaluation.runner import evaluate
from tf_frcnn.rundir import RunState, load_trained_model, log_dir, read_history
from tf_frcnn.training import Trainer

VARIANTS = ("constant", "cosine", "cosine_ema")


def recipe(config, variant, patience, minutes, warmup_fraction, ema):
    """``config`` trained as ``variant`` (one of ``VARIANTS``), with ``patience`` (None:
    none) under ``minutes``."""
    for settings in config.train.stages.values():
        settings.decay_steps = []
        if variant == "constant":
            settings.lr_schedule, settings.warmup_fraction = "constant", None
        else:
            settings.lr_schedule, settings.warmup_fraction = "cosine", warmup_fraction
        settings.warmup_steps = None
    config.train.ema = ema if variant == "cosine_ema" else None
    config.train.patience = patience
    config.train.minutes = minutes
    return config


def test_values(model_dir):
    """{"weights", "mAP50", "AP", "AP50"} of the model dir's selected weights on its
    ``data.eval_split``."""
    state = RunState.load(model_dir)
    model, config = load_trained_model(model_dir)
    _, class_names = inputs.source(config, config.data.train_split)
    batches = inputs.batches(config, config.data.eval_split, training=False)
    metrics, _ = evaluate(model, class_names, batches, progress=False)
    return {
        "weights": "best" if state.best else "final",
        "mAP50": metrics["mAP_voc"],
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="a model dir per run goes under it")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--patience", type=int, help="default: the config's, else 4")
    parser.add_argument("--warmup-fraction", type=float, default=0.05)
    parser.add_argument("--ema-decay", type=float, default=EMAConfig.decay)
    parser.add_argument("--ema-warmup", type=float, default=EMAConfig.warmup)
    parser.add_argument("--eval-every", type=int, help="default: the config's, else 200")
    parser.add_argument("--val-split", help="default: the config's, else 0.15")
    parser.add_argument("--data-dir", help="replaces data.data_dir (TFDS)")
    parser.add_argument("--only", help="VARIANT:patience or VARIANT:none")
    args = parser.parse_args()

    patience = args.patience or load_config(args.config).train.patience or 4
    runs = [(v, p) for v in VARIANTS for p in (patience, None)]
    if args.only:
        variant, which = args.only.split(":")
        runs = [(variant, None if which == "none" else patience)]
    for variant, with_patience in runs:
        config = load_config(args.config)
        if args.data_dir:
            config.data.data_dir = args.data_dir
        config.train.eval_every = args.eval_every or config.train.eval_every or 200
        val_split = args.val_split or config.data.val_split or 0.15
        try:
            config.data.val_split = float(val_split)
        except ValueError:
            config.data.val_split = val_split
        ema = EMAConfig(decay=args.ema_decay, warmup=args.ema_warmup)
        recipe(config, variant, with_patience, args.minutes, args.warmup_fraction, ema)
        name = f"{variant}_{'patience' if with_patience else 'nopatience'}"
        model_dir = os.path.join(args.out, name)
        start = time.perf_counter()
        Trainer(config, model_dir, progress=False, resolve=resolve_config).run()
        used = time.perf_counter() - start
        state = RunState.load(model_dir)
        logs = log_dir(model_dir)
        trained = {s: read_history(logs, s)[-1][0] for s in state.finished_stages}
        print(
            json.dumps(
                {
                    "config": args.config,
                    "variant": variant,
                    "patience": with_patience,
                    "budget_s": 60 * args.minutes,
                    "used_s": round(used, 1),
                    "steps_trained": trained,
                    "validation": state.best,
                    "test": test_values(model_dir),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
