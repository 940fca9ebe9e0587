import numpy as np
import tensorflow as tf

from tf_frcnn import AnchorGenerator, ProposalLayer
from tf_frcnn import boxes as box_ops


def _rpn_outputs(seed=0, batch=2, size=20):
    rng = np.random.default_rng(seed)
    anchors = AnchorGenerator()(tf.zeros([1, size, size, 1]))
    num = anchors.shape[0]
    logits = tf.constant(rng.normal(size=(batch, num, 2)), tf.float32)
    deltas = tf.constant(rng.normal(scale=0.2, size=(batch, num, 4)), tf.float32)
    image_shape = tf.constant([[size * 16, size * 16]] * batch)
    return logits, deltas, anchors, image_shape


def test_paper_defaults():
    layer = ProposalLayer()
    assert (layer.train_pre_nms, layer.train_post_nms) == (12000, 2000)
    assert (layer.test_pre_nms, layer.test_post_nms) == (6000, 300)
    assert layer.nms_iou == 0.7


def test_static_padded_output_and_nms_property():
    logits, deltas, anchors, image_shape = _rpn_outputs()
    layer = ProposalLayer(test_pre_nms=1000, test_post_nms=300, min_size=8.0)
    proposals, scores, count = layer(logits, deltas, anchors, image_shape)
    assert proposals.shape == (2, 300, 4) and scores.shape == (2, 300)
    for i in range(2):
        n = int(count[i])
        assert 0 < n <= 300
        kept = proposals[i, :n]
        overlaps = box_ops.iou(kept, kept).numpy() - np.eye(n)
        assert overlaps.max() <= 0.7 + 1e-5  # no pair above the NMS threshold
        assert np.all(np.diff(scores[i, :n].numpy()) <= 1e-7)  # sorted by objectness
        assert not np.any(proposals[i, n:].numpy())  # zero padding
        k = kept.numpy()
        assert k.min() >= 0 and k[:, 2].max() <= 320 and k[:, 3].max() <= 320  # clipped
        assert np.all(k[:, 2] - k[:, 0] >= 8.0) and np.all(k[:, 3] - k[:, 1] >= 8.0)


def test_training_counts_are_chosen_explicitly():
    logits, deltas, anchors, image_shape = _rpn_outputs(batch=1)
    layer = ProposalLayer(train_pre_nms=500, train_post_nms=50, test_pre_nms=100, test_post_nms=10)
    assert layer(logits, deltas, anchors, image_shape, use_training_counts=True)[0].shape == (
        1,
        50,
        4,
    )
    assert layer(logits, deltas, anchors, image_shape, use_training_counts=False)[0].shape == (
        1,
        10,
        4,
    )
    # Keras' training flag does not pick the counts.
    assert layer(logits, deltas, anchors, image_shape, training=True)[0].shape == (1, 10, 4)


def test_best_scoring_box_comes_first_and_duplicates_suppressed():
    anchors = tf.constant([[0, 0, 20, 20], [0, 0, 20, 21], [40, 40, 60, 60]], tf.float32)
    logits = tf.constant([[[0.0, 1.0], [0.0, 2.0], [0.0, -1.0]]])
    proposals, scores, count = ProposalLayer(test_pre_nms=3, test_post_nms=3, min_size=1.0)(
        logits, tf.zeros([1, 3, 4]), anchors, tf.constant([[100, 100]])
    )
    assert int(count[0]) == 2
    np.testing.assert_allclose(proposals[0, :2].numpy(), [[0, 0, 20, 21], [40, 40, 60, 60]])


def test_traces_once_in_tf_function():
    layer = ProposalLayer(test_pre_nms=200, test_post_nms=20)
    traces = []

    @tf.function
    def run(logits, deltas, anchors, image_shape):
        traces.append(1)
        return layer(logits, deltas, anchors, image_shape)

    for seed in range(3):
        run(*_rpn_outputs(seed))
    assert len(traces) == 1
