"""Does the augmented input pipeline keep ahead of the training step? Images/s of both.

    python benchmarks/augment_throughput.py [--config benchmarks/raccoon_mobilenet.yaml]
        [--min-size 600] [--max-size 1000] [--batch-size 2] [--steps 20]

On the config's VOC training split (the raccoon JPEGs by default) at a MobileNet CPU size:
1. the training pipeline (`build_pipeline(..., training=True)`: decode, resize, flip, pad,
   batch) without augmentation, with the scales and crop below, and with all the augmentation
   below (colour jitter too), images/s after a warm-up pass;
2. the config's model (MobileNet v1 by default) training on batches held in memory, in the
   cheapest stage (RPN) and in joint training (the whole network), images/s over `--steps`
   steps after a warm-up (tracing). The pipeline keeps ahead when 1 exceeds 2.
Both run in one process, side by side, so their ratio holds on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import tensorflow as tf
from data_pipeline_throughput import examples_per_second  # this folder: run as a script

from tf_frcnn import load_config
from tf_frcnn.config import AugmentConfig
from tf_frcnn.data import build_pipeline, voc_dataset
from tf_frcnn.model import build_model
from tf_frcnn.training import Objective, StageLoop, make_optimizer
from tf_frcnn.training.schedule import stage_config


def pipeline_rate(records, augment, **size):
    return examples_per_second(records, augment=augment, **size)


def step_rate(config, batches, stage, *, warmup=3):
    model = build_model(config)
    model(batches[0])
    loop = StageLoop.for_stage(
        model,
        stage,
        Objective.from_config(config),
        make_optimizer(config.train, stage_config(config, stage)),
        tf.distribute.get_strategy(),
    )
    for batch in batches[:warmup]:
        loop.step(batch)
    start = time.perf_counter()
    for batch in batches[warmup:]:
        loop.step(batch)
    seconds = time.perf_counter() - start
    images = sum(int(b["images"].shape[0]) for b in batches[warmup:])
    return images / seconds, seconds / (len(batches) - warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/raccoon_mobilenet.yaml")
    parser.add_argument("--min-size", type=int, default=600)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per stage")
    args = parser.parse_args()

    config = load_config(args.config)
    config.data.min_size, config.data.max_size = args.min_size, args.max_size
    config.data.pad_to = None
    records = voc_dataset(
        config.data.root, config.data.train_split, class_names=config.model.class_names
    )
    low = int(round(args.min_size * 0.8 / 16)) * 16
    augment = AugmentConfig(
        scales=sorted({low, (low + args.min_size) // 2, args.min_size}),
        crop_probability=0.5,
        min_crop=0.6,
        min_visible=0.5,
        brightness=0.1,
        contrast=0.2,
        saturation=0.2,
        hue=0.02,
    )
    size = dict(batch_size=args.batch_size, min_size=args.min_size, max_size=args.max_size)

    print(
        f"{config.data.root} {config.data.train_split}, {args.min_size} / {args.max_size}, "
        f"batch {args.batch_size}; augmentation: {augment}"
    )
    print("| what | images/s |\n|---|---:|")
    print(f"| pipeline, no augmentation | {pipeline_rate(records, None, **size):.1f} |")
    geometry = AugmentConfig(
        scales=augment.scales,
        crop_probability=augment.crop_probability,
        min_crop=augment.min_crop,
        min_visible=augment.min_visible,
    )
    print(f"| pipeline, scales and crop only | {pipeline_rate(records, geometry, **size):.1f} |")
    print(f"| pipeline, augmentation | {pipeline_rate(records, augment, **size):.1f} |")
    pipeline = build_pipeline(records, training=True, seed=0, **size).repeat()
    batches = list(pipeline.take(args.steps + 3))
    for stage in ("rpn1", "joint"):
        rate, step = step_rate(config, batches, stage)
        print(f"| {config.model.backbone} training, {stage} ({step:.2f} s/step) | {rate:.1f} |")


if __name__ == "__main__":
    main()
