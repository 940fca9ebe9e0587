"""The stage optimizers: Caffe's L2 term on weights only, the fused in-place
SGD update equal to Keras' own, the guard against non-finite gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.config import StageConfig, TrainConfig
from tf_frcnn.training.optimizers import SGD, Adam, decays, make_optimizer

RNG = np.random.default_rng(0)


def _variables():
    return [
        keras.Variable(RNG.normal(size=(3, 3, 2, 4)).astype("float32"), name="kernel"),
        keras.Variable(RNG.normal(size=(4,)).astype("float32"), name="bias"),
    ]


def _gradients(step):
    rng = np.random.default_rng(step)
    return [
        tf.constant(rng.normal(size=(3, 3, 2, 4)).astype("float32")),
        tf.constant(rng.normal(size=(4,)).astype("float32")),
    ]


def _run(optimizer, variables, gradients_per_step):
    @tf.function
    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    for gradients in gradients_per_step:
        apply(gradients)
    return [v.numpy() for v in variables]


def test_the_paper_defaults_and_the_lr_drop():
    optimizer = make_optimizer(TrainConfig(), StageConfig(learning_rate=1e-3, decay_steps=[2]))
    assert isinstance(optimizer, SGD)
    assert (optimizer.momentum, optimizer.l2) == (0.9, 5e-4)
    rates = []
    for _ in range(4):
        rates.append(float(optimizer.learning_rate))
        optimizer.iterations.assign_add(1)
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3, 1e-4], rtol=1e-6)


def test_weights_decay_biases_and_normalisation_do_not():
    kernel, bias = _variables()
    gamma = keras.Variable(np.ones((1, 4), "float32"), name="gamma")
    assert decays(kernel) and not decays(bias) and not decays(gamma)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_fused_sgd_equals_keras_sgd_on_the_l2_gradient(momentum):
    """Three steps with a learning-rate drop: ours with l2 equals Keras' SGD fed
    g + l2 * w for the kernel and g for the bias (the fused path at 0.9,
    Keras' own update at 0)."""
    l2 = 0.05
    rate = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    ours, theirs = _variables(), _variables()
    for a, b in zip(ours, theirs):
        b.assign(a)
    steps = [_gradients(i) for i in range(3)]
    start = ours[0].numpy()
    got = _run(SGD(rate, momentum=momentum, l2=l2), ours, steps)
    reference = keras.optimizers.SGD(rate, momentum=momentum)
    for gradients in steps:
        reference.apply_gradients(
            [(gradients[0] + l2 * theirs[0], theirs[0]), (gradients[1], theirs[1])]
        )
    for g, r in zip(got, theirs):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(got[0] - start).max() > 1e-2  # and the weights did move


def test_adam_adds_the_l2_term_too():
    l2 = 0.1
    ours, theirs = _variables(), _variables()
    for a, b in zip(ours, theirs):
        b.assign(a)
    steps = [_gradients(i) for i in range(2)]
    got = _run(Adam(0.01, l2=l2), ours, steps)
    reference = keras.optimizers.Adam(0.01)
    for gradients in steps:
        reference.apply_gradients(
            [(gradients[0] + l2 * theirs[0], theirs[0]), (gradients[1], theirs[1])]
        )
    for g, r in zip(got, theirs):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda: SGD(0.1, momentum=0.9, l2=0.01), lambda: Adam(0.1, l2=0.01)],
    ids=["sgd", "adam"],
)
def test_a_non_finite_gradient_leaves_its_variable_and_slots_alone(make):
    optimizer = make()
    variables = _variables()
    _run(optimizer, variables, [_gradients(0)])
    before = [v.numpy() for v in variables]
    slots_before = [s.numpy() for s in optimizer.variables]
    poisoned = _gradients(1)
    poisoned[0] = tf.tensor_scatter_nd_update(poisoned[0], [[0, 0, 0, 0]], [np.inf])
    after = _run(optimizer, variables, [poisoned])
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1])  # the finite one still steps
    assert all(np.all(np.isfinite(s.numpy())) for s in optimizer.variables)
    kernel_slots = [
        (s.numpy(), b) for s, b in zip(optimizer.variables, slots_before) if s.shape == (3, 3, 2, 4)
    ]
    assert kernel_slots and all(np.array_equal(s, b) for s, b in kernel_slots)


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="train.optimizer"):
        make_optimizer(TrainConfig(optimizer="rmsprop"), StageConfig())
