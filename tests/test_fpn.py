"""The feature pyramid (issue #21): level shapes, pyramid anchors, the RPN on every level,
per-level proposals with the level-keyed NMS, the pyramid's config and defaults."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.anchors import AnchorGenerator, PyramidAnchorGenerator
from tf_frcnn.backbones import build_backbone
from tf_frcnn.config import ConfigError, FPNConfig, apply_pyramid_defaults, config_from_dict
from tf_frcnn.fpn import FeaturePyramid, pyramid_features
from tf_frcnn.model import build_model
from tf_frcnn.proposals import ProposalLayer
from tf_frcnn.rpn import RPNHead, rpn_loss

SIZES = ((600, 800), (608, 800), (800, 800))


def _ceil(side, level):
    return -(-side // 2**level)


@pytest.fixture(scope="module", params=["tiny", "mobilenet", "vgg16", "resnet50"])
def pyramid(request):
    backbone = build_backbone(request.param, pyramid=True)
    return pyramid_features(backbone, channels=8)


@pytest.mark.parametrize("size", SIZES)
def test_level_shapes_are_the_ceiling_of_the_input_over_the_stride(pyramid, size):
    # 600 px: 150, 75, 38, 19, 10 cells on P2..P6 (75 = odd, 38 != 2 x 19 + 1 cropped).
    outputs = pyramid.compute_output_spec(keras.KerasTensor((1, *size, 3)))
    assert [tuple(o.shape) for o in outputs] == [
        (1, _ceil(size[0], level), _ceil(size[1], level), 8) for level in range(2, 7)
    ]


def test_level_shapes_when_run_on_odd_and_even_sizes():
    features = pyramid_features(
        build_backbone("tiny", pyramid=True, tiny_channels=(4, 4, 4, 4)), channels=4
    )
    for height, width in ((600, 808), (75, 99), (64, 64)):
        outputs = features(np.zeros((1, height, width, 3), np.float32))
        assert [tuple(o.shape) for o in outputs] == [
            (1, _ceil(height, level), _ceil(width, level), 4) for level in range(2, 7)
        ]


def test_backbone_taps_and_a_pyramid_starting_at_level_3():
    assert build_backbone("tiny", pyramid=True).levels == (2, 3, 4, 5)
    two_stages = build_backbone("tiny", pyramid=True, tiny_channels=(8, 16))
    assert two_stages.levels == (3, 4, 5)
    with pytest.raises(ValueError, match="levels 3..5"):
        pyramid_features(two_stages)
    features = pyramid_features(two_stages, min_level=3, max_level=5, channels=4)
    shapes = [o.shape for o in features.compute_output_spec(keras.KerasTensor((1, 64, 96, 3)))]
    assert [tuple(s) for s in shapes] == [(1, 8, 12, 4), (1, 4, 6, 4), (1, 2, 3, 4)]


def test_top_down_path_by_hand():
    # 1x1 laterals of weight 1 and bias 0, 3x3 outputs that pass the centre value through:
    # P_l = C_l + upsample(P_{l+1}) before the output conv, P6 = P5[::2, ::2].
    layer = FeaturePyramid(min_level=3, max_level=6, channels=1)
    c3 = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    c4 = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32).reshape(1, 2, 2, 1)
    c5 = np.array([[100.0]], np.float32).reshape(1, 1, 1, 1)
    images = np.zeros((1, 32, 32, 3), np.float32)
    layer([c3, c4, c5], images)
    centre = np.zeros((3, 3, 1, 1), np.float32)
    centre[1, 1] = 1.0
    for lateral, output in zip(layer.laterals, layer.outputs):
        lateral.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
        output.set_weights([centre, np.zeros(1, np.float32)])
    p3, p4, p5, p6 = (np.asarray(p)[0, :, :, 0] for p in layer([c3, c4, c5], images))
    np.testing.assert_array_equal(p5, [[100.0]])
    np.testing.assert_array_equal(p4, [[110.0, 120.0], [130.0, 140.0]])
    np.testing.assert_array_equal(p3[0], [110.0, 111.0, 122.0, 123.0])
    np.testing.assert_array_equal(p3[3], [142.0, 143.0, 154.0, 155.0])
    np.testing.assert_array_equal(p6, [[100.0]])


def test_separable_option_and_keras_round_trip(tmp_path):
    features = pyramid_features(
        build_backbone("tiny", pyramid=True, tiny_channels=(4, 4, 4, 4)), channels=8, separable=True
    )
    names = {type(layer).__name__ for layer in features.get_layer("fpn").outputs}
    assert names == {"SeparableConv2D"}
    path = str(tmp_path / "features.keras")
    features.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(0).uniform(0, 255, (1, 70, 90, 3)).astype(np.float32)
    for a, b in zip(features(images), loaded(images)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_anchor_counts_per_level_at_800x800():
    maps = [tf.zeros([1, _ceil(800, level), _ceil(800, level), 1]) for level in range(2, 7)]
    anchors = PyramidAnchorGenerator()(maps)
    # 200^2, 100^2, 50^2, 25^2, 13^2 cells x 3 ratios.
    assert [int(a.shape[0]) for a in anchors] == [120000, 30000, 7500, 1875, 507]
    assert sum(int(a.shape[0]) for a in anchors) == 159882
    # Level l is AnchorGenerator(base 2**l, scale 8, stride 2**l): 32 px square on P2 at (2, 2).
    np.testing.assert_allclose(anchors[0][1], [-14.0, -14.0, 18.0, 18.0])
    for level, level_anchors in zip(range(2, 7), anchors):
        single = AnchorGenerator(2**level, (8,), (0.5, 1.0, 2.0), stride=2**level)
        np.testing.assert_array_equal(level_anchors, single(maps[level - 2]))
    side = np.sqrt(np.prod(np.asarray(anchors[4][1, 2:] - anchors[4][1, :2])))
    assert side == pytest.approx(512.0)


def test_one_rpn_head_on_every_level():
    head = RPNHead(num_anchors=3, channels=4)
    maps = [tf.random.normal([2, s, s, 8], seed=s) for s in (8, 4, 2)]
    logits, deltas = head(maps)
    assert logits.shape == (2, 3 * (64 + 16 + 4), 2) and deltas.shape == (2, 252, 4)
    alone, _ = head(maps[1])
    np.testing.assert_allclose(logits[:, 192:240], alone, rtol=1e-6)
    assert len(head.weights) == 6  # shared, not one head per level


def test_rpn_box_loss_normalised_by_the_sampled_anchors():
    labels = tf.constant([[1, 0, 0, -1]])
    targets = tf.zeros([1, 4, 4])
    deltas = tf.constant([[[0.5, 0, 0, 0], [9, 9, 9, 9], [0, 0, 0, 0], [9, 9, 9, 9]]])
    logits = tf.zeros([1, 4, 2])
    # smooth L1 of 0.5 is 0.125 on the one positive; 3 sampled anchors.
    paper = rpn_loss(logits, deltas, labels, targets, num_locations=50)
    assert float(paper["rpn_box"]) == pytest.approx(10 * 0.125 / 50)
    pyramid = rpn_loss(logits, deltas, labels, targets, num_locations=None, lambda_reg=1.0)
    assert float(pyramid["rpn_box"]) == pytest.approx(0.125 / 3)
    # torchvision's smooth L1 (beta 1/9, the pyramid's default): 0.5 - 1/18 on the positive.
    linear = rpn_loss(
        logits, deltas, labels, targets, num_locations=None, lambda_reg=1.0, smooth_l1_beta=1 / 9
    )
    assert float(linear["rpn_box"]) == pytest.approx((0.5 - 1 / 18) / 3)


def _logits(scores):
    p = np.asarray(scores, np.float32)
    return tf.constant(np.stack([np.zeros_like(p), np.log(p / (1 - p))], -1)[np.newaxis])


def test_proposals_top_k_per_level_before_nms():
    # Level 0: four separate boxes scoring 0.9 .. 0.6; level 1: two scoring 0.2 and 0.1.
    level0 = tf.constant(
        [[0, 0, 10, 10], [0, 20, 10, 30], [20, 0, 30, 10], [20, 20, 30, 30]], "float32"
    )
    level1 = tf.constant([[40, 40, 60, 60], [0, 40, 20, 60]], "float32")
    logits = _logits([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    deltas = tf.zeros([1, 6, 4])
    shape = tf.constant([[64, 64]])
    layer = ProposalLayer(test_pre_nms=2, test_post_nms=4, min_size=1e-3)
    proposals, scores, count = layer(logits, deltas, [level0, level1], shape)
    # Two per level: 0.9, 0.8 of level 0 and both of level 1, best first.
    assert int(count[0]) == 4
    np.testing.assert_allclose(scores[0], [0.9, 0.8, 0.2, 0.1], rtol=1e-5)
    np.testing.assert_allclose(proposals[0], tf.concat([level0[:2], level1], 0))
    # One level of all six: the top 2 are level 0's and the others never compete.
    single, _, single_count = layer(logits, deltas, tf.concat([level0, level1], 0), shape)
    assert int(single_count[0]) == 2
    np.testing.assert_allclose(single[0, :2], level0[:2])


def test_cross_level_nms_is_keyed_by_level():
    box = [0.0, 0.0, 30.0, 30.0]
    near = [0.0, 0.0, 30.0, 28.0]  # IoU 0.93 with box
    level0 = tf.constant([box, near])
    level1 = tf.constant([box, [40.0, 40.0, 60.0, 60.0]])
    logits = _logits([0.9, 0.8, 0.7, 0.6])
    layer = ProposalLayer(test_pre_nms=10, test_post_nms=10, nms_iou=0.7, min_size=1e-3)
    proposals, scores, count = layer(
        logits, tf.zeros([1, 4, 4]), [level0, level1], tf.constant([[64, 64]])
    )
    # near is suppressed by box of its level; the same box of level 1 survives.
    assert int(count[0]) == 3
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.7, 0.6], rtol=1e-5)
    np.testing.assert_allclose(proposals[0, :3], [box, box, [40, 40, 60, 60]])


def test_min_size_keeps_a_20_px_proposal():
    anchors = [tf.constant([[10.0, 10.0, 30.0, 30.0]]), tf.constant([[0.0, 0.0, 5.0, 5.0]])]
    config = config_from_dict({"model": {"fpn": {}}})
    layer = ProposalLayer(test_pre_nms=5, test_post_nms=5, min_size=config.rpn.min_size)
    _, _, count = layer(_logits([0.9, 0.8]), tf.zeros([1, 2, 4]), anchors, tf.constant([[64, 64]]))
    assert int(count[0]) == 2
    paper = ProposalLayer(test_pre_nms=5, test_post_nms=5)  # min_size 16 drops the 5 px box
    _, _, count = paper(_logits([0.9, 0.8]), tf.zeros([1, 2, 4]), anchors, tf.constant([[64, 64]]))
    assert int(count[0]) == 1


def test_fpn_config_section():
    assert config_from_dict({}).model.fpn is None
    fpn = config_from_dict({"model": {"fpn": {"channels": 64, "separable": True}}}).model.fpn
    assert (fpn.min_level, fpn.max_level, fpn.channels, fpn.separable) == (2, 6, 64, True)
    assert (fpn.roi_canonical_size, fpn.roi_canonical_level) == (224, 4)
    with pytest.raises(ConfigError, match="model.fpn.chanels"):
        config_from_dict({"model": {"fpn": {"chanels": 64}}})


def test_pyramid_defaults_apply_only_to_keys_the_config_does_not_give():
    config = config_from_dict({"model": {"fpn": {"channels": 64}}})
    assert config.model.anchor_scales == [8.0]
    assert config.model.rpn_channels == 64
    assert (config.rpn.lambda_reg, config.rpn.min_size) == (1.0, 1e-3)
    assert config.rpn.smooth_l1_beta == pytest.approx(1 / 9)
    assert (config.rpn.train_pre_nms, config.rpn.test_pre_nms) == (2000, 1000)
    given = {"model": {"fpn": {}, "anchor_scales": [4, 8], "rpn_channels": 32}}
    config = config_from_dict({**given, "rpn": {"lambda_reg": 2.0}})
    assert (config.model.anchor_scales, config.model.rpn_channels) == ([4, 8], 32)
    assert config.rpn.lambda_reg == 2.0
    # A value the file gives is kept even when it is the paper's (the single-level default).
    paper_values = {"smooth_l1_beta": 1.0, "lambda_reg": 10.0, "min_size": 16.0}
    config = config_from_dict({"model": {"fpn": {}, "rpn_channels": 512}, "rpn": paper_values})
    assert (config.rpn.smooth_l1_beta, config.rpn.lambda_reg, config.rpn.min_size) == (1, 10, 16)
    assert config.model.rpn_channels == 512 and config.rpn.train_pre_nms == 2000
    # Without model.fpn every key keeps the paper's value; code that sets model.fpn itself
    # applies the pyramid's defaults with apply_pyramid_defaults.
    paper = config_from_dict({})
    assert (paper.rpn.smooth_l1_beta, paper.rpn.lambda_reg, paper.model.rpn_channels) == (
        1,
        10,
        512,
    )
    paper.model.fpn = FPNConfig(channels=32)
    apply_pyramid_defaults(paper)
    assert (paper.model.rpn_channels, paper.rpn.lambda_reg) == (32, 1.0)
    # The model dir's config.yaml records the values, so a reload keeps them.
    assert config_from_dict(config.to_dict()).rpn.smooth_l1_beta == 1.0


def test_build_model_checks_the_levels():
    with pytest.raises(ConfigError, match="model.fpn.max_level"):
        build_model(config_from_dict({"model": {"backbone": "tiny", "fpn": {"max_level": 1}}}))
    two_stages = {"backbone": "tiny", "tiny_channels": [8, 8], "fpn": {}}
    with pytest.raises(ConfigError, match="model.fpn.min_level"):
        build_model(config_from_dict({"model": two_stages}))
