"""Truncated SVD of the region-wise fc layers (Fast R-CNN Sec. 3.1)."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.head import FastRCNNHead
from tf_frcnn.svd import LowRankDense, truncate_dense, truncate_head


def _dense(inputs, units, kernel, bias, activation=None):
    layer = keras.layers.Dense(units, activation=activation)
    layer.build((None, inputs))
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    return layer


def test_truncation_is_the_best_rank_t_approximation():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(40, 24)).astype(np.float32)
    bias = rng.normal(size=24).astype(np.float32)
    dense = _dense(40, 24, kernel, bias, activation="relu")
    x = rng.normal(size=(5, 40)).astype(np.float32)
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    errors = []
    for rank in (4, 12, 23):
        low = truncate_dense(dense, rank)
        assert isinstance(low, LowRankDense)
        assert low.first.shape == (40, rank) and low.second.shape == (rank, 24)
        expected = np.maximum(x @ (u[:, :rank] * s[:rank] @ vt[:rank]) + bias, 0)
        np.testing.assert_allclose(low(x).numpy(), expected, rtol=1e-4, atol=1e-4)
        errors.append(np.abs(low(x).numpy() - dense(x).numpy()).max())
    assert errors[0] > errors[1] > errors[2]


def test_a_kernel_of_rank_r_is_kept_exactly():
    rng = np.random.default_rng(1)
    kernel = (rng.normal(size=(30, 3)) @ rng.normal(size=(3, 20))).astype(np.float32)
    dense = _dense(30, 20, kernel, np.zeros(20, np.float32))
    x = rng.normal(size=(7, 30)).astype(np.float32)
    np.testing.assert_allclose(
        truncate_dense(dense, 3)(x).numpy(), dense(x).numpy(), rtol=1e-4, atol=1e-4
    )


def test_rank_out_of_range_names_the_layer():
    dense = _dense(30, 20, np.zeros((30, 20), np.float32), np.zeros(20, np.float32))
    with pytest.raises(ValueError, match=dense.name):
        truncate_dense(dense, 20)


def _head_outputs(head, pooled):
    logits, deltas = head(pooled)
    return logits.numpy(), deltas.numpy()


def test_truncate_head_replaces_each_fc_layer():
    keras.utils.set_random_seed(0)
    pooled = tf.random.normal([6, 3, 3, 8])
    head = FastRCNNHead(3, fc_units=(16, 12), dropout=0.5)
    head(pooled)
    fc6, fc7 = head.fcs
    w6, b6 = fc6.kernel.numpy(), fc6.bias.numpy()
    model = types.SimpleNamespace(detector_head=head)
    with pytest.raises(ValueError, match="fc6, fc7"):
        truncate_head(model, [4])
    with pytest.raises(ValueError, match="fc7"):  # rank 12 of a 16 x 12 kernel
        truncate_head(model, [5, 12])
    assert head.fcs == [fc6, fc7]  # nothing replaced
    truncate_head(model, [5, 0])  # fc6 at rank 5, fc7 kept
    assert [layer.name for layer in head.fcs] == ["fc6_svd", "fc7"]
    paths = [w.path for w in head.weights]
    assert not any("fc6/" in p for p in paths) and any("fc6_svd/first" in p for p in paths)
    u, s, vt = np.linalg.svd(w6, full_matrices=False)
    hidden = np.maximum(pooled.numpy().reshape(6, -1) @ (u[:, :5] * s[:5] @ vt[:5]) + b6, 0)
    expected = head.cls_score(fc7(hidden)).numpy()
    np.testing.assert_allclose(_head_outputs(head, pooled)[0], expected, rtol=1e-4, atol=1e-5)
