"""Inference with the weights frozen into the graph as constants.

A frozen graph is what the TFLite converter needs, and on CPU it is also faster: with
constant weights, oneDNN reorders each conv and matmul weight into its blocked layout once
instead of on every call (``benchmarks/bench_inference.py`` times it). The frozen function
is fixed to one input shape and to the weights at freezing time: freeze after training, for
inference only.
"""

from __future__ import annotations

import tensorflow as tf

# No public TF2 API runs one function with its own graph options (``unoptimized``).
from tensorflow.python.eager import context

# No public TF2 API freezes a concrete function; the TFLite converter itself uses this one.
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.ops import gen_functional_ops

from tf_frcnn.model import builtin_twin


def freeze(concrete, jit_compile=False):
    """``concrete`` (a concrete function) with its variables as constants, called like the
    original and returning the same structure (the frozen graph alone returns a flat list);
    with ``jit_compile`` the frozen graph is compiled by XLA (once, for its fixed shapes).

    The graph holds the weights once, with its function in TF's runtime: the constants'
    GraphDef is imported straight into the returned function's graph.
    ``convert_variables_to_constants_v2`` alone imports it, prunes a copy, and a function
    calling its result copies it again: five copies of the weights, 2.8 GB more for VGG16
    (#26, docs/benchmarks.md "Memory")."""
    # The converter's own steps, without its wrapper functions.
    data = convert_to_constants._FunctionConverterDataInEager(
        func=concrete, lower_control_flow=True, aggressive_inlining=False
    )
    graph_def, converted = convert_to_constants._replace_variables_by_constants(converter_data=data)
    del data
    held = [graph_def]
    # XLA cannot compile the input placeholders an imported GraphDef keeps beside its input_map.
    if not jit_compile and len(converted) == len(concrete.graph.internal_captures):
        captured = {id(concrete.graph.internal_captures[index]) for index in converted}
        inputs = [t.name for t in concrete.inputs if id(t) not in captured]
        outputs = [t.name for t in concrete.outputs]

        def flat_call(*args):
            return tf.graph_util.import_graph_def(
                held[0], input_map=dict(zip(inputs, args)), return_elements=outputs, name="frozen"
            )
    else:
        # A capture that is not a variable (a lookup table, say), or XLA: the converter's
        # own function takes the GraphDef (and any such capture as an input).
        flat_call = convert_to_constants._construct_concrete_function(
            concrete, graph_def, converted
        )

    @tf.function(
        input_signature=concrete.structured_input_signature[0], jit_compile=jit_compile or None
    )
    def frozen_call(*args):
        results = flat_call(*tf.nest.flatten(args))
        return tf.nest.pack_sequence_as(concrete.structured_outputs, results)

    function = frozen_call.get_concrete_function()
    held.clear()  # the GraphDef now lives in the function's graph
    del graph_def
    return function


def unoptimized(function):
    """``function`` (a frozen concrete function, as ``freeze`` returns) as a callable that runs
    it with Grappler's meta optimizer off; same arguments and outputs.

    Grappler copies the graph it is handed once per pass, weights included: a frozen VGG16
    (0.55 GB of constants) peaks at 9.9 GB during its first call at 300x500 and takes 38-45 s
    to instantiate; without Grappler it peaks at 5.3-5.8 GB and takes 11 s, and runs as fast
    afterwards (0.913 vs 0.914 s, interleaved in one process; docs/benchmarks.md "Memory"):
    oneDNN's own graph rewrite, which is not Grappler's, still fuses the convs. Only this
    function's calls run so; every other function keeps the process's options."""
    function.add_to_graph()
    config = context.context().config  # the process's (threads included), Grappler off
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    options = config.SerializeToString()
    types = [t.dtype for t in function.outputs]

    def call(*args):
        flat = gen_functional_ops.partitioned_call(
            args=tf.nest.flatten(args), Tout=types, f=function, config_proto=options
        )
        return tf.nest.pack_sequence_as(function.structured_outputs, flat)

    return call


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

    image_spec = tf.TensorSpec([batch_size, height, width, 3], tf.float32, name="images")
    shape_spec = tf.TensorSpec([batch_size, 2], tf.int32, name="image_shape")

    @tf.function(input_signature=[image_spec, shape_spec])
    def infer(images, image_shape):
        return model.infer({"images": images, "image_shape": image_shape})

    return freeze(infer.get_concrete_function(), jit_compile=jit_compile)
