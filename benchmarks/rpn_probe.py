"""A short RPN-only probe (issue #21): train stage rpn1's parts (backbone, pyramid, RPN) for
STEPS steps on the first N training images of a config, then measure the RPN's recall (IoU 0.5)
of its top 300 / 1,000 test-time proposals on 32 validation images. Minutes instead of a whole
--minutes run: what the single-level and pyramid designs were compared with in docs/fpn.md.

    .venv/bin/python benchmarks/rpn_probe.py benchmarks/aquarium_mobilenet.yaml
    .venv/bin/python benchmarks/rpn_probe.py benchmarks/aquarium_mobilenet_fpn.yaml \\
        model.fpn.min_level=4 model.fpn.max_level=4 "model.anchor_scales=[2,4,8]"

KEY=VALUE overrides (YAML values) apply before "auto" anchors are fitted; data.val_split must
name a split. One JSON line out.
"""

import argparse
import json
import time

import keras
import tensorflow as tf
import yaml

from tf_frcnn import boxes as box_ops
from tf_frcnn.config import load_config
from tf_frcnn.data import inputs
from tf_frcnn.data.resolve import resolve_config
from tf_frcnn.model import build_model
from tf_frcnn.stages import get_stage
from tf_frcnn.training.objective import Objective


def _args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=64, help="training images (N)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    return parser.parse_args()


def _override(config, overrides):
    for item in overrides:
        key, value = item.split("=", 1)
        *path, name = key.split(".")
        section = config
        for part in path:
            section = getattr(section, part)
        setattr(section, name, yaml.safe_load(value))


def _recall(model, batches, post_nms):
    model.proposal_layer.test_post_nms = post_nms
    hits = total = 0
    for batch in batches:
        images, image_shape = model.unpack(batch)
        proposals, _, count = model.propose(images, image_shape)
        for i in range(proposals.shape[0]):
            truth = tf.cast(batch["boxes"][i][batch["labels"][i] > 0], tf.float32)
            iou = box_ops.iou(truth, proposals[i][: int(count[i])])
            hits += int(tf.reduce_sum(tf.cast(tf.reduce_max(iou, axis=1) >= 0.5, tf.int32)))
            total += int(truth.shape[0])
    return hits / max(total, 1)


def main():
    args = _args()
    config = load_config(args.config)
    _override(config, args.overrides)
    config = resolve_config(config)
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config)
    train = list(
        inputs.batches(config, "train", training=False, batch_size=2).take(args.images // 2)
    )
    val = list(inputs.batches(config, config.data.val_split, training=False, batch_size=2).take(16))
    model(train[0])
    objective, stage = Objective.from_config(config), get_stage("rpn1")
    optimizer = keras.optimizers.Adam(args.learning_rate)
    variables = model.trainable_variables

    @tf.function
    def step(batch, index):
        with tf.GradientTape() as tape:
            losses = objective(model, batch, stage, step=index)
        gradients = tape.gradient(losses["loss"], variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        return losses

    start = time.perf_counter()
    for index in range(args.steps):
        losses = step(train[index % len(train)], tf.constant(index, tf.int64))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "anchors": [config.model.anchor_scales, config.model.anchor_ratios],
                "steps": args.steps,
                "train_s": round(seconds, 1),
                "last_losses": {k: round(float(v), 4) for k, v in losses.items()},
                "val_recall@300": round(_recall(model, val, 300), 3),
                "val_recall@1000": round(_recall(model, val, 1000), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
