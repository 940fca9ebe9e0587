"""Fixtures of the export tests: a tiny Faster R-CNN overfitted on one synthetic scene (so the
exports make confident, well-separated detections worth comparing) and its exports, made once
per session."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn import FasterRCNN, ProposalLayer
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import build_backbone
from tf_frcnn.export import export_saved_model, export_tflite
from tf_frcnn.rpn import RPNHead
from tf_frcnn.training import Objective, StageModel

SIZE = 128  # the scene's side, and the exports' min_size
MAX_SIZE = 256
CLASS_NAMES = ("square", "bar")
# The scene's objects: absolute [ymin, xmin, ymax, xmax] in the 128 x 128 layout, 1-based labels.
BOXES = np.array([[16.0, 16.0, 64.0, 64.0], [72.0, 40.0, 112.0, 120.0]], np.float32)
LABELS = np.array([1, 2], np.int32)
COLOURS = ((220, 30, 30), (30, 60, 220))
TRAIN_STEPS = 120


def draw_scene(side=SIZE, width=None, height=None):
    """uint8 [height, width, 3] (both default to side): a noisy background with a red square and
    a blue bar at ``BOXES * side / SIZE``: the scene scaled without distortion, then widened on
    the right or cut / lengthened at the bottom (the objects end 16 px above the scene's
    bottom)."""
    width = side if width is None else width
    height = side if height is None else height
    rng = np.random.default_rng(0)
    image = rng.uniform(60, 120, size=(height, width, 3)).astype(np.uint8)
    for box, colour in zip(BOXES * side / SIZE, COLOURS):
        y0, x0, y1, x1 = np.round(box).astype(int)
        image[y0:y1, x0:x1] = colour
    return image


def scene_truth(side=SIZE, width=None, height=None):
    """The normalised [ymin, xmin, ymax, xmax] boxes of ``draw_scene(side, width, height)``."""
    width = side if width is None else width
    height = side if height is None else height
    return BOXES * side / SIZE / np.array([height, width, height, width], np.float32)


def normalised_iou(box, other):
    """IoU of two [ymin, xmin, ymax, xmax] boxes (any common units)."""
    height = min(box[2], other[2]) - max(box[0], other[0])
    width = min(box[3], other[3]) - max(box[1], other[1])
    inter = max(height, 0.0) * max(width, 0.0)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    return inter / (area(box) + area(other) - inter)


def assert_finds_scene(boxes, classes, scores, truth_boxes=None, min_iou=0.5):
    """Each object of the scene has a detection of its class with score > 0.5 and IoU >=
    ``min_iou`` with its normalised box (``truth_boxes``, default ``scene_truth()``)."""
    truth_boxes = scene_truth() if truth_boxes is None else truth_boxes
    for truth, label in zip(truth_boxes, LABELS):
        matches = [
            normalised_iou(box, truth)
            for box, cls, score in zip(boxes, classes, scores)
            if cls == label and score > 0.5
        ]
        assert matches and max(matches) >= min_iou, (label, boxes[:4], classes[:4], scores[:4])


@pytest.fixture(scope="session")
def kit():
    """The scene's constants and helpers, for the test modules (conftest is not importable
    under --import-mode=importlib)."""
    return types.SimpleNamespace(
        SIZE=SIZE,
        MAX_SIZE=MAX_SIZE,
        CLASS_NAMES=CLASS_NAMES,
        draw_scene=draw_scene,
        scene_truth=scene_truth,
        assert_finds_scene=assert_finds_scene,
    )


@pytest.fixture(scope="session")
def scene():
    return draw_scene()


@pytest.fixture(scope="session")
def trained_model(scene, op_determinism):
    keras.utils.set_random_seed(0)
    batch = {
        "images": tf.constant(scene[None], tf.float32),
        "image_shape": tf.constant([[SIZE, SIZE]]),
        "boxes": tf.constant(BOXES[None]),
        "labels": tf.constant(LABELS[None]),
    }
    model = FasterRCNN(
        build_backbone("tiny").features,
        num_classes=len(CLASS_NAMES),
        anchor_generator=AnchorGenerator(scales=(2, 4, 8)),
        rpn_head=RPNHead(num_anchors=9, channels=64),
        proposal_layer=ProposalLayer(
            train_pre_nms=300, train_post_nms=64, test_pre_nms=200, test_post_nms=32, min_size=4.0
        ),
    )
    model({"images": batch["images"], "image_shape": batch["image_shape"]})
    joint = StageModel(model, "joint", Objective(roi_sampler_args={"num_rois": 32}, seed=0))
    joint.compile(optimizer=keras.optimizers.Adam(1e-3))
    with op_determinism():  # the same weights on every run of this machine
        joint.fit(tf.data.Dataset.from_tensors(batch).repeat(TRAIN_STEPS), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="session")
def saved_model_base(trained_model, tmp_path_factory):
    """``saved_models/NAME`` after one export, with an empty "3" and a stray folder already
    there: the export becomes version 4."""
    base = tmp_path_factory.mktemp("saved_models") / "shapes"
    (base / "3").mkdir(parents=True)
    (base / "notes").mkdir()
    export_saved_model(trained_model, base, CLASS_NAMES, min_size=SIZE, max_size=MAX_SIZE)
    return base


@pytest.fixture(scope="session")
def saved_model_dir(saved_model_base):
    return saved_model_base / "4"


@pytest.fixture(scope="session")
def loaded(saved_model_dir):
    return tf.saved_model.load(str(saved_model_dir))


@pytest.fixture(scope="session")
def tflite_path(trained_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "shapes.tflite"
    return export_tflite(
        trained_model, path, height=SIZE, width=SIZE, min_size=SIZE, max_size=MAX_SIZE
    )
