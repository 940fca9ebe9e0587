"""The optional "pretrain" stage: dense cell classification of a from-scratch backbone."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.config import ConfigError, FPNConfig, StageConfig, config_from_dict
from tf_frcnn.model import build_model
from tf_frcnn.training import Trainer
from tf_frcnn.training.pretrain import BackbonePretrainer, cell_labels


def test_cell_labels_smallest_box_wins_and_padding_is_ignored():
    # Cell centres at 8, 24, 40, 56, 72 px (stride 16); box 2 lies inside box 1.
    boxes = tf.constant([[[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 48.0, 48.0], [0, 0, 0, 0]]])
    labels = tf.constant([[1, 2, 0]])
    target = cell_labels(boxes, labels, (5, 5), 16, image_shape=tf.constant([[64, 48]]))
    expected = [
        [1, 1, 1, -1, -1],
        [1, 2, 2, -1, -1],
        [1, 2, 2, -1, -1],
        [1, 1, 1, -1, -1],
        [-1, -1, -1, -1, -1],
    ]
    np.testing.assert_array_equal(target.numpy()[0], expected)


def test_cell_labels_background_only_image():
    target = cell_labels(tf.zeros([1, 2, 4]), tf.zeros([1, 2], tf.int32), (3, 4), 16)
    np.testing.assert_array_equal(target.numpy(), np.zeros([1, 3, 4]))


def test_pretrainer_loss_falls_on_one_batch(smoke_config):
    from tf_frcnn.data import inputs
    from tf_frcnn.training import StageLoop, make_optimizer

    model = build_model(smoke_config)
    pretrainer = BackbonePretrainer(model.features, smoke_config.model.num_classes, 16)
    pretrainer(tf.zeros([1, 64, 64, 3]))
    batch = next(iter(inputs.batches(smoke_config, "train", training=True)))
    smoke_config.train.optimizer = "adam"
    # Without L2: once Adam fits the batch, the L2 term alone drives its
    # normalised steps and the loss wanders back up.
    smoke_config.train.weight_decay = 0.0
    loop = StageLoop(
        pretrainer.compute_losses,
        pretrainer,
        make_optimizer(smoke_config.train, StageConfig(learning_rate=3e-3)),
        tf.distribute.get_strategy(),
    )
    losses = [loop.step(batch)["pretrain_class"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    # The classifier is on top of the detector's own feature model.
    assert pretrainer.features is model.features


def test_pretrain_on_a_pyramid_classifies_the_cells_of_every_level(smoke_config):
    from tf_frcnn.data import inputs
    from tf_frcnn.training import StageLoop, make_optimizer

    smoke_config.model.fpn = FPNConfig(channels=16)
    smoke_config.train.optimizer = "adam"
    smoke_config.train.weight_decay = 0.0
    model = build_model(smoke_config)
    strides = [level.stride for level in model.anchor_generator.levels]
    assert strides == [4, 8, 16, 32, 64]
    pretrainer = BackbonePretrainer(model.features, smoke_config.model.num_classes, strides)
    logits = pretrainer(tf.zeros([1, 64, 64, 3]))
    # One shared classifier on each level: P2 (16 x 16 cells) ... P6 (1 x 1).
    assert [tuple(level.shape[1:3]) for level in logits] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]
    fpn_before = [np.array(w) for w in model.features.get_layer("fpn").weights]
    batch = next(iter(inputs.batches(smoke_config, "train", training=True)))
    loop = StageLoop(
        pretrainer.compute_losses,
        pretrainer,
        make_optimizer(smoke_config.train, StageConfig(learning_rate=3e-3)),
        tf.distribute.get_strategy(),
    )
    losses = [loop.step(batch)["pretrain_class"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    # The pyramid's layers learn with the backbone (they are shared like it afterwards).
    fpn_after = model.features.get_layer("fpn").weights
    assert all(not np.array_equal(a, np.array(b)) for a, b in zip(fpn_before, fpn_after))


def test_pretrain_stage_makes_the_initial_backbone(smoke_config, tmp_path):
    smoke_config.train.stages["pretrain"] = StageConfig(steps=6, learning_rate=0.01)
    trainer = Trainer(smoke_config, str(tmp_path), progress=False)
    trainer.run()
    with open(tmp_path / "state.json") as handle:
        state = json.load(handle)
    assert state["finished_stages"] == ["pretrain", "rpn1", "detector2", "rpn3", "detector4"]
    # The initial backbone is the pretrained one, not the seeded initialisation.
    keras.utils.set_random_seed(smoke_config.train.seed)  # as Trainer builds it
    fresh = build_model(smoke_config)
    fresh(tf.zeros([1, 64, 64, 3]))
    seeded = [np.array(w) for w in fresh.features.weights]
    fresh.features.load_weights(str(tmp_path / "initial_backbone.weights.h5"))
    pretrained = [np.array(w) for w in fresh.features.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(seeded, pretrained))
    assert os.path.exists(tmp_path / "logs" / "pretrain.losses.jsonl")
    # A resume of the finished run is a no-op that keeps the pretrained backbone.
    Trainer(smoke_config, str(tmp_path), progress=False).run(resume=True)
    fresh.features.load_weights(str(tmp_path / "initial_backbone.weights.h5"))
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(pretrained, fresh.features.weights))


def test_pretrain_stage_name_is_accepted_and_others_are_not():
    config = config_from_dict(
        {
            "train": {
                "schedule": "joint",
                "stages": {"pretrain": {"steps": 10}, "joint": {"steps": 10}},
            }
        }
    )
    assert config.train.stages["pretrain"].steps == 10
    with pytest.raises(ConfigError, match="train.stages.pretraining"):
        config_from_dict({"train": {"stages": {"pretraining": {"steps": 10}}}})
