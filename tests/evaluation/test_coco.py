"""COCO metrics through pycocotools, on hand-built cases.

Boxes: absolute [ymin, xmin, ymax, xmax]."""

import math

import numpy as np
import pytest

from tf_frcnn.evaluation import coco_metrics, yxyx_to_xywh
from tf_frcnn.evaluation.coco import COCO_METRIC_NAMES

# One small (< 32^2 px), one medium and one large (> 96^2 px) object: every COCO metric is defined.
SMALL, MEDIUM, LARGE = [0, 0, 20, 20], [100, 100, 150, 160], [200, 200, 400, 380]
GROUNDTRUTHS = [
    {"image_id": "a", "boxes": [SMALL, LARGE], "labels": [1, 2], "height": 500, "width": 500},
    {"image_id": "b", "boxes": [MEDIUM], "labels": [2], "height": 500, "width": 500},
]


def test_yxyx_to_xywh():
    np.testing.assert_allclose(yxyx_to_xywh([[10, 20, 50, 80]]), [[20, 10, 60, 40]])


def test_perfect_detector_gives_one():
    dets = [
        {
            "image_id": g["image_id"],
            "boxes": g["boxes"],
            "scores": [0.9] * len(g["labels"]),
            "classes": g["labels"],
        }
        for g in GROUNDTRUTHS
    ]
    metrics = coco_metrics(GROUNDTRUTHS, dets, num_classes=2)
    for name in COCO_METRIC_NAMES:
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["per_class"][1]["AP"] == pytest.approx(1.0)


def test_no_detections_gives_zeros(capsys):
    metrics = coco_metrics(GROUNDTRUTHS, [], num_classes=2)
    for name in COCO_METRIC_NAMES:
        assert metrics[name] == 0.0, name
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed


def test_undefined_metrics_are_nan_and_classes_without_groundtruth_are_skipped():
    gts = [{"image_id": "a", "boxes": [MEDIUM], "labels": [1]}]
    dets = [{"image_id": "a", "boxes": [MEDIUM, SMALL], "scores": [0.9, 0.8], "classes": [1, 3]}]
    metrics = coco_metrics(gts, dets, num_classes=3)
    assert metrics["AP"] == pytest.approx(1.0)  # class 3's false positive has no class to hurt
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APl"])
    assert math.isnan(metrics["per_class"][2]["AP"]) and math.isnan(metrics["per_class"][3]["AP"])
    assert all(math.isnan(v) for k, v in coco_metrics([], [], 3).items() if k != "per_class")


def test_duplicates_and_known_curve():
    """Two objects; detections in score order: A, A again, B (exact copies, so every IoU
    threshold agrees).

    Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. COCO interpolates at 101 recall points 0, 0.01,
    ..., 1: precision 1 at the 51 points up to 0.5, 2/3 at the 50 above:
    AP = (51 + 50 * 2/3) / 101 = 253/303.
    """
    a, b = [0, 0, 40, 40], [0, 50, 40, 90]
    gts = [{"image_id": "img", "boxes": [a, b], "labels": [1, 1]}]
    dets = [
        {"image_id": "img", "boxes": [a, a, b], "scores": [0.9, 0.8, 0.7], "classes": [1, 1, 1]}
    ]
    metrics = coco_metrics(gts, dets, num_classes=1)
    for name in ("AP", "AP50", "AP75"):
        assert metrics[name] == pytest.approx(253 / 303), name
    assert metrics["AR1"] == pytest.approx(0.5)
    assert metrics["AR100"] == pytest.approx(1.0)


def test_wrong_class_gives_zero():
    gts = [{"image_id": "img", "boxes": [MEDIUM], "labels": [1]}]
    dets = [{"image_id": "img", "boxes": [MEDIUM], "scores": [0.9], "classes": [2]}]
    metrics = coco_metrics(gts, dets, num_classes=2)
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0


def test_difficult_and_crowd_objects_are_ignored():
    normal, hard = [0, 0, 40, 40], [0, 50, 40, 90]
    dets = [{"image_id": "img", "boxes": [hard, normal], "scores": [0.95, 0.9], "classes": [1, 1]}]
    missed = [{"image_id": "img", "boxes": [normal], "scores": [0.9], "classes": [1]}]
    for flag in ("difficult", "iscrowd"):
        gts = [{"image_id": "img", "boxes": [normal, hard], "labels": [1, 1], flag: [False, True]}]
        assert coco_metrics(gts, dets, num_classes=1)["AP"] == pytest.approx(1.0), flag
        assert coco_metrics(gts, missed, num_classes=1)["AP"] == pytest.approx(1.0), flag
    plain = [{"image_id": "img", "boxes": [normal, hard], "labels": [1, 1]}]
    assert coco_metrics(plain, missed, num_classes=1)["AP"] == pytest.approx(51 / 101)


def test_accepts_bytes_image_ids_and_images_without_objects():
    gts = [
        {
            "image_id": b"a",
            "boxes": np.asarray([MEDIUM], np.float32),
            "labels": np.asarray([1], np.int32),
        },
        {
            "image_id": b"empty",
            "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros((0,), np.int32),
        },
    ]
    dets = [
        {"image_id": "a", "boxes": [MEDIUM], "scores": [0.9], "classes": [1]},
        {"image_id": "empty", "boxes": [LARGE], "scores": [0.95], "classes": [1]},
    ]
    metrics = coco_metrics(gts, dets, num_classes=1)
    # The false positive on the empty image outranks the true one: precision 1/2 at recall 1.
    assert metrics["AP50"] == pytest.approx(0.5)
