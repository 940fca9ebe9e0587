"""Faster gradients for the detector's fc layers and 3x3 convs: the same products as TF's
registered gradients, written as the kernels TF's CPU build runs fastest.

TF computes a MatMul's input gradient as ``dy @ kernel^T`` and a conv's gradients with
Conv2DBackpropInput and Conv2DBackpropFilter. On an AMD EPYC with AVX2 (no AVX-512), 2 threads,
where TF runs Eigen's kernels, these ran at 27 (fc6, 128 ROIs), 72-81 and 48-69 GFLOP/s, against
142 for the same fc product written as ``(kernel @ dy^T)^T``, 96-157 for the input gradient as a
forward conv of the flipped kernel, and 90-130 for the filter gradient as nine matmuls, one per
kernel tap. Where TF runs its oneDNN kernels (by default on CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX), its conv gradients are oneDNN's own and were as fast as these forms or faster
(the early layers' kernel gradients 1.3-4x faster, and less memory), while the fc form still
won (95 -> 146 GFLOP/s on an EPYC with AVX-512). So the fc form is always taken and the conv
forms only where oneDNN is off (``CONV_GRADIENTS``); ``benchmarks/gradient_kernels.py`` prints
both for the machine it runs on. The layers below take these forms when training only:
inference, exports and saved files see plain Keras ``Dense`` and ``Conv2D`` computations and
weights.
"""

import os

import keras
import tensorflow as tf

from tf_frcnn import hardware

# Which gradients a VGG16 3x3 conv trains with: "auto" (ours where TF's oneDNN kernels are off,
# TF's registered ones where they are on), "ours" or "tf"; the environment variable
# TF_FRCNN_CONV_GRADIENTS sets it for a process. Read when a training call is traced.
CONV_GRADIENTS = os.environ.get("TF_FRCNN_CONV_GRADIENTS", "auto")
CONV_GRADIENT_CHOICES = ("auto", "ours", "tf")


def own_conv_gradients(choice=None):
    """Whether 3x3 convs take ``conv3x3_relu``'s gradients under ``choice`` (default
    ``CONV_GRADIENTS``); "auto" means: where TF does not run its oneDNN kernels."""
    choice = CONV_GRADIENTS if choice is None else choice
    if choice not in CONV_GRADIENT_CHOICES:
        raise ValueError(
            f"TF_FRCNN_CONV_GRADIENTS (tf_frcnn.gradients.CONV_GRADIENTS) is {choice!r}; "
            "expected one of "
            f"{', '.join(CONV_GRADIENT_CHOICES)}"
        )
    return choice == "ours" or (choice == "auto" and not hardware.onednn_enabled())


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


@tf.custom_gradient
def conv3x3_relu(x, kernel, bias):
    """``relu(conv2d(x, kernel, 1, 'SAME') + bias)`` (NHWC, 3x3 kernel); the input gradient is
    a forward conv of the flipped, transposed kernel and the kernel's is nine matmuls."""
    y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))
    scope = _gradient_scope()

    def gradient(dy):
        with tf.name_scope(scope):
            dz = tf.raw_ops.ReluGrad(gradients=dy, features=y)
            dx = conv_input_gradient(dz, kernel)
            return dx, conv_kernel_gradient(x, dz), tf.reduce_sum(dz, [0, 1, 2])

    return y, gradient


class TrainingDense(keras.layers.Dense):
    """``keras.layers.Dense`` whose training call takes ``fc_matmul``'s gradient."""

    def call(self, inputs, training=None):
        if not training or self.lora_enabled or self.quantization_mode:
            return super().call(inputs, training=training)
        x = fc_matmul(inputs, tf.convert_to_tensor(self.kernel))
        if self.bias is not None:
            x = tf.nn.bias_add(x, self.bias)
        return self.activation(x) if self.activation is not None else x


@keras.saving.register_keras_serializable(package="tf_frcnn")
class TrainingConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose training call of a 3x3, stride-1, 'same', ReLU conv
    (all of VGG16's) takes ``conv3x3_relu``'s gradients where ``own_conv_gradients()``; any
    other conv, and every conv elsewhere, is Conv2D's."""

    def call(self, inputs, training=None):
        if not (training and self._fast() and own_conv_gradients()):
            return super().call(inputs)
        return conv3x3_relu(
            inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias)
        )

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
