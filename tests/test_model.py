import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import FasterRCNN, ProposalLayer
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import build_backbone
from tf_frcnn.config import config_from_dict
from tf_frcnn.model import build_model
from tf_frcnn.rpn import RPNHead
from tf_frcnn.stages import STAGES, get_stage
from tf_frcnn.training import Objective, StageModel, set_trainable

DETECTION_KEYS = {
    "detection_boxes": (2, 100, 4),
    "detection_scores": (2, 100),
    "detection_classes": (2, 100),
    "num_detections": (2,),
}


@pytest.mark.parametrize("backbone", ["tiny", "mobilenet", "resnet50", "vgg16"])
def test_forward_on_2x320x480_gives_padded_detections(backbone):
    config = config_from_dict(
        {
            "model": {"backbone": backbone, "num_classes": 4, "rpn_channels": 64},
            "rpn": {"test_pre_nms": 600, "test_post_nms": 32},
        }
    )
    model = build_model(config)
    images = tf.random.uniform([2, 320, 480, 3], maxval=255.0, seed=1)
    out = model({"images": images})
    for key, shape in DETECTION_KEYS.items():
        assert tuple(out[key].shape) == shape, key
    assert out["detection_classes"].dtype == tf.int32
    assert out["num_detections"].dtype == tf.int32
    assert out["proposals"].shape == (2, 32, 4)
    boxes = out["detection_boxes"].numpy()
    assert boxes.min() >= 0.0 and boxes[..., 2].max() <= 320 and boxes[..., 3].max() <= 480
    classes = out["detection_classes"].numpy()
    assert classes.min() >= 0 and classes.max() <= 4


def test_stage_trainability():
    config = config_from_dict({"model": {"backbone": "tiny", "num_classes": 2, "rpn_channels": 16}})
    model = build_model(config)
    model({"images": tf.zeros([1, 64, 64, 3])})
    n_backbone = len(model.features.trainable_weights)
    n_rpn = len(model.rpn_head.weights)
    n_det = len(model.detector_head.weights)
    expected = {
        "rpn1": n_backbone + n_rpn,
        "detector2": n_backbone + n_det,
        "rpn3": n_rpn,
        "detector4": n_det,
        "joint": n_backbone + n_rpn + n_det,
    }
    assert set(STAGES) == set(expected)
    for name, stage in STAGES.items():
        set_trainable(model, stage)
        assert len(model.trainable_weights) == expected[name], name
    with pytest.raises(ValueError, match="unknown stage"):
        get_stage("bogus")


def _one_object_scene(size=192):
    """A textured background with one red square: image, box, label."""
    rng = np.random.default_rng(0)
    image = rng.uniform(60, 120, size=(size, size, 3)).astype(np.float32)
    box = [48.0, 80.0, 112.0, 144.0]
    image[48:112, 80:144] = [220.0, 30.0, 30.0]
    return image, box


def test_tiny_model_overfits_one_image(op_determinism):
    keras.utils.set_random_seed(0)
    image, box = _one_object_scene()
    batch = {
        "images": tf.constant(image[None]),
        "image_shape": tf.constant([[192, 192]]),
        "boxes": tf.constant([[box, [0, 0, 0, 0]]], tf.float32),
        "labels": tf.constant([[1, 0]]),
    }
    model = FasterRCNN(
        build_backbone("tiny").features,
        num_classes=2,
        anchor_generator=AnchorGenerator(scales=(2, 4, 8)),
        rpn_head=RPNHead(num_anchors=9, channels=64),
        proposal_layer=ProposalLayer(
            train_pre_nms=600, train_post_nms=100, test_pre_nms=300, test_post_nms=20, min_size=4.0
        ),
    )
    objective = Objective(roi_sampler_args={"num_rois": 32}, seed=0)
    fitted = StageModel(model, "joint", objective)
    fitted.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = float(objective(model, batch, STAGES["joint"])["loss"])
    # Seeded and under op determinism, so every run on a machine trains the same weights: at
    # 150 steps without determinism (crop_and_resize's CPU gradient sums across threads in no
    # fixed order) one CI run ended just above the bar (0.248 against 0.239).
    with op_determinism():
        fitted.fit(tf.data.Dataset.from_tensors(batch).repeat(250), epochs=1, verbose=0)
    after = float(objective(model, batch, STAGES["joint"])["loss"])
    assert after < before / 10, (before, after)

    out = model({"images": batch["images"], "image_shape": batch["image_shape"]})
    assert int(out["num_detections"][0]) >= 1
    assert int(out["detection_classes"][0, 0]) == 1
    assert float(out["detection_scores"][0, 0]) > 0.5
    best = tf.constant([out["detection_boxes"][0, 0].numpy()])
    from tf_frcnn.boxes import iou

    assert float(iou(best, tf.constant([box]))[0, 0]) > 0.7
