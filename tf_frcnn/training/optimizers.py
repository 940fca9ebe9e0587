"""The optimizers of a training stage: the paper's SGD with momentum, Adam and AdamW.

Each adds the L2 term ``l2 * w`` to the gradient of each weight (not biases or
normalisation parameters) after any clipping, as Caffe's solver did, and leaves a variable
alone when its gradient is not finite, so no NaN or Inf reaches a weight or a slot."""

import keras
import tensorflow as tf

from tf_frcnn.training import lr


def decays(variable):
    """Caffe's convention (and the paper's): weights decay, biases and
    normalisation parameters do not."""
    name = variable.path if hasattr(variable, "path") else variable.name
    return len(variable.shape) > 1 and "gamma" not in name and "beta" not in name


class _GuardedL2:
    """Mixin for a Keras optimizer: a variable whose gradient is not finite is
    left as it is (slots included); otherwise the L2 term joins the gradient in
    front of the optimizer's own update."""

    def __init__(self, *args, l2=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        gradient = tf.cast(gradient, variable.dtype)
        decay = self.l2 if self.l2 and decays(variable) else 0.0

        def update():
            self._update_with_l2(gradient, variable, learning_rate, decay)
            return tf.constant(True)

        # One read of the gradient: a NaN or Inf in it makes the sum non-finite.
        tf.cond(tf.math.is_finite(tf.reduce_sum(gradient)), update, lambda: tf.constant(False))

    def _update_with_l2(self, gradient, variable, learning_rate, decay):
        if decay:
            gradient = gradient + decay * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _handle(variable):
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


class SGD(_GuardedL2, keras.optimizers.SGD):
    """Keras' SGD with momentum (same slots, same update, so checkpoints of
    either restore into the other) plus the L2 term and the guard, updating in
    place with TF's fused kernels: with ``decay`` = l2 on weights,

        m <- m - lr * decay / momentum * w      (ResourceApplyGradientDescent)
        m <- momentum * m - lr * g; w <- w + m  (ResourceApplyKerasMomentum)

    which is m <- momentum * m - lr * (g + decay * w); w <- w + m, in two passes in
    place where Keras' update, an L2 term and a guard as separate ops make several
    (``benchmarks/bench_optimizer.py``). Under ``tf.distribute`` a variable's handle
    is that of the replica being updated."""

    def _update_with_l2(self, gradient, variable, learning_rate, decay):
        if self.momentum == 0 or self.nesterov:
            return super()._update_with_l2(gradient, variable, learning_rate, decay)
        slot = _handle(self.momentums[self._get_variable_index(variable)])
        learning_rate = tf.cast(learning_rate, variable.dtype)
        momentum = tf.constant(self.momentum, variable.dtype)
        if decay:
            tf.raw_ops.ResourceApplyGradientDescent(
                var=slot,
                alpha=learning_rate * (decay / self.momentum),
                delta=tf.convert_to_tensor(variable),
            )
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=slot, lr=learning_rate, grad=gradient, momentum=momentum
        )


class Adam(_GuardedL2, keras.optimizers.Adam):
    """Keras' Adam plus the L2 gradient term and the guard."""


class AdamW(_GuardedL2, keras.optimizers.AdamW):
    """Keras' AdamW (its own decoupled decay) plus the L2 gradient term and the guard."""


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(train_config, stage_config, learning_rate=None):
    """The stage's optimizer: the paper's SGD (``train.momentum``, 0.9) by
    default, L2 ``train.weight_decay`` on weights, at ``learning_rate`` (a float or a
    schedule; default: ``training.lr.learning_rate`` of ``stage_config``)."""
    rate = lr.learning_rate(stage_config) if learning_rate is None else learning_rate
    name = train_config.optimizer
    if name not in OPTIMIZERS:
        raise ValueError(f"config key 'train.optimizer' = {name!r} must be sgd, adam or adamw")
    kwargs = {"momentum": train_config.momentum} if name == "sgd" else {}
    optimizer = OPTIMIZERS[name](rate, l2=train_config.weight_decay, **kwargs)
    if train_config.mixed_precision == "float16":
        # float16 gradients underflow on any device: scale on CPU too. bfloat16 has
        # float32's exponent range and needs no scaling.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
