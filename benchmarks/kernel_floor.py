"""The kernel floor of a traced graph: its convolutions and matrix products, each rebuilt alone
with random operands of its static shapes, for ``bench_inference.py`` (the inference's
Conv2D and MatMul) and ``train_floor.py`` (a training step's, with their gradients).

An op is described by a key, ``(type, operand shapes, output shape, attributes)``:

- ``Conv2D``: operands (input, filter); attributes (strides, padding, dilations).
- ``Conv2DBackpropInput`` (the gradient of a conv's input): operands (filter, out_backprop),
  output the input's shape; same attributes.
- ``Conv2DBackpropFilter`` (the gradient of its filter): operands (input, out_backprop),
  output the filter's shape; same attributes.
- ``MatMul``: operands (a, b); attributes (transpose_a, transpose_b). A dense layer's
  gradients are two MatMuls with a transposed operand (named ``gradient_tape/...``).

Only ``flops`` and ``collect`` are pure (tested in tests/test_benchmark_train_floor.py);
``kernel`` builds the op as a ``tf.function``, which the callers time as they need.
"""

import math

FLOOR_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul")
_CONV_OPERANDS = {"Conv2D": (0, 1), "Conv2DBackpropInput": (1, 2), "Conv2DBackpropFilter": (0, 2)}


def _shape(tensor):
    return tuple(tensor.shape.as_list())


def op_key(op):
    """The key of a ``tf.Operation`` of one of ``FLOOR_OPS`` (None for any other op). Raises
    ValueError on a dynamic shape: the floor needs static ones."""
    if op.type not in FLOOR_OPS:
        return None
    if op.type == "MatMul":
        operands = (_shape(op.inputs[0]), _shape(op.inputs[1]))
        attributes = (op.get_attr("transpose_a"), op.get_attr("transpose_b"))
    else:
        operands = tuple(_shape(op.inputs[i]) for i in _CONV_OPERANDS[op.type])
        padding = op.get_attr("padding").decode()
        if padding == "EXPLICIT" or op.get_attr("data_format").decode() != "NHWC":
            raise ValueError(f"{op.name}: only NHWC convs with SAME or VALID padding are rebuilt")
        attributes = (tuple(op.get_attr("strides")), padding, tuple(op.get_attr("dilations")))
    key = (op.type, operands, _shape(op.outputs[0]), attributes)
    if any(d is None for shape in (*operands, key[2]) for d in shape):
        raise ValueError(f"{op.name}: dynamic shape {key}; the floor needs static shapes")
    return key


def collect(ops):
    """``{key: count}`` of the ``FLOOR_OPS`` among ``ops`` (an iterable of tf.Operation)."""
    counts = {}
    for op in ops:
        key = op_key(op)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def flops(key):
    """Float operations (a multiply-add counts 2) of the op of ``key``.

    A conv and its two gradients are the same sum of products: 2 * (elements of the forward
    output) * (filter height * width * input channels); for a MatMul 2 * M * N * K."""
    op_type, operands, output, attributes = key
    if op_type == "MatMul":
        a, _ = operands
        inner = a[0] if attributes[0] else a[1]
        return 2 * output[0] * output[1] * inner
    if op_type == "Conv2D":
        forward_output, kernel = output, operands[1]
    elif op_type == "Conv2DBackpropInput":
        kernel, forward_output = operands
    else:
        forward_output, kernel = operands[1], output
    return 2 * math.prod(forward_output) * kernel[0] * kernel[1] * kernel[2]


def kernel(key, seed=0):
    """The op of ``key`` alone as a ``tf.function`` of no arguments, its operands random
    tensors made once (captured, not constants: a constant filter would let oneDNN reorder it
    once, as in a frozen graph, which a training step's changing weights do not allow)."""
    import tensorflow as tf

    op_type, operands, output, attributes = key
    generator = tf.random.Generator.from_seed(seed)
    a, b = (generator.normal(shape) for shape in operands)
    if op_type == "MatMul":
        transpose_a, transpose_b = attributes
        return tf.function(lambda: tf.matmul(a, b, transpose_a, transpose_b))
    strides, padding, dilations = attributes
    options = {"strides": list(strides), "padding": padding, "dilations": list(dilations)}
    sizes = tf.constant(output, tf.int32)
    if op_type == "Conv2D":
        return tf.function(lambda: tf.raw_ops.Conv2D(input=a, filter=b, **options))
    if op_type == "Conv2DBackpropInput":
        return tf.function(
            lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=sizes, filter=a, out_backprop=b, **options
            )
        )
    return tf.function(
        lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=a, filter_sizes=sizes, out_backprop=b, **options
        )
    )
