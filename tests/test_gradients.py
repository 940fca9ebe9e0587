"""tf_frcnn.gradients: the training layers' gradients are TF's registered ones, computed with
other kernels, and only training takes them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import gradients
from tf_frcnn.backbones import build_backbone


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b))), np.max(np.abs(a - b))


def _gradient_ops(fn, *args):
    """The op types of ``fn``'s traced gradient graph."""

    @tf.function
    def run(*xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = fn(*xs)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, xs)

    graph = run.get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


def test_fc_matmul_gives_matmuls_value_and_gradients():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(5, 37)), tf.float32)
    kernel = tf.constant(rng.normal(size=(37, 11)), tf.float32)
    upstream = tf.constant(rng.normal(size=(5, 11)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        ours, plain = gradients.fc_matmul(x, kernel), tf.matmul(x, kernel)
        loss_ours, loss_plain = tf.reduce_sum(ours * upstream), tf.reduce_sum(plain * upstream)
    _close(ours, plain)
    for a, b in zip(tape.gradient(loss_ours, [x, kernel]), tape.gradient(loss_plain, [x, kernel])):
        _close(a, b)


@pytest.mark.parametrize(
    "shape, own_input, own_kernel",
    [
        ((1, 9, 14, 4, 6), True, True),
        ((2, 7, 5, 3, 8), True, True),
        ((2, 7, 5, 3, 8), False, True),
        ((2, 7, 5, 3, 8), True, False),
    ],
)
def test_conv3x3_relu_gives_the_convs_value_and_gradients(shape, own_input, own_kernel):
    batch, height, width, channels, filters = shape
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(batch, height, width, channels)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, channels, filters)), tf.float32)
    bias = tf.constant(rng.normal(size=(filters,)), tf.float32)
    upstream = tf.constant(rng.normal(size=(batch, height, width, filters)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel, bias])
        ours = gradients.conv3x3_relu(x, kernel, bias, own_input, own_kernel)
        plain = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)
        loss_ours, loss_plain = tf.reduce_sum(ours * upstream), tf.reduce_sum(plain * upstream)
    _close(ours, plain)
    # Some outputs must be cut by the ReLU, or its gradient would go untested.
    assert 0 < np.mean(plain.numpy() > 0) < 1
    watched = [x, kernel, bias]
    for a, b in zip(tape.gradient(loss_ours, watched), tape.gradient(loss_plain, watched)):
        _close(a, b)


@pytest.fixture
def choose(monkeypatch):
    """``choose(choice, onednn=None, avx512=None)`` sets ``gradients.GRADIENTS`` for one test
    and, where given, what ``hardware`` reports about TF's oneDNN kernels."""

    def set_(choice, onednn=None, avx512=None):
        monkeypatch.setattr(gradients, "GRADIENTS", choice)
        if onednn is not None:
            monkeypatch.setattr(gradients.hardware, "onednn_enabled", lambda: onednn)
        if avx512 is not None:
            monkeypatch.setattr(gradients.hardware, "onednn_avx512", lambda: avx512)

    return set_


def _backprops(conv, image):
    """The Conv2DBackprop* ops in the gradient graph of ``conv``'s training call."""
    ops = _gradient_ops(lambda x: conv(x, training=True), image)
    return ops & {"Conv2DBackpropFilter", "Conv2DBackpropInput"}


def test_training_layers_take_the_other_kernels_and_inference_the_plain_ones(choose):
    choose("ours")
    conv = gradients.TrainingConv2D(8, 3, padding="same", activation="relu")
    dense = gradients.TrainingDense(6, activation="relu")
    image, rows = tf.random.normal([1, 10, 12, 4]), tf.random.normal([3, 20])
    conv(image), dense(rows)

    trained = _gradient_ops(lambda x, c=conv: c(x, training=True), image)
    assert "Conv2DBackpropFilter" not in trained and "Conv2DBackpropInput" not in trained
    inferred = _gradient_ops(lambda x: conv(x, training=False), image)
    assert {"Conv2DBackpropFilter", "Conv2DBackpropInput"} <= inferred
    # Same outputs either way.
    _close(conv(image, training=True), conv(image, training=False))
    _close(dense(rows, training=True), dense(rows, training=False))
    # The fc input gradient: no product with a transposed kernel.
    trained_fc = _gradient_ops(lambda x: dense(x, training=True), rows)
    assert "Transpose" in trained_fc


BOTH = {"Conv2DBackpropFilter", "Conv2DBackpropInput"}


@pytest.mark.parametrize(
    "onednn, avx512, backprops, deep_backprops, fc_transposed",
    [
        # Eigen's kernels: all of ours.
        (False, True, set(), set(), True),
        # oneDNN with AVX-512: TF's conv gradients but the deep convs' kernel gradient, our
        # fc form.
        (True, True, BOTH, {"Conv2DBackpropInput"}, True),
        # oneDNN capped at AVX2: TF's input gradient and fc product, our kernel gradient.
        (True, False, {"Conv2DBackpropInput"}, {"Conv2DBackpropInput"}, False),
    ],
)
def test_auto_takes_the_faster_form_for_the_kernels_tf_runs(
    choose, onednn, avx512, backprops, deep_backprops, fc_transposed
):
    conv = gradients.TrainingConv2D(8, 3, padding="same", activation="relu")
    deep = gradients.TrainingConv2D(4, 3, padding="same", activation="relu")
    dense = gradients.TrainingDense(6, activation="relu")
    image, rows = tf.random.normal([1, 10, 12, 4]), tf.random.normal([3, 20])
    deep_image = tf.random.normal([1, 5, 6, gradients.DEEP_CHANNELS])
    conv(image), deep(deep_image), dense(rows)
    choose("auto", onednn=onednn, avx512=avx512)
    assert _backprops(conv, image) == backprops
    assert _backprops(deep, deep_image) == deep_backprops
    # Ours has a Transpose of the product; TF's registered gradient a transposed MatMul.
    fc_ops = _gradient_ops(lambda x: dense(x, training=True), rows)
    assert ("Transpose" in fc_ops) == fc_transposed
    # Whatever the forms, the same gradients.
    for layer, x in ((conv, image), (deep, deep_image), (dense, rows)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        with tf.GradientTape() as plain_tape:
            plain_loss = tf.reduce_sum(layer(x, training=False) ** 2)
        ours = tape.gradient(loss, layer.trainable_weights)
        for a, b in zip(ours, plain_tape.gradient(plain_loss, layer.trainable_weights)):
            _close(a, b, 1e-4)


def test_a_conv_with_256_input_channels_or_more_is_deep():
    forms = {"conv_input": False, "conv_kernel": False, "deep_conv_kernel": True}
    assert gradients.DEEP_CHANNELS == 256
    assert gradients.conv_forms(255, forms) == (False, False)
    assert gradients.conv_forms(256, forms) == (False, True)
    assert gradients.conv_forms(512, forms) == (False, True)


def test_ours_and_tf_force_every_form_whatever_the_cpu(choose):
    conv = gradients.TrainingConv2D(8, 3, padding="same", activation="relu")
    image = tf.random.normal([1, 10, 12, 4])
    conv(image)
    choose("ours", onednn=True, avx512=True)
    assert gradients.gradient_forms() == dict.fromkeys(gradients.FORMS, True)
    assert not _backprops(conv, image)
    choose("tf", onednn=False)
    assert gradients.gradient_forms() == dict.fromkeys(gradients.FORMS, False)
    assert _backprops(conv, image) == BOTH
    choose("fast")
    with pytest.raises(ValueError, match="TF_FRCNN_GRADIENTS.*'fast'"):
        conv(image, training=True)


def test_other_convs_keep_conv2ds_gradients(choose):
    choose("ours")
    strided = gradients.TrainingConv2D(4, 3, strides=2, padding="same", activation="relu")
    linear = gradients.TrainingConv2D(4, 3, padding="same")
    image = tf.random.normal([1, 8, 8, 3])
    for conv in (strided, linear):
        conv(image)
        assert "Conv2DBackpropFilter" in _gradient_ops(lambda x, c=conv: c(x, training=True), image)


def test_vgg16_features_are_training_convs_with_the_names_and_weights_kept():
    keras.utils.set_random_seed(0)
    features = build_backbone("vgg16").features
    convs = [layer for layer in features.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    assert all(type(layer) is gradients.TrainingConv2D for layer in convs)
    assert convs[0].name == "block1_conv1" and convs[-1].name == "block5_conv3"

    plain = keras.Sequential([keras.layers.Conv2D(2, 3, padding="same", activation="relu")])
    plain.build((None, 6, 6, 1))
    functional = keras.Model(plain.inputs, plain.outputs)
    copy = gradients.with_training_convs(functional)
    assert type(copy.layers[-1]) is gradients.TrainingConv2D
    for a, b in zip(copy.get_weights(), functional.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_gradient_benchmark_lists_vgg16s_thirteen_convs(benchmark_module):
    shapes = benchmark_module("gradient_kernels").conv_shapes(300, 500)
    assert sum(shapes.values()) == 13
    assert shapes[(300, 500, 3, 64)] == 1 and shapes[(18, 31, 512, 512)] == 3
