"""The learning rate of a training stage as a function of its step (``train.stages.NAME``:
``lr_schedule``, ``warmup_steps`` or ``warmup_fraction``, ``final_lr_fraction``).

- ``constant``: the stage's ``learning_rate`` throughout.
- ``step``: the paper's 10x drop at each of ``decay_steps`` (none given: constant).
- ``cosine``: half a cosine from ``learning_rate`` at the end of the warm-up to
  ``final_lr_fraction`` x ``learning_rate`` at the stage's last step (SGDR, Loshchilov & Hutter
  2017; detectron2's ``WarmupCosineLR`` and Ultralytics' ``cos_lr`` anneal this way).

Any of them starts with a linear warm-up from ``WARMUP_FACTOR`` x the rate (detectron2's
``SOLVER.WARMUP_FACTOR``, 0.001) to the rate at ``warmup`` steps. Step ``s`` is the number of
updates made before this one (``optimizer.iterations``), so the first update has s = 0 and
the last of a stage of ``steps`` has s = steps - 1.

The stage's length and decay steps are ``tf.Variable``s that ``set_length`` moves when a time
budget refits the stage (``training.budget``): the rate then reaches its end at the stage's
new last step, and as the length is in ``state.json`` a resumed stage continues the curve."""

import math

import keras
import tensorflow as tf

from tf_frcnn.choices import LR_SCHEDULES
from tf_frcnn.config import kwargs_for

WARMUP_FACTOR = 0.001


class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The rate of a stage of ``steps`` steps.

    Args:
      learning_rate: the base rate.
      kind: one of ``choices.LR_SCHEDULES``.
      steps: the stage's length (its planned steps).
      decay_steps: ``step``: the steps after which the rate drops 10x each.
      warmup_steps: steps of linear warm-up; or
      warmup_fraction: the warm-up as a fraction of ``steps`` (follows ``set_length``).
      final_lr_fraction: ``cosine``: the rate at the last step, a fraction of the base.
    """

    def __init__(
        self,
        learning_rate,
        kind="constant",
        steps=1,
        decay_steps=(),
        warmup_steps=None,
        warmup_fraction=None,
        final_lr_fraction=0.05,
    ):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {kind!r}; expected one of {LR_SCHEDULES}")
        self.learning_rate = float(learning_rate)
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.warmup_fraction = warmup_fraction
        self.final_lr_fraction = float(final_lr_fraction)
        self.steps = tf.Variable(int(steps), dtype=tf.int64, trainable=False, name="stage_steps")
        self.decay_steps = [
            tf.Variable(int(d), dtype=tf.int64, trainable=False, name="decay_step")
            for d in decay_steps
        ]
        # PiecewiseConstantDecay's values: the same floats the paper configs always had.
        self._rates = [self.learning_rate * 0.1**i for i in range(len(self.decay_steps) + 1)]

    def set_length(self, steps, decay_steps=()):
        """The stage now has ``steps`` steps and these decay steps (a budget's refit)."""
        self.steps.assign(int(steps))
        for variable, value in zip(self.decay_steps, decay_steps):
            variable.assign(int(value))

    def warmup(self):
        """The warm-up's length in steps, a float tensor (0: none)."""
        steps = tf.cast(self.steps, tf.float32)
        if self.warmup_steps:
            return tf.minimum(float(self.warmup_steps), steps)
        if self.warmup_fraction:
            return self.warmup_fraction * steps
        return tf.constant(0.0)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.kind == "cosine":
            rate = self._cosine(step)
        elif self.decay_steps:
            # As PiecewiseConstantDecay: the rate drops after each boundary (step > b).
            drops = tf.add_n(
                [tf.cast(step > tf.cast(d, tf.float32), tf.int32) for d in self.decay_steps]
            )
            rate = tf.gather(tf.constant(self._rates, tf.float32), drops)
        else:
            rate = tf.constant(self.learning_rate, tf.float32)
        warmup = self.warmup()
        ramp = WARMUP_FACTOR + (1.0 - WARMUP_FACTOR) * step / tf.maximum(warmup, 1.0)
        return tf.where(step < warmup, rate * ramp, rate)

    def _cosine(self, step):
        warmup = self.warmup()
        last = tf.cast(self.steps, tf.float32) - 1.0
        progress = tf.clip_by_value((step - warmup) / tf.maximum(last - warmup, 1.0), 0.0, 1.0)
        final = self.final_lr_fraction
        return self.learning_rate * (
            final + (1.0 - final) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        )

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "kind": self.kind,
            "steps": int(self.steps.numpy()),
            "decay_steps": [int(d.numpy()) for d in self.decay_steps],
            "warmup_steps": self.warmup_steps,
            "warmup_fraction": self.warmup_fraction,
            "final_lr_fraction": self.final_lr_fraction,
        }


def learning_rate(stage_config, variable_length=False):
    """The rate of a ``config.StageConfig`` (its ``steps`` resolved): a float when it is
    constant (Keras then keeps it in a variable, as before schedules existed), else a
    ``StageSchedule``; ``variable_length``: always a schedule, whose length a time budget
    moves."""
    constant = stage_config.lr_schedule == "constant" or (
        stage_config.lr_schedule == "step" and not stage_config.decay_steps
    )
    warm = stage_config.warmup_steps or stage_config.warmup_fraction
    if constant and not warm and not variable_length:
        return stage_config.learning_rate
    return StageSchedule(**kwargs_for(StageSchedule, stage_config, kind=stage_config.lr_schedule))
