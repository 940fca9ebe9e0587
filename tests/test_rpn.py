import numpy as np
import tensorflow as tf

from tf_frcnn import AnchorGenerator, RPNHead
from tf_frcnn import boxes as box_ops
from tf_frcnn.rpn import anchor_targets, objectness_scores, rpn_loss

ANCHORS = tf.constant(
    [
        [0, 0, 10, 10],  # IoU 1.0 with gt0                -> positive
        [0, 0, 10, 12],  # IoU 0.833 with gt0              -> positive (> 0.7)
        [0, 0, 10, 14.5],  # IoU 0.69 with gt0               -> ignored
        [0, 5, 10, 25],  # IoU 0.2                          -> negative (< 0.3)
        [50, 50, 60, 60],  # IoU 0                            -> negative
        [30, 30, 40, 60],  # IoU 0.467 with gt1, its best     -> positive (forced)
        [30, 30, 40, 70],  # IoU 0.35 with gt1                -> ignored
        [-2, 0, 10, 10],  # IoU 0.833 but crosses the border -> ignored
    ],
    tf.float32,
)
GT_BOXES = tf.constant([[[0, 0, 10, 10], [30, 30, 40, 44], [0, 0, 0, 0]]], tf.float32)
GT_LABELS = tf.constant([[3, 1, 0]])
IMAGE_SHAPE = tf.constant([[100, 100]])


def test_head_outputs_for_800x800():
    feature_map = tf.zeros([1, 50, 50, 32])
    logits, deltas = RPNHead(channels=16)(feature_map)
    assert logits.shape == (1, 22500, 2)
    assert deltas.shape == (1, 22500, 4)
    assert AnchorGenerator()(feature_map).shape[0] == logits.shape[1]
    scores = objectness_scores(logits)
    np.testing.assert_allclose(scores.numpy(), 0.5, atol=1e-6)  # zero input, zero bias


def test_head_is_fully_convolutional_with_configurable_width():
    head = RPNHead(num_anchors=9, channels=256)
    head(tf.zeros([1, 4, 4, 8]))
    kinds = {type(layer).__name__ for layer in head._layers}
    assert kinds == {"Conv2D"}
    assert head.conv.filters == 256 and head.conv.kernel_size == (3, 3)
    assert head.objectness.filters == 18 and head.deltas.filters == 36
    assert head.objectness.kernel_size == (1, 1)
    assert (RPNHead().channels, RPNHead().num_anchors) == (512, 9)  # the paper's defaults


def test_labelling_rules_on_hand_built_case():
    labels, targets = anchor_targets(ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE)
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, -1, 0, 0, 1, -1, -1])
    expected = box_ops.encode(GT_BOXES[0, :1], ANCHORS[1:2])
    np.testing.assert_allclose(targets.numpy()[0, 1], expected.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(targets.numpy()[0, 3], 0.0)  # negatives carry no target


def test_cross_boundary_anchors_count_when_not_ignored():
    labels, _ = anchor_targets(
        ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE, ignore_cross_boundary=False
    )
    assert labels.numpy()[0, 7] == 1


def test_image_without_objects_is_all_negative():
    labels, targets = anchor_targets(
        ANCHORS, tf.zeros([1, 3, 4]), tf.zeros([1, 3], tf.int32), IMAGE_SHAPE
    )
    np.testing.assert_array_equal(labels.numpy()[0], [0, 0, 0, 0, 0, 0, 0, -1])
    assert not np.any(targets.numpy())


def _anchors_800():
    return AnchorGenerator()(tf.zeros([1, 50, 50, 1]))


def test_sampler_256_one_to_one_when_positives_abound():
    anchors = _anchors_800()
    grid = np.array(
        [[y, x, y + 128, x + 128] for y in range(100, 600, 60) for x in range(100, 600, 60)],
        np.float32,
    )
    labels, _ = anchor_targets(
        anchors, grid[None], tf.ones([1, len(grid)], tf.int32), tf.constant([[800, 800]]), seed=3
    )
    labels = labels.numpy()[0]
    assert (labels == 1).sum() == 128
    assert (labels == 0).sum() == 128


def test_sampler_pads_with_negatives_when_positives_are_few():
    anchors = _anchors_800()
    labels, _ = anchor_targets(
        anchors,
        tf.constant([[[300.0, 300.0, 428.0, 428.0]]]),
        tf.constant([[1]]),
        tf.constant([[800, 800]]),
    )
    labels = labels.numpy()[0]
    positives = (labels == 1).sum()
    assert 1 <= positives < 128
    assert (labels == 0).sum() == 256 - positives


def test_loss_on_hand_computed_case():
    logits = tf.constant([[[0.0, 2.0], [1.0, 0.0], [5.0, 5.0], [0.0, 0.0]]])
    deltas = tf.constant([[[0.5, 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [2.0, 0, 0, 0]]])
    labels = tf.constant([[1, 0, -1, 1]])
    targets = tf.zeros([1, 4, 4])
    losses = rpn_loss(logits, deltas, labels, targets, num_locations=2, lambda_reg=10.0)
    # Lcls over the 3 sampled anchors: -log softmax.
    cls = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0)) + np.log(2.0)) / 3
    # Lreg over positives only: smoothL1(0.5) = 0.125, smoothL1(2) = 1.5; / Nreg = 2; * 10.
    reg = 10.0 * (0.125 + 1.5) / 2
    np.testing.assert_allclose(losses["rpn_objectness"].numpy(), cls, rtol=1e-5)
    np.testing.assert_allclose(losses["rpn_box"].numpy(), reg, rtol=1e-5)


def test_default_lambda_is_ten():
    import inspect

    assert inspect.signature(rpn_loss).parameters["lambda_reg"].default == 10.0


def test_batched_targets_use_each_images_own_size():
    labels, _ = anchor_targets(
        ANCHORS,
        tf.concat([GT_BOXES, GT_BOXES], 0),
        tf.concat([GT_LABELS, GT_LABELS], 0),
        tf.constant([[100, 100], [50, 50]]),
    )
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, -1, 0, 0, 1, -1, -1])
    # In the 50x50 image the anchor reaching (60, 60) crosses the border.
    assert labels.numpy()[1, 4] == -1


def _conv3x3_same_relu(x, kernel, bias):
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy : dy + h, dx : dx + w] @ kernel[dy, dx]
    return np.maximum(out + bias, 0.0)


def test_head_values_are_conv_relu_then_sibling_1x1_convs_in_row_column_anchor_order():
    rng = np.random.default_rng(0)
    head = RPNHead(num_anchors=2, channels=3)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    head(tf.constant(x))
    params = {}
    for name, layer in (("conv", head.conv), ("obj", head.objectness), ("box", head.deltas)):
        kernel, bias = (rng.normal(size=v.shape).astype(np.float32) for v in layer.weights)
        layer.set_weights([kernel, bias])
        params[name] = kernel, bias
    logits, deltas = head(tf.constant(x))
    hidden = _conv3x3_same_relu(x, *params["conv"])
    objectness = hidden @ params["obj"][0][0, 0] + params["obj"][1]  # [2, 3, 4, 2k]
    boxes = hidden @ params["box"][0][0, 0] + params["box"][1]  # [2, 3, 4, 4k]
    # Anchor a of cell (i, j) is row (i * 4 + j) * 2 + a: channels 2a, 2a + 1 and 4a .. 4a + 3.
    np.testing.assert_allclose(logits.numpy(), objectness.reshape(2, 24, 2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deltas.numpy(), boxes.reshape(2, 24, 4), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.numpy()[1, 2 * 5 + 1], objectness[1, 1, 1, 2:4], rtol=1e-4)
    # On a pyramid's levels the same head runs on each, first level first.
    small = rng.normal(size=(2, 1, 2, 5)).astype(np.float32)
    level_logits, level_deltas = head([tf.constant(x), tf.constant(small)])
    small_logits, small_deltas = head(tf.constant(small))
    np.testing.assert_allclose(
        level_logits.numpy(), np.concatenate([logits.numpy(), small_logits.numpy()], axis=1)
    )
    np.testing.assert_allclose(
        level_deltas.numpy(), np.concatenate([deltas.numpy(), small_deltas.numpy()], axis=1)
    )


def test_head_weights_start_from_n_0_001_with_zero_biases_and_config_round_trips():
    head = RPNHead(num_anchors=3, channels=64)
    head(tf.zeros([1, 2, 2, 64]))
    # 36,864 conv weights: the sample sd is 0.01 within 0.0003 (8 sd of its estimate).
    for layer in (head.conv, head.objectness, head.deltas):
        kernel = layer.kernel.numpy()
        assert abs(kernel.std() - 0.01) < 0.0003 + 0.01 / np.sqrt(kernel.size) * 8
        assert abs(kernel.mean()) < 0.01 / np.sqrt(kernel.size) * 8
        assert not np.any(layer.bias.numpy())
    assert head.conv.activation.__name__ == "relu" and head.conv.padding == "same"
    assert head.objectness.activation.__name__ == "linear"
    names = [layer.name for layer in (head.conv, head.objectness, head.deltas)]
    assert names == ["rpn_conv", "rpn_objectness", "rpn_deltas"]
    # Built first on a pyramid's list of levels: the shared convs take the first level's shape.
    shared = RPNHead(num_anchors=1, channels=4)
    logits, _ = shared([tf.zeros([1, 2, 2, 3]), tf.zeros([1, 1, 1, 3])])
    assert logits.shape == (1, 5, 2) and shared.conv.kernel.shape == (3, 3, 3, 4)
    clone = RPNHead.from_config(head.get_config())
    assert (clone.num_anchors, clone.channels) == (3, 64)
    assert clone.objectness.filters == 6 and clone.deltas.filters == 12


def test_anchor_targets_take_the_thresholds_given():
    # IoUs with gt0: 1, 0.833, 0.69, 0.2; with gt1 0.467 (its best) and 0.35.
    labels, _ = anchor_targets(
        ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE, positive_iou=0.6, negative_iou=0.4
    )
    # 0.69 > 0.6 turns positive; 0.35 < 0.4 turns negative.
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, 1, 0, 0, 1, 0, -1])
    labels, _ = anchor_targets(
        ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE, positive_iou=0.9, negative_iou=0.1
    )
    # 0.833 < 0.9 is ignored, and 0.2 > 0.1 too.
    np.testing.assert_array_equal(labels.numpy()[0], [1, -1, -1, -1, 0, 1, -1, -1])


def test_anchors_touching_the_image_border_are_inside():
    # [0, 0, 10, 10] starts on the top/left border and ends on the bottom/right one of a
    # 10 x 10 image: inside. [0, 0, 10, 10.5] crosses it.
    anchors = tf.constant([[0, 0, 10, 10], [0, 0, 10, 10.5], [0, 8, 10, 10]], tf.float32)
    labels, _ = anchor_targets(anchors, GT_BOXES[:, :1], GT_LABELS[:, :1], tf.constant([[10, 10]]))
    np.testing.assert_array_equal(labels.numpy()[0], [1, -1, 0])
    # Height and width apart: the 10-high, 12-wide image holds [0, 0, 10, 10.5].
    labels, _ = anchor_targets(anchors, GT_BOXES[:, :1], GT_LABELS[:, :1], tf.constant([[10, 12]]))
    np.testing.assert_array_equal(labels.numpy()[0], [1, 1, 0])
    labels, _ = anchor_targets(anchors, GT_BOXES[:, :1], GT_LABELS[:, :1], tf.constant([[12, 10]]))
    np.testing.assert_array_equal(labels.numpy()[0], [1, -1, 0])


def test_sampler_batch_size_and_fraction_and_targets_of_every_positive():
    # 8 anchors labelled [1, 1, -1, 0, 0, 1, -1, -1]: a mini-batch of 4 at 25% positive
    # holds 1 of the 3 positives and 3 of the 2 negatives there are: 1 + 2.
    for seed in range(6):
        labels, targets = anchor_targets(
            ANCHORS,
            GT_BOXES,
            GT_LABELS,
            IMAGE_SHAPE,
            batch_size=4,
            positive_fraction=0.25,
            seed=tf.constant([seed, 0]),
        )
        labels, targets = labels.numpy()[0], targets.numpy()[0]
        assert (labels == 1).sum() == 1 and (labels == 0).sum() == 2
        assert set(np.flatnonzero(labels == 1)) <= {0, 1, 5}
        assert set(np.flatnonzero(labels >= 0)) <= {0, 1, 3, 4, 5}
    # Batch 3 at 50%: int(1.5) = 1 positive, 2 negatives.
    labels, _ = anchor_targets(
        ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE, batch_size=3, positive_fraction=0.5, seed=3
    )
    assert (labels.numpy() == 1).sum() == 1 and (labels.numpy() == 0).sum() == 2
    # Every positive carries the deltas to its own ground truth; the rest carry zeros.
    labels, targets = anchor_targets(ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE)
    expected = box_ops.encode(
        tf.gather(GT_BOXES[0], [0, 0, 1]), tf.gather(ANCHORS, [0, 1, 5])
    ).numpy()
    np.testing.assert_allclose(targets.numpy()[0, [0, 1, 5]], expected, atol=1e-6)
    assert np.any(expected[2]) and not np.any(targets.numpy()[0, [2, 3, 4, 6, 7]])


def test_anchor_targets_label_a_pyramids_levels_together():
    labels, targets = anchor_targets(ANCHORS, GT_BOXES, GT_LABELS, IMAGE_SHAPE)
    split_labels, split_targets = anchor_targets(
        [ANCHORS[:3], ANCHORS[3:]], GT_BOXES, GT_LABELS, IMAGE_SHAPE
    )
    np.testing.assert_array_equal(split_labels, labels)
    np.testing.assert_allclose(split_targets, targets)


def test_loss_averages_images_and_takes_nreg_and_beta():
    logits = tf.constant([[[0.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]])
    deltas = tf.constant([[[0.5, 0, 0, 0], [9, 9, 9, 9]], [[0.2, 0, 0, 0], [9, 9, 9, 9]]])
    labels = tf.constant([[1, 0], [1, -1]])
    targets = tf.zeros([2, 2, 4])
    cls0 = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2
    cls1 = np.log(2.0) / 1
    # Nreg None: Ncls per image (2 and 1); beta 0.25: |0.5| - 0.125 = 0.375, 0.2^2 / 0.5 = 0.08.
    losses = rpn_loss(
        logits, deltas, labels, targets, num_locations=None, lambda_reg=1.0, smooth_l1_beta=0.25
    )
    np.testing.assert_allclose(losses["rpn_objectness"].numpy(), (cls0 + cls1) / 2, rtol=1e-5)
    np.testing.assert_allclose(losses["rpn_box"].numpy(), (0.375 / 2 + 0.08 / 1) / 2, rtol=1e-5)
    # The defaults: beta 1 (0.125 and 0.02), lambda 10, Nreg = the given locations.
    losses = rpn_loss(logits, deltas, labels, targets, num_locations=4)
    np.testing.assert_allclose(losses["rpn_box"].numpy(), 10 * (0.125 + 0.02) / 4 / 2, rtol=1e-5)
    # The box term sees deltas minus targets.
    shifted = rpn_loss(logits, deltas + 0.3, labels, targets + 0.3, num_locations=4)
    np.testing.assert_allclose(shifted["rpn_box"].numpy(), losses["rpn_box"].numpy(), rtol=1e-5)
    # An image with no sampled anchor adds zero, not NaN.
    losses = rpn_loss(logits, deltas, tf.constant([[1, 0], [-1, -1]]), targets, None)
    np.testing.assert_allclose(losses["rpn_objectness"].numpy(), cls0 / 2, rtol=1e-5)
    np.testing.assert_allclose(losses["rpn_box"].numpy(), 10 * 0.125 / 2 / 2, rtol=1e-5)


def test_anchor_sampling_is_a_function_of_the_seed():
    # 9 x 9 ground truths on the 800 x 800 anchors: far more positives and negatives than 128.
    anchors = _anchors_800()
    grid = np.array(
        [[y, x, y + 128, x + 128] for y in range(100, 600, 60) for x in range(100, 600, 60)],
        np.float32,
    )

    def labels(seed):
        sampled, _ = anchor_targets(
            anchors,
            grid[None],
            tf.ones([1, len(grid)], tf.int32),
            tf.constant([[800, 800]]),
            seed=seed,
        )
        return sampled.numpy()[0]

    first = labels(tf.constant([5, 0]))
    np.testing.assert_array_equal(labels(tf.constant([5, 0])), first)
    other = labels(tf.constant([6, 0]))
    assert not np.array_equal(np.flatnonzero(other == 1), np.flatnonzero(first == 1))
    assert not np.array_equal(np.flatnonzero(other == 0), np.flatnonzero(first == 0))
