import numpy as np
import tensorflow as tf

from tf_frcnn import AnchorGenerator
from tf_frcnn.anchors import base_anchors


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
