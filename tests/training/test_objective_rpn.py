"""The RPN loss as Objective wires it: Nreg = h x w locations of the feature map (not h x w x
9 anchors), lambda from the config (rpn.lambda_reg), Ncls = the sampled anchors."""

import keras
import numpy as np
import tensorflow as tf

from tf_frcnn import FasterRCNN, ProposalLayer, sampling
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import build_backbone
from tf_frcnn.config import config_from_dict
from tf_frcnn.rpn import RPNHead, anchor_targets
from tf_frcnn.stages import STAGES
from tf_frcnn.training import Objective


def test_objective_rpn_terms_use_h_times_w_and_the_configs_lambda():
    keras.utils.set_random_seed(0)
    model = FasterRCNN(
        build_backbone("tiny").features,
        num_classes=1,
        anchor_generator=AnchorGenerator(scales=(2, 4, 8)),
        rpn_head=RPNHead(num_anchors=9, channels=16),
        proposal_layer=ProposalLayer(min_size=4.0),
    )
    rng = np.random.default_rng(0)
    batch = {
        "images": tf.constant(rng.uniform(0, 255, (1, 96, 128, 3)), tf.float32),
        "image_shape": tf.constant([[96, 128]]),
        "boxes": tf.constant([[[10.0, 20.0, 60.0, 90.0]]]),
        "labels": tf.constant([[1]]),
    }
    config = config_from_dict({"model": {"num_classes": 1}, "rpn": {"lambda_reg": 3.0}})
    objective = Objective.from_config(config)
    objective.seed = 5
    losses = objective(model, batch, STAGES["rpn1"], step=tf.constant(2, tf.int64))

    # The same terms by hand (numpy), with the objective's seed for the anchor sampling.
    feature_map, logits, deltas, anchors = model.rpn_forward(batch["images"])
    seed = sampling.derive(tf.constant([5, 2]), 0)
    labels, targets = anchor_targets(
        anchors, batch["boxes"], batch["labels"], batch["image_shape"], seed=seed
    )
    labels, targets = labels.numpy()[0], targets.numpy()[0]
    logits, deltas = logits.numpy()[0].astype(np.float64), deltas.numpy()[0].astype(np.float64)
    h, w = feature_map.shape[1:3]
    assert (h, w) == (6, 8) and anchors.shape[0] == h * w * 9
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    sampled = labels >= 0
    cls = -log_p[sampled, labels[sampled]].sum() / sampled.sum()
    x = np.abs(deltas - targets)[labels == 1]
    reg = np.where(x < 1, 0.5 * x**2, x - 0.5).sum()
    assert (labels == 1).sum() >= 1
    np.testing.assert_allclose(float(losses["rpn_objectness"]), cls, rtol=1e-5)
    np.testing.assert_allclose(float(losses["rpn_box"]), 3.0 * reg / (h * w), rtol=1e-5)
