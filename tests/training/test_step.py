"""tf_frcnn.training.step: the order the step's large gradients are computed in."""

import numpy as np
import tensorflow as tf

from tf_frcnn.training import step


def _traced_gradients(order_large_last):
    """The gradient ops of a traced step of one large and two small weights, and its values."""
    big = tf.Variable(tf.reshape(tf.range(400, dtype=tf.float32), [20, 20]) / 400.0)
    small = tf.Variable([1.0, 2.0, 3.0])
    other = tf.Variable(0.5)
    traced = {}

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.matmul(x, big) ** 2) + tf.reduce_sum(small * other * x[0, :3])
        gradients = tape.gradient(loss, [big, small, other])
        if order_large_last:
            step._large_gradients_last(gradients)
        traced["ops"] = [g.op for g in gradients]
        return gradients

    values = run(tf.ones([2, 20]))
    return traced["ops"], values


def test_a_large_gradient_waits_for_every_other(monkeypatch):
    # 20 x 20 float32 is 1,600 bytes: large at a 1,000-byte threshold, the others are not.
    monkeypatch.setattr(step, "LATE_GRADIENT_BYTES", 1000)
    (big, small, other), ordered = _traced_gradients(True)
    assert small in big.control_inputs and other in big.control_inputs
    assert big not in small.control_inputs and big not in other.control_inputs
    # The same gradients as without the order.
    _, plain = _traced_gradients(False)
    for a, b in zip(ordered, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_below_the_threshold_nothing_is_ordered_and_eager_is_left_alone():
    (big, small, other), _ = _traced_gradients(True)
    assert small not in big.control_inputs and other not in big.control_inputs
    gradient = tf.constant(np.ones([4096, 4096], np.float32))  # 64 MiB
    step._large_gradients_last([gradient, tf.constant(1.0)])  # eager: a no-op, no error
