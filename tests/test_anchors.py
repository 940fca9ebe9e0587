import numpy as np
import tensorflow as tf

from tf_frcnn import AnchorGenerator
from tf_frcnn.anchors import PyramidAnchorGenerator, base_anchors, level_scales, pyramid_levels


def test_800x800_gives_22500_anchors():
    # The seed's numbers: 800x800 image -> 50x50 stride-16 map -> 50 * 50 * 9 anchors.
    anchors = AnchorGenerator()(tf.zeros([1, 50, 50, 512]))
    assert anchors.shape == (22500, 4)
    assert anchors.dtype == tf.float32


def test_sizes_and_ratios_of_the_paper():
    cell = base_anchors()
    heights = cell[:, 2] - cell[:, 0]
    widths = cell[:, 3] - cell[:, 1]
    np.testing.assert_allclose(
        sorted(set(np.round(np.sqrt(heights * widths), 3))), [128.0, 256.0, 512.0], rtol=1e-5
    )
    np.testing.assert_allclose(
        sorted(set(np.round(heights / widths, 5))), [0.5, 1.0, 2.0], rtol=1e-4
    )
    assert len(cell) == 9


def test_centres_and_order_match_feature_positions():
    anchors = AnchorGenerator()(tf.zeros([2, 3, 4, 1])).numpy().reshape(3, 4, 9, 4)
    centres_y = (anchors[..., 0] + anchors[..., 2]) / 2
    centres_x = (anchors[..., 1] + anchors[..., 3]) / 2
    np.testing.assert_allclose(centres_y[1, 2], 24.0)  # row 1: (1 + 0.5) * 16
    np.testing.assert_allclose(centres_x[1, 2], 40.0)  # column 2: (2 + 0.5) * 16


def test_static_shape_and_dynamic_shape_and_config():
    layer = AnchorGenerator(scales=(2, 4), ratios=(1.0,), stride=8)
    assert layer.num_anchors_per_location == 2
    assert layer.compute_output_shape((1, 5, 6, 3)) == (60, 4)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    def dynamic(feature_map):
        return layer(feature_map)

    assert dynamic(tf.zeros([1, 5, 6, 3])).shape == (60, 4)
    clone = AnchorGenerator.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(tf.zeros([1, 2, 2, 1])), layer(tf.zeros([1, 2, 2, 1])))


def test_base_anchors_values_and_ratio_major_order():
    # base 2, scales (1, 3), ratios (0.25, 1): side 2 s, height side * sqrt(r), width side /
    # sqrt(r), centred on the origin; all scales of ratio 0.25 first.
    cell = base_anchors(base_size=2, scales=(1, 3), ratios=(0.25, 1.0))
    expected = [
        [-0.5, -2.0, 0.5, 2.0],  # r 0.25, side 2: 1 x 4
        [-1.5, -6.0, 1.5, 6.0],  # r 0.25, side 6: 3 x 12
        [-1.0, -1.0, 1.0, 1.0],  # r 1, side 2
        [-3.0, -3.0, 3.0, 3.0],  # r 1, side 6
    ]
    np.testing.assert_allclose(cell, expected, rtol=1e-6)
    assert cell.dtype == np.float32


def test_every_anchor_of_a_small_map_in_row_column_anchor_order():
    # A 2 x 3 map, stride 4, base 2, scales (1, 2), ratio 1: cell (i, j) centred on
    # ((i + 0.5) * 4, (j + 0.5) * 4), its 2 anchors of sides 2 and 4 in that order.
    layer = AnchorGenerator(base_size=2, scales=(1, 2), ratios=(1.0,), stride=4)
    expected = []
    for i in range(2):
        for j in range(3):
            cy, cx = (i + 0.5) * 4, (j + 0.5) * 4
            for half in (1.0, 2.0):
                expected.append([cy - half, cx - half, cy + half, cx + half])
    np.testing.assert_allclose(layer(tf.zeros([1, 2, 3, 5])).numpy(), expected, rtol=1e-6)

    # The same anchors when h, w or both are only known at run time; a static shape when
    # both are known.
    for shape, static in (
        ([None, None, None, 5], None),
        ([1, None, 3, 5], None),
        ([1, 2, None, 5], None),
        ([None, 2, 3, 5], 12),
    ):
        traced = tf.function(layer.call, input_signature=[tf.TensorSpec(shape)])
        concrete = traced.get_concrete_function()
        assert concrete.structured_outputs.shape.as_list() == [static, 4], shape
        np.testing.assert_allclose(concrete(tf.zeros([1, 2, 3, 5])).numpy(), expected, rtol=1e-6)


def test_default_anchors_are_the_papers_on_the_stride_16_grid():
    # 9 anchors of base 16, scales 8, 16, 32, ratios 0.5, 1, 2 around (8, 8) and (8, 24).
    anchors = AnchorGenerator()(tf.zeros([1, 1, 2, 1])).numpy()
    np.testing.assert_allclose(anchors[:9], base_anchors() + 8.0, rtol=1e-6)
    np.testing.assert_allclose(anchors[9:], base_anchors() + [8.0, 24.0, 8.0, 24.0], rtol=1e-6)
    np.testing.assert_allclose(anchors[4], [-120, -120, 136, 136])  # ratio 1, 256 px


def test_output_shape_unknown_when_either_side_is():
    layer = AnchorGenerator()
    assert layer.compute_output_shape((1, None, 6, 3)) == (None, 4)
    assert layer.compute_output_shape((1, 5, None, 3)) == (None, 4)
    assert layer.compute_output_shape((None, 2, 3, 3)) == (54, 4)


def test_config_round_trip_keeps_every_argument():
    layer = AnchorGenerator(base_size=4, scales=(3,), ratios=(2.0,), stride=8)
    config = layer.get_config()
    assert (config["base_size"], config["scales"], config["ratios"], config["stride"]) == (
        4,
        (3.0,),
        (2.0,),
        8,
    )
    clone = AnchorGenerator.from_config(config)
    feature_map = tf.zeros([1, 2, 2, 1])
    np.testing.assert_array_equal(clone(feature_map), layer(feature_map))


def test_pyramid_levels_and_scales():
    from types import SimpleNamespace

    assert pyramid_levels(SimpleNamespace(min_level=2, max_level=6)) == [4, 8, 16, 32, 64]
    assert pyramid_levels(SimpleNamespace(min_level=3, max_level=3)) == [8]
    fpn = SimpleNamespace(min_level=2, max_level=6)
    assert level_scales((8, 16, 32), fpn) == [8.0]
    assert level_scales((8, 16, 32), None) == [8.0, 16.0, 32.0]
    assert level_scales((8, 16), fpn) == [8.0, 16.0]
    assert level_scales((4,), None) == [4.0]


def test_pyramid_generator_levels_carry_their_own_stride_and_size():
    # Levels 2 and 3 (strides 4 and 8), scale 2, ratio 1: anchors of 8 and 16 px on the cell
    # centres of each level's own map.
    layer = PyramidAnchorGenerator(min_level=2, max_level=3, scales=(2,), ratios=(1.0,))
    assert layer.num_anchors_per_location == 1
    assert [(level.base_size, level.stride) for level in layer.levels] == [(4, 4), (8, 8)]
    default = PyramidAnchorGenerator()  # P2-P6, 3 ratios of one scale (8 x the stride)
    assert [level.stride for level in default.levels] == [4, 8, 16, 32, 64]
    assert default.num_anchors_per_location == 3 and default.levels[0].scales == (8.0,)
    maps = [tf.zeros([1, 2, 2, 1]), tf.zeros([1, 1, 1, 1])]
    level2, level3 = layer(maps)
    np.testing.assert_allclose(
        level2.numpy(), [[-2, -2, 6, 6], [-2, 2, 6, 10], [2, -2, 10, 6], [2, 2, 10, 10]], rtol=1e-6
    )
    np.testing.assert_allclose(level3.numpy(), [[-4, -4, 12, 12]], rtol=1e-6)
    assert layer.compute_output_shape([(1, 2, 2, 1), (1, 1, 1, 1)]) == [(4, 4), (1, 4)]
    config = layer.get_config()
    assert (config["min_level"], config["max_level"], config["scales"], config["ratios"]) == (
        2,
        3,
        (2.0,),
        (1.0,),
    )
    clone = PyramidAnchorGenerator.from_config(config)
    for a, b in zip(clone(maps), layer(maps)):
        np.testing.assert_array_equal(a, b)
