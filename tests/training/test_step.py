"""tf_frcnn.training.step: the order the step's large gradients are computed in."""

import keras
import numpy as np
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.training import Objective, StageLoop, make_optimizer, step
from tf_frcnn.training.schedule import stage_config


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
    assert len(big.control_inputs) >= 2
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


def test_a_step_with_half_its_gradients_ordered_last_trains_as_one_without(
    smoke_config, monkeypatch
):
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    keras.utils.set_random_seed(1)
    plain_model, ordered_model = build_model(smoke_config), build_model(smoke_config)
    plain_model(batch), ordered_model(batch)
    ordered_model.set_weights(plain_model.get_weights())
    counted = []
    original = step._large_gradients_last
    monkeypatch.setattr(step, "_large_gradients_last", lambda g: counted.append(original(g)))

    def one_step(model):
        settings = stage_config(smoke_config, "rpn1")
        loop = StageLoop.for_stage(
            model,
            "joint",
            Objective.from_config(smoke_config),
            make_optimizer(smoke_config.train, settings),
            tf.distribute.get_strategy(),
        )
        return loop.step(batch)

    plain = one_step(plain_model)
    assert counted == [0]
    # The smoke model's gradients are small: half of them count as large at the median size.
    sizes = sorted(v.numpy().nbytes for v in ordered_model.trainable_variables)
    monkeypatch.setattr(step, "LATE_GRADIENT_BYTES", sizes[len(sizes) // 2])
    ordered = one_step(ordered_model)
    assert counted[1] >= len(sizes) // 4, (counted, len(sizes))
    for name, value in plain.items():
        np.testing.assert_allclose(ordered[name], value, rtol=1e-5, err_msg=name)
    for a, b in zip(ordered_model.get_weights(), plain_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
