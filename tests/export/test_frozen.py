"""Frozen inference: the same detections as the model, with no variable left in the graph."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tf_frcnn.export import freeze, frozen_inference, unoptimized


def test_frozen_inference_matches_the_model_and_reads_no_variable(trained_model, scene, kit):
    images = tf.constant(scene[np.newaxis], tf.float32)
    image_shape = tf.constant([[kit.SIZE, kit.SIZE]])
    expected = trained_model.infer({"images": images, "image_shape": image_shape})
    frozen = frozen_inference(trained_model, kit.SIZE, kit.SIZE)
    out = frozen(images, image_shape)
    assert set(out) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(
            out[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-4, err_msg=name
        )
    kit.assert_finds_scene(
        out["detection_boxes"][0].numpy() / kit.SIZE,
        out["detection_classes"][0].numpy(),
        out["detection_scores"][0].numpy(),
    )
    ops = {op.type for op in frozen.graph.get_operations()}
    functions = [f for f in frozen.graph.as_graph_def().library.function]
    ops |= {node.op for f in functions for node in f.node_def}
    assert not ops & {"ReadVariableOp", "VarHandleOp", "ResourceGather"}, ops
    assert not frozen.variables


def test_freeze_keeps_the_output_structure():
    variable = tf.Variable([2.0, 3.0])

    @tf.function(input_signature=[tf.TensorSpec([2], tf.float32, name="x")])
    def f(x):
        return {"scaled": x * variable, "total": tf.reduce_sum(x * variable)}

    frozen = freeze(f.get_concrete_function())
    variable.assign([10.0, 10.0])  # frozen: the weights at freezing time stay
    out = frozen(tf.constant([1.0, 1.0]))
    np.testing.assert_allclose(out["scaled"].numpy(), [2.0, 3.0])
    assert float(out["total"]) == 5.0


def test_freeze_holds_the_weights_once():
    # The constants live in the frozen function's own graph, not also in a function it
    # calls (convert_variables_to_constants_v2's result, wrapped, held VGG16's weights
    # five times: #26).
    weight = tf.Variable(tf.ones([64, 32]))

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def f(x):
        return tf.matmul(x, weight)

    frozen = freeze(f.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    weights = [
        node
        for node in graph_def.node
        if node.op == "Const" and len(node.attr["value"].tensor.tensor_shape.dim) == 2
    ]
    assert len(weights) == 1
    assert not graph_def.library.function
    np.testing.assert_allclose(frozen(tf.ones([1, 64])).numpy(), np.full([1, 32], 64.0))


def test_unoptimized_gives_the_same_outputs_and_structure(trained_model, scene, kit):
    images = tf.constant(scene[np.newaxis], tf.float32)
    image_shape = tf.constant([[kit.SIZE, kit.SIZE]])
    frozen = frozen_inference(trained_model, kit.SIZE, kit.SIZE)
    expected, out = frozen(images, image_shape), unoptimized(frozen)(images, image_shape)
    assert set(out) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(out[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)


# The first call of a frozen graph holding WEIGHT_MB of constants, in a fresh process: how much
# its peak resident memory grows (MB), run as is or through `unoptimized`.
_FIRST_CALL = """
import sys
import tensorflow as tf
from tf_frcnn.export import freeze, unoptimized

def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

weight = tf.Variable(tf.random.uniform([4096, 4096], seed=1))  # 64 MB
f = tf.function(lambda x: tf.nn.relu(tf.matmul(tf.matmul(x, weight), weight) + 1.0))
frozen = freeze(f.get_concrete_function(tf.TensorSpec([8, 4096], tf.float32)))
call = unoptimized(frozen) if sys.argv[1] == "unoptimized" else frozen
x = tf.ones([8, 4096])
before = peak_mb()
call(x)
print(peak_mb() - before)
"""


def test_unoptimized_first_call_does_not_copy_the_weights_as_grappler_does():
    grown = {}
    for kind in ("grappler", "unoptimized"):
        result = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL, kind],
            capture_output=True, text=True, check=True, timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        grown[kind] = float(result.stdout.split()[-1])
    # Grappler's passes copy the 64 MB of constants several times; without them the call
    # itself needs little beyond them.
    assert grown["grappler"] > 128, grown
    assert grown["unoptimized"] < grown["grappler"] - 96, grown
