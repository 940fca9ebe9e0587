"""Inference with the weights frozen into the graph as constants.

A frozen graph is what the TFLite converter needs, and on CPU it is also faster: with
constant weights, oneDNN reorders each conv and matmul weight into its blocked layout once
instead of on every call (``benchmarks/bench_inference.py`` times it). The frozen function
is fixed to one input shape and to the weights at freezing time: freeze after training, for
inference only.
"""

from __future__ import annotations

import tensorflow as tf

# No public TF2 API freezes a concrete function; the TFLite converter itself uses this one.
from tensorflow.python.framework import convert_to_constants

from tf_frcnn.model import builtin_twin


def freeze(concrete, jit_compile=False):
    """``concrete`` (a concrete function) with its variables as constants, called like the
    original and returning the same structure (the frozen graph alone returns a flat list);
    with ``jit_compile`` the frozen graph is compiled by XLA (once, for its fixed shapes)."""
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)

    @tf.function(
        input_signature=concrete.structured_input_signature[0], jit_compile=jit_compile or None
    )
    def frozen_call(*args):
        return tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*args))

    return frozen_call.get_concrete_function()


def frozen_inference(model, height, width, batch_size=1, jit_compile=False):
    """The detector's inference (``FasterRCNN.infer``) on float32 images [batch_size, height,
    width, 3] (pixels 0..255) and their int32 valid sizes [batch_size, 2], frozen.

    With ``jit_compile`` the frozen graph is XLA-compiled, pooling the ROIs with
    ``ROIPoolingBuiltin`` (``tf_frcnn.model.builtin_twin``: XLA has no ``crop_and_resize``);
    the detections are the same to float rounding.

    Returns a concrete function ``(images, image_shape) -> detections dict`` (see
    ``FasterRCNN.infer``)."""
    if jit_compile:
        model = builtin_twin(model)

    @tf.function(
        input_signature=[
            tf.TensorSpec([batch_size, height, width, 3], tf.float32, name="images"),
            tf.TensorSpec([batch_size, 2], tf.int32, name="image_shape"),
        ]
    )
    def infer(images, image_shape):
        return model.infer({"images": images, "image_shape": image_shape})

    return freeze(infer.get_concrete_function(), jit_compile=jit_compile)
