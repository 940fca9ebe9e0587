"""The training step, written once: ``StageLoop`` (the ``tf.function`` loop under
``tf.distribute``) and ``StageModel`` (``model.fit`` on one stage) both run
``train_step``: loss scaling, clipping, the finite check, the order of the largest
gradients and the barrier before the in-place update live here."""

import keras
import tensorflow as tf

from tf_frcnn import backbones
from tf_frcnn.stages import get_stage
from tf_frcnn.training.objective import Objective, loss_names


def set_trainable(model, stage):
    """Make trainable exactly the parts of ``model`` (a ``FasterRCNN``) that ``stage``
    trains; the model's ``frozen_layers`` stay frozen whatever it trains."""
    backbones.set_trainable(model.features, "backbone" in stage.trains, model.frozen_layers)
    model.rpn_head.trainable = stage.trains_rpn
    model.detector_head.trainable = stage.trains_detector


def train_step(losses_of, model, optimizer, batch, *, clip_norm=None, replicas=1):
    """One optimisation step of ``model``'s trainable variables on ``batch``.

    ``losses_of(batch, step)`` returns a dict of scalar losses with "loss" their sum.
    Returns that dict plus "gradients_finite" (1.0 or 0.0): the optimizer skips a
    non-finite gradient itself (``training.optimizers``), the caller decides whether to
    stop. Under a ``LossScaleOptimizer`` an overflow is the scaler's to handle (it skips
    the step and lowers its scale), so there only a non-finite loss counts."""
    variables = model.trainable_variables
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    with tf.GradientTape() as tape:
        # A layer frozen when its variables were created (the detector head in stage 1)
        # holds tf.Variables the tape would not watch by itself once it is unfrozen.
        tape.watch([getattr(v, "value", v) for v in variables])
        losses = losses_of(batch, optimizer.iterations)
        loss = losses["loss"] / replicas
        if scaled:
            loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(loss, variables)
    _large_gradients_last(gradients)
    if clip_norm:
        # Scaled gradients are clipped at the scaled norm: the unscaled ones at clip_norm.
        norm = clip_norm * optimizer.dynamic_scale if scaled else clip_norm
        gradients, _ = tf.clip_by_global_norm(gradients, norm)
    # One read of each gradient: a NaN or Inf anywhere makes the sum non-finite (so does a
    # sum beyond float32's range, divergence too).
    total = tf.add_n([tf.reduce_sum(g) for g in gradients])
    losses["gradients_finite"] = tf.cast(
        tf.logical_or(scaled, tf.math.is_finite(total)), tf.float32
    )
    # Updates start once every gradient exists, so the backward pass no longer reads a
    # weight: updating one it still reads would copy it first (TF's copy-on-write).
    with tf.control_dependencies([total]):
        gradients = [tf.identity(g) for g in gradients]
    optimizer.apply_gradients(zip(gradients, variables))
    return losses


# A gradient at least this large (VGG16's fc6 kernel: 411 MB) is computed after every other
# gradient: it is ready early in the backward pass and would otherwise be held through the
# whole conv backward, on top of that pass's peak.
LATE_GRADIENT_BYTES = 64 * 2**20


def _large_gradients_last(gradients):
    """Orders the ops of ``gradients`` of at least ``LATE_GRADIENT_BYTES`` after the ops of
    all the others (in a traced step; eagerly there is nothing to order). Only an op nothing
    reads yet is ordered, so no cycle can form. Returns how many ops it ordered."""
    if tf.executing_eagerly():
        return 0
    present = [g for g in gradients if g is not None and not isinstance(g, tf.IndexedSlices)]
    large = [
        g for g in present if (g.shape.num_elements() or 0) * g.dtype.size >= LATE_GRADIENT_BYTES
    ]
    others = [g.op for g in present if all(g is not big for big in large)]
    ordered = 0
    for gradient in large:
        op = gradient.op
        if op in others or any(output.consumers() for output in op.outputs):
            continue
        # TF's graph API has no public way to order an existing op after others.
        op._add_control_inputs(others)
        ordered += 1
    return ordered


def stage_losses(model, stage, objective, proposal_source=None):
    """``losses_of(batch, step, training=True)`` of ``model`` in ``stage``."""

    def losses_of(batch, step, training=True):
        return objective(
            model, batch, stage, step=step, proposal_source=proposal_source, training=training
        )

    return losses_of


class StageModel(keras.Model):
    """``fit`` one stage of a ``FasterRCNN`` the Keras way: compile, fit with any
    callbacks, per stage.

    Args:
      model: the ``FasterRCNN``, built (its weights are this model's).
      stage: a ``tf_frcnn.stages.Stage`` or its name; sets what is trainable.
      objective: a ``training.objective.Objective`` (default: the paper's settings).
      proposal_source: the detector's proposals for a stage that trains on another
        network's (see ``Objective``).
      clip_norm: global-norm gradient clipping, as ``train.clip_norm``.
    """

    def __init__(
        self, model, stage, objective=None, *, proposal_source=None, clip_norm=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.detector = model
        self.stage = get_stage(stage) if isinstance(stage, str) else stage
        self.clip_norm = clip_norm
        self.losses_of = stage_losses(model, self.stage, objective or Objective(), proposal_source)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in loss_names(self.stage)}
        set_trainable(model, self.stage)
        self.built = True

    def fit(self, *args, shuffle=False, **kwargs):
        # The input pipeline shuffles; Keras warns about fit's default shuffle=True.
        return super().fit(*args, shuffle=shuffle, **kwargs)

    def call(self, inputs, training=False):
        return self.detector(inputs, training=training)

    def train_step(self, data):
        losses = train_step(self.losses_of, self, self.optimizer, data, clip_norm=self.clip_norm)
        losses.pop("gradients_finite")
        return self._track(losses)

    def test_step(self, data):
        return self._track(self.losses_of(data, None, training=False))

    def _track(self, losses):
        for name, value in losses.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @property
    def metrics(self):
        return list(self.trackers.values())
