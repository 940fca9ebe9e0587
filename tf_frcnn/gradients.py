"""Faster gradients for the detector's fc layers and 3x3 convs: the same products as TF's
registered gradients, written as kernels that TF's CPU build may run faster, and which of the
two each gradient takes on the CPU it runs on.

TF computes a MatMul's input gradient as ``dy @ kernel^T`` and a conv's gradients with
Conv2DBackpropInput and Conv2DBackpropFilter. Our forms of the same products: the fc input
gradient as ``(kernel @ dy^T)^T``; a 3x3 conv's input gradient as a forward conv of the
flipped kernel; its kernel gradient as nine matmuls, one per kernel tap. Which is faster
depends on the kernels TF runs (``benchmarks/gradient_kernels.py`` times each pair on the
machine it runs on; its tables are in docs/benchmarks.md). VGG16 at 300x500, 2 threads,
an AMD EPYC:

- oneDNN off (TF runs Eigen's kernels; TF's default on CPUs without AVX512_VNNI,
  AVX512_BF16, AVX_VNNI or AMX): ours are faster for all three (fc6 input 30 -> 145 GFLOP/s,
  conv input gradients 1.0-2.3x, kernel gradients 0.9-1.4x).
- oneDNN on, with AVX-512: TF's conv gradients are oneDNN's own and as fast or faster (the
  early kernel gradients 1.3-4x), but for the convs with 256 input channels or more our kernel
  gradient wins at the paper's 600x1000 (oneDNN's backward-weights ran at 113-145 GFLOP/s,
  ours at 145-178; the training step 0.92-0.95x, paired in one process) and draws at 300x500 (the
  step 1.00x); our fc form still wins (95 -> 146 GFLOP/s).
- oneDNN on, capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, as on an AVX2 CPU with
  ``TF_ENABLE_ONEDNN_OPTS=1``): TF's input gradients and fc form win (1.0-3x), our kernel
  gradients win by 1.1-4.8x on all but the first and last convs (oneDNN's backward-weights
  kernels ran at 18-80 GFLOP/s; 2.6 s against our 1.2 s over VGG16's thirteen).

``gradient_forms`` applies that table; ``GRADIENTS`` forces all ours or all TF's. The layers
below take these forms when training only: inference, exports and saved files see plain Keras
``Dense`` and ``Conv2D`` computations and weights.
"""

import functools
import os

import keras
import tensorflow as tf

from tf_frcnn import hardware

# Which gradients the training layers take: "auto" (``gradient_forms``' per-CPU table), "ours"
# or "tf" (every gradient one side's); the environment variable TF_FRCNN_GRADIENTS sets it for
# a process. Read when a training call is traced.
GRADIENTS = os.environ.get("TF_FRCNN_GRADIENTS", "auto")
GRADIENT_CHOICES = ("auto", "ours", "tf")
FORMS = ("conv_input", "conv_kernel", "deep_conv_kernel", "fc_input")
# A conv with this many input channels or more is "deep": its kernel gradient is chosen apart
# ("deep_conv_kernel"), as oneDNN's backward-weights kernels are slowest there (VGG16's
# conv3_2 to conv5_3; the module's docstring has the figures).
DEEP_CHANNELS = 256


def gradient_forms(choice=None):
    """{"conv_input", "conv_kernel", "deep_conv_kernel", "fc_input": whether training takes our
    form of that gradient} under ``choice`` (default ``GRADIENTS``); "conv_kernel" is for convs
    with fewer than ``DEEP_CHANNELS`` input channels, "deep_conv_kernel" for the others.
    "auto": all ours where TF's oneDNN kernels are off; where they are on, TF's conv input
    gradient, our kernel gradient of the deep convs, that of the others where oneDNN has no
    AVX-512, and our fc form where it has."""
    choice = GRADIENTS if choice is None else choice
    if choice not in GRADIENT_CHOICES:
        raise ValueError(
            f"TF_FRCNN_GRADIENTS (tf_frcnn.gradients.GRADIENTS) is {choice!r}; expected one "
            f"of {', '.join(GRADIENT_CHOICES)}"
        )
    if choice != "auto":
        return dict.fromkeys(FORMS, choice == "ours")
    if not hardware.onednn_enabled():
        return dict.fromkeys(FORMS, True)
    wide = hardware.onednn_avx512()
    return {
        "conv_input": False,
        "conv_kernel": not wide,
        "deep_conv_kernel": True,
        "fc_input": wide,
    }


def conv_forms(channels, forms=None):
    """``(own_input, own_kernel)``: whether a 3x3 conv with ``channels`` input channels takes
    our input and kernel gradients under ``forms`` (default ``gradient_forms()``)."""
    forms = gradient_forms() if forms is None else forms
    kernel = "deep_conv_kernel" if channels >= DEEP_CHANNELS else "conv_kernel"
    return forms["conv_input"], forms[kernel]


def _gradient_scope():
    """The name scope TF gives a registered gradient's ops ("gradient_tape/<the forward op's
    scope>/"), so profiles and ``benchmarks/train_floor.py`` credit ours to their layer."""
    scope = tf.get_current_name_scope()
    return f"gradient_tape/{scope}/" if scope else "gradient_tape/"


def fc_input_gradient(dy, kernel):
    """The input gradient of ``x @ kernel``, ``dy @ kernel^T``, as ``(kernel @ dy^T)^T``."""
    return tf.transpose(tf.matmul(kernel, dy, transpose_b=True))


@tf.custom_gradient
def fc_matmul(x, kernel):
    """``x @ kernel`` [N, in] x [in, out]; the input gradient by ``fc_input_gradient``."""
    scope = _gradient_scope()

    def gradient(dy):
        with tf.name_scope(scope):
            return fc_input_gradient(dy, kernel), tf.matmul(x, dy, transpose_a=True)

    return tf.matmul(x, kernel), gradient


def conv_input_gradient(dz, kernel):
    """The input gradient of a 3x3 stride-1 'SAME' conv: a forward conv of ``dz`` with the
    kernel flipped in space and its in/out channels swapped."""
    return tf.nn.conv2d(dz, tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]), 1, "SAME")


def conv_kernel_gradient(x, dz):
    """The gradient of a 3x3 stride-1 'SAME' conv's kernel: for each tap (i, j), the input
    shifted by (i - 1, j - 1), [N*H*W, C], transposed times ``dz`` [N*H*W, K]."""
    channels, filters = x.shape[-1], dz.shape[-1]
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    flat = tf.reshape(dz, [-1, filters])
    taps = []
    for i in range(3):
        for j in range(3):
            # One shifted copy of the input alive at a time: each waits for the last product.
            with tf.control_dependencies(taps[-1:]):
                shifted = tf.reshape(padded[:, i : i + height, j : j + width, :], [-1, channels])
            taps.append(tf.matmul(shifted, flat, transpose_a=True))
    return tf.reshape(tf.stack(taps), [3, 3, channels, filters])


def conv3x3_relu(x, kernel, bias, own_input=True, own_kernel=True):
    """``relu(conv2d(x, kernel, 1, 'SAME') + bias)`` (NHWC, 3x3 kernel) whose input gradient
    is ``conv_input_gradient`` (``own_input``, else Conv2DBackpropInput) and kernel gradient
    ``conv_kernel_gradient`` (``own_kernel``, else Conv2DBackpropFilter)."""
    return _conv3x3_relu(own_input, own_kernel)(x, kernel, bias)


@functools.cache
def _conv3x3_relu(own_input, own_kernel):
    @tf.custom_gradient
    def conv(x, kernel, bias):
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))
        scope = _gradient_scope()

        def gradient(dy):
            with tf.name_scope(scope):
                dz = tf.raw_ops.ReluGrad(gradients=dy, features=y)
                if own_input:
                    dx = conv_input_gradient(dz, kernel)
                else:
                    dx = tf.raw_ops.Conv2DBackpropInput(
                        input_sizes=tf.shape(x), filter=kernel, out_backprop=dz, **_SAME
                    )
                if own_kernel:
                    dk = conv_kernel_gradient(x, dz)
                else:
                    dk = tf.raw_ops.Conv2DBackpropFilter(
                        input=x, filter_sizes=tf.shape(kernel), out_backprop=dz, **_SAME
                    )
                return dx, dk, tf.reduce_sum(dz, [0, 1, 2])

        return y, gradient

    return conv


_SAME = {"strides": [1, 1, 1, 1], "padding": "SAME"}


class TrainingDense(keras.layers.Dense):
    """``keras.layers.Dense`` whose training call takes ``fc_matmul``'s gradient where
    ``gradient_forms()`` picks our fc form, MatMul's elsewhere."""

    def call(self, inputs, training=None):
        plain = not training or self.lora_enabled or self.quantization_mode
        if plain or not gradient_forms()["fc_input"]:
            return super().call(inputs, training=training)
        x = fc_matmul(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        return self.activation(x) if self.activation is not None else x


@keras.saving.register_keras_serializable(package="tf_frcnn")
class TrainingConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose training call of a 3x3, stride-1, 'same', ReLU conv
    (all of VGG16's) takes ``conv3x3_relu``'s gradients where ``conv_forms`` picks our form
    of either for its input channels; any other conv, and every conv where it picks neither,
    is Conv2D's."""

    def call(self, inputs, training=None):
        fast = training and self._fast()
        own_input, own_kernel = conv_forms(self.kernel.shape[2]) if fast else (False, False)
        if not (own_input or own_kernel):
            return super().call(inputs)
        kernel, bias = tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias)
        return conv3x3_relu(inputs, kernel, bias, own_input, own_kernel)

    def _fast(self):
        return (
            tuple(self.kernel_size) == (3, 3)
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.padding == "same"
            and self.groups == 1
            and self.data_format == "channels_last"
            and self.use_bias
            and self.activation is keras.activations.relu
            and self.quantization_mode is None
        )


def with_training_convs(model):
    """A copy of functional ``model`` (its weights too) whose Conv2D layers are
    ``TrainingConv2D``s of the same config."""

    def clone(layer):
        if type(layer) is keras.layers.Conv2D:
            return TrainingConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
