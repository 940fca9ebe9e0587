"""benchmarks/train_floor.py and benchmarks/kernel_floor.py: the FLOP count and the tables on
hand-built numbers, and the ops found in a tiny model's traced training step (no timing)."""

import types

import pytest

SAME = ((1, 1, 1, 1), "SAME", (1, 1, 1, 1))


@pytest.fixture
def train_floor(benchmark_module):
    return benchmark_module("train_floor")


def test_a_conv_and_its_two_gradients_count_the_same_flops(train_floor):
    flops = train_floor.kernel_floor.flops
    # 8x8 output, 16 filters of 3x3x3: 2 * 8 * 8 * 16 * 27 = 55,296.
    assert flops(("Conv2D", ((1, 8, 8, 3), (3, 3, 3, 16)), (1, 8, 8, 16), SAME)) == 55_296
    # The input's gradient: operands (filter, out_backprop), output the input's shape.
    assert (
        flops(("Conv2DBackpropInput", ((3, 3, 3, 16), (1, 8, 8, 16)), (1, 8, 8, 3), SAME)) == 55_296
    )
    # The filter's gradient: operands (input, out_backprop), output the filter's shape.
    assert (
        flops(("Conv2DBackpropFilter", ((1, 8, 8, 3), (1, 8, 8, 16)), (3, 3, 3, 16), SAME))
        == 55_296
    )
    # Stride 2 halves each side of the output: a quarter of the products.
    strided = ((1, 2, 2, 1), "SAME", (1, 1, 1, 1))
    assert flops(("Conv2D", ((1, 8, 8, 3), (3, 3, 3, 16)), (1, 4, 4, 16), strided)) == 13_824


def test_a_dense_layer_and_its_two_gradient_matmuls_count_the_same_flops(train_floor):
    flops = train_floor.kernel_floor.flops
    fc6 = 2 * 128 * 4096 * 25088
    assert flops(("MatMul", ((128, 25088), (25088, 4096)), (128, 4096), (False, False))) == fc6
    # dx = dy w^T and dw = x^T dy.
    assert flops(("MatMul", ((128, 4096), (25088, 4096)), (128, 25088), (False, True))) == fc6
    assert flops(("MatMul", ((128, 25088), (128, 4096)), (25088, 4096), (True, False))) == fc6


def test_part_of_reads_the_layer_scopes(train_floor):
    scopes = {"backbone": ["vgg16_features"], "rpn": ["rpn_head"], "detector": ["fast_rcnn_head"]}
    part_of = train_floor.part_of
    assert part_of("vgg16_features_1/block1_conv1_1/convolution", scopes) == "backbone"
    assert part_of("gradient_tape/rpn_head_1/rpn_conv_1/Conv2DBackpropInput", scopes) == "rpn"
    assert part_of("fast_rcnn_head/fc6/MatMul", scopes) == "detector"
    # A longer name that starts like a layer's is not that layer's.
    assert part_of("rpn_head_extra/conv/Conv2D", scopes) is None
    assert part_of("sgd/Sum", scopes) is None


def test_kind_of_puts_gradient_matmuls_apart(train_floor):
    def op(type_, name):
        return types.SimpleNamespace(type=type_, name=name)

    assert train_floor.kind_of(op("MatMul", "head/fc6/MatMul")) == "MatMul"
    assert train_floor.kind_of(op("MatMul", "gradient_tape/head/fc6/MatMul_1")) == (
        "MatMul (gradient)"
    )
    assert train_floor.kind_of(op("Conv2DBackpropFilter", "gradient_tape/x")) == (
        "Conv2DBackpropFilter"
    )


def test_floor_sums_and_itemised_rows(train_floor):
    conv = ("Conv2D", ((1, 8, 8, 3), (3, 3, 3, 16)), (1, 8, 8, 16), SAME)
    matmul = ("MatMul", ((2, 3), (3, 4)), (2, 4), (False, False))
    counts = {
        (conv, "backbone", "Conv2D"): 2,
        (matmul, "detector", "MatMul"): 1,
        (matmul, None, "MatMul"): 1,
    }
    by_part, by_kind, flops = train_floor.floor_sums(counts, {conv: 0.1, matmul: 0.05})
    assert by_part == pytest.approx({"backbone": 0.2, "detector": 0.05, None: 0.05})
    assert by_kind == pytest.approx({"Conv2D": 0.2, "MatMul": 0.1})
    assert flops == {"Conv2D": 2 * 55_296, "MatMul": 2 * (2 * 2 * 4 * 3)}

    # Each round's floor: the counts times that round's op times.
    rounds = train_floor.round_floors(counts, {conv: [0.1, 0.3], matmul: [0.05, 0.0]})
    assert rounds == pytest.approx([2 * 0.1 + 2 * 0.05, 2 * 0.3])

    rows = train_floor.itemise(1.0, {"backbone": 0.5, "proposals": 0.1, "detector": 0.2}, by_part)
    table = {row["part"]: row for row in rows}
    assert [row["part"] for row in rows] == ["backbone", "proposals", "detector", "rest", "step"]
    assert table["backbone"]["above_s"] == pytest.approx(0.3)
    assert table["backbone"]["share"] == pytest.approx(0.5)
    assert table["proposals"]["floor_s"] is None and table["proposals"]["above_s"] == 0.1
    # The rest: the step minus the parts (0.2), its floor what no part holds (0.05).
    assert table["rest"]["s"] == pytest.approx(0.2)
    assert table["rest"]["above_s"] == pytest.approx(0.15)
    assert table["step"]["floor_s"] == pytest.approx(0.3)
    assert table["step"]["above_s"] == pytest.approx(0.7)
    text = train_floor.format_table(rows)
    assert "| backbone | 500.0 | 50.0% | 200.0 | 300.0 |" in text
    assert "| proposals | 100.0 | 10.0% |  | 100.0 |" in text
    assert "| step | 1000.0 | 100.0% | 300.0 | 700.0 |" in text
    kinds = train_floor.format_kinds({"MatMul": 0.5}, {"MatMul": 2e9})
    assert "| MatMul | 500.0 | 2.00 | 4 |" in kinds


def test_the_tiny_models_step_has_each_layers_convs_and_matmuls(train_floor):
    """Every conv of the backbone and the RPN runs forward and has its filter's gradient; all
    but the first (whose input is the image) have their input's gradient; every dense layer of
    the head has one forward and two gradient MatMuls."""
    import keras
    import tensorflow as tf

    from tf_frcnn.config import config_from_dict
    from tf_frcnn.model import build_model

    config = config_from_dict(
        {
            "model": {"backbone": "tiny", "num_classes": 3, "rpn_channels": 16, "fc_units": [32]},
            "rpn": {"train_pre_nms": 100, "train_post_nms": 16},
            "roi": {"num_rois": 8},
        }
    )
    model = build_model(config)
    images = tf.random.uniform([1, 64, 96, 3], maxval=255.0, seed=0)
    image_shape = tf.constant([[64, 96]])
    model({"images": images, "image_shape": image_shape})
    batch = train_floor.bench_model.training_batch(model, images, image_shape)
    loop = train_floor.bench_model.training_loop(config, model)
    graph = loop._step.get_concrete_function(batch).graph
    counts = train_floor.floor_ops(graph, train_floor.model_scopes(model))

    def count(kind, part=None):
        return sum(n for (_, p, k), n in counts.items() if k == kind and part in (None, p))

    convs = [
        layer
        for layer in [*model.features.layers, model.rpn_head.conv]
        if isinstance(layer, keras.layers.Conv2D)
    ] + [model.rpn_head.objectness, model.rpn_head.deltas]
    backbone_convs = len(convs) - 3
    assert backbone_convs == 8
    assert count("Conv2D") == count("Conv2DBackpropFilter") == len(convs)
    assert count("Conv2DBackpropInput") == len(convs) - 1
    assert count("Conv2D", "backbone") == backbone_convs
    assert count("Conv2DBackpropInput", "backbone") == backbone_convs - 1
    assert count("Conv2DBackpropInput", "rpn") == 3
    dense = len(model.detector_head.fcs) + 2
    assert count("MatMul", "detector") == count("MatMul") == dense
    assert count("MatMul (gradient)", "detector") == count("MatMul (gradient)") == 2 * dense
    assert all(part is not None for _, part, _ in counts)
    # The graph holds the first conv's input gradient too; it does not run.
    in_graph = sum(op.type == "Conv2DBackpropInput" for op in graph.get_operations())
    assert in_graph == len(convs)

    # An op of each kind rebuilt alone gives the output shape of its key.
    first = {kind: key for key, _, kind in counts}
    assert len(first) == 5
    for key in first.values():
        assert tuple(train_floor.kernel_floor.kernel(key)().shape) == key[2]
