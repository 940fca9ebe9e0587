"""Truncated SVD of the region-wise fc layers (Fast R-CNN, Girshick 2015, Sec. 3.1).

At test time the fc layers run once per ROI, so VGG16's fc6 and fc7 weigh on
detection time. A Dense layer's kernel W [in, out] is factored as
W ~ U_t S_t V_t^T keeping the t largest singular values, and the layer becomes
two: x -> x (U_t S_t) (no bias), then -> (.) V_t^T + b with the original bias
and activation. That is t (in + out) multiply-adds per ROI instead of in * out.
The Fast R-CNN paper keeps 1024 values of fc6 and 256 of fc7.

Inference only: applied to trained weights (``tf-frcnn eval/export
--svd-ranks``), never trained.
"""

import contextlib

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_frcnn")
class LowRankDense(keras.layers.Layer):
    """``activation(x @ first @ second + bias)``: a Dense layer of ``units``
    outputs through a rank-``rank`` bottleneck."""

    def __init__(self, units, rank, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.rank = int(rank)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.first = self.add_weight(name="first", shape=(int(input_shape[-1]), self.rank))
        self.second = self.add_weight(name="second", shape=(self.rank, self.units))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        return self.activation(tf.matmul(tf.matmul(inputs, self.first), self.second) + self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        activation = keras.activations.serialize(self.activation)
        config = {"units": self.units, "rank": self.rank, "activation": activation}
        return {**super().get_config(), **config}


def truncate_dense(dense, rank):
    """A built ``LowRankDense`` holding the rank-``rank`` SVD of a built Dense layer."""
    kernel = tf.convert_to_tensor(dense.kernel)
    inputs, units = kernel.shape
    if not 0 < rank < min(inputs, units):
        raise ValueError(
            f"SVD rank {rank} for layer '{dense.name}' ({inputs} x {units}) must be "
            f"between 1 and {min(inputs, units) - 1}"
        )
    singular, left, right = tf.linalg.svd(kernel)  # kernel = left diag(s) right^T
    layer = LowRankDense(units, rank, activation=dense.activation, name=f"{dense.name}_svd")
    layer.build((None, inputs))
    layer.first.assign(left[:, :rank] * singular[:rank])
    layer.second.assign(tf.transpose(right[:, :rank]))
    bias = dense.bias if dense.use_bias else tf.zeros([units])
    layer.bias.assign(bias)
    return layer


def truncate_head(model, ranks):
    """Replace the region-wise fc layers of a trained ``FasterRCNN`` (fc6, fc7,
    ... in order) by their truncated SVDs, in place.

    Args:
      model: a built ``FasterRCNN`` with trained weights.
      ranks: one rank per fc layer, in order; 0 keeps that layer as it is.

    Raises:
      ValueError: the model's head has a different number of fc layers, or a
        rank is not below the layer's smaller dimension.
    """
    head = model.detector_head
    if len(ranks) != len(head.fcs):
        raise ValueError(
            f"--svd-ranks gives {len(ranks)} ranks but the detector head has "
            f"{len(head.fcs)} fc layers ({', '.join(fc.name for fc in head.fcs)})"
        )
    replaced = [truncate_dense(fc, rank) if rank else fc for fc, rank in zip(head.fcs, ranks)]
    with _unlocked(head) as tracker:
        for fc, rank in zip(head.fcs, ranks):
            if rank:
                tracker.untrack(fc)
        head.fcs = replaced
    return model


@contextlib.contextmanager
def _unlocked(layer):
    """Let a built layer swap sub-layers (the old ones untracked, so their
    weights leave ``layer.weights`` and the exports), as Keras' own
    post-training ``Layer.quantize`` unlocks it."""
    tracker = layer._tracker
    tracker.unlock()
    try:
        yield tracker
    finally:
        tracker.lock()
