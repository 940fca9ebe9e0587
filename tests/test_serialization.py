"""Every tf_frcnn layer round-trips through Keras serialisation: the same config, and the same
outputs once the weights are copied."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import (
    AnchorGenerator,
    FastRCNNHead,
    ProposalLayer,
    ROIPooling,
    ROIPoolingBuiltin,
    RPNHead,
)
from tf_frcnn.backbones import CaffePreprocessing
from tf_frcnn.svd import LowRankDense

FEATURE_MAP = tf.random.stateless_uniform([1, 4, 5, 8], seed=(0, 1))
ROIS = tf.constant([[[0.0, 0.0, 40.0, 50.0], [10.0, 20.0, 60.0, 80.0]]])
LOGITS = tf.random.stateless_normal([1, 4 * 5 * 2, 2], seed=(0, 2))
DELTAS = tf.random.stateless_normal([1, 4 * 5 * 2, 4], seed=(0, 3), stddev=0.1)
ANCHORS = AnchorGenerator(scales=(2,), ratios=(0.5, 1.0))(FEATURE_MAP)

LAYERS = [
    (RPNHead(num_anchors=6, channels=16, name="rpn"), (FEATURE_MAP,)),
    (AnchorGenerator(base_size=8, scales=(2, 4), ratios=(1.0,), stride=8), (FEATURE_MAP,)),
    (
        ProposalLayer(
            train_pre_nms=30,
            train_post_nms=10,
            test_pre_nms=20,
            test_post_nms=5,
            nms_iou=0.6,
            min_size=2.0,
        ),
        (LOGITS, DELTAS, ANCHORS, tf.constant([[64, 80]])),
    ),
    (ROIPooling(pool_size=3, stride=16), (FEATURE_MAP, ROIS)),
    (ROIPoolingBuiltin(pool_size=2, stride=8), (FEATURE_MAP, ROIS)),
    (
        FastRCNNHead(4, fc_units=(16, 8), dropout=0.25, name="detector"),
        (tf.random.stateless_uniform([3, 2, 2, 8], seed=(0, 4)),),
    ),
    (CaffePreprocessing(mean=(1.0, 2.0, 3.0)), (tf.fill([1, 2, 2, 3], 100.0),)),
    (LowRankDense(6, rank=2, activation="relu"), (tf.ones([2, 5]),)),
]


@pytest.mark.parametrize("layer, inputs", LAYERS, ids=[type(lay).__name__ for lay, _ in LAYERS])
def test_layer_round_trips_with_its_config(layer, inputs):
    arguments = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(layer.get_config())
    expected = layer(*inputs)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    restored(*inputs)
    restored.set_weights(layer.get_weights())
    for got, want in zip(tf.nest.flatten(restored(*inputs)), tf.nest.flatten(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
