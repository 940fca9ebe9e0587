"""VOC AP against hand-computed precision-recall curves.

Boxes: absolute [ymin, xmin, ymax, xmax]."""

import math

import numpy as np
import pytest

from tf_frcnn.evaluation import voc_ap, voc_metrics


def far_box(i):
    """A box overlapping nothing else in these tests."""
    return [1000 + 20 * i, 1000, 1010 + 20 * i, 1010]


# Five objects of class 1 in one image, 10x10 px, apart from each other.
FIVE = [[0, 20 * i, 10, 20 * i + 10] for i in range(5)]


def known_curve_case():
    """Detections in score order: TP, FP, TP, TP, FP, FP; two of the five objects are missed.

    cumulative TP: 1, 1, 2, 3, 3, 3      FP: 0, 1, 1, 1, 2, 3
    recall    = TP / 5:         0.2, 0.2, 0.4,  0.6,  0.6, 0.6
    precision = TP / (TP + FP): 1.0, 0.5, 2/3,  0.75, 0.6, 0.5

    VOC07, best precision at recall >= t: t = 0, 0.1, 0.2 -> 1.0; t = 0.3 .. 0.6 -> 0.75;
    t = 0.7 .. 1.0 -> 0.  AP07 = (3 * 1.0 + 4 * 0.75) / 11 = 6 / 11.
    All-point: envelope 1.0 up to recall 0.2, then 0.75 up to 0.6, then nothing:
    AP = 0.2 * 1.0 + 0.4 * 0.75 = 0.5.
    """
    gts = [{"image_id": "img", "boxes": FIVE, "labels": [1] * 5}]
    boxes = [FIVE[0], far_box(0), FIVE[1], FIVE[2], far_box(1), far_box(2)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    dets = [{"image_id": "img", "boxes": boxes, "scores": scores, "classes": [1] * 6}]
    return gts, dets


KNOWN_RECALL = [0.2, 0.2, 0.4, 0.6, 0.6, 0.6]
KNOWN_PRECISION = [1.0, 0.5, 2 / 3, 0.75, 0.6, 0.5]


def test_voc_ap_of_known_curve():
    assert voc_ap(KNOWN_RECALL, KNOWN_PRECISION, use_07_metric=True) == pytest.approx(6 / 11)
    assert voc_ap(KNOWN_RECALL, KNOWN_PRECISION, use_07_metric=False) == pytest.approx(0.5)


def test_voc07_counts_a_recall_of_exactly_three_tenths():
    # Recall 3/10 reaches t = 0, 0.1, 0.2, 0.3: AP07 = 4/11. Thresholds built as 0.1 * k would
    # put 0.30000000000000004 above it and give 3/11.
    assert voc_ap([3 / 10], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap([3 / 10], [1.0], use_07_metric=False) == pytest.approx(0.3)


def test_voc_ap_of_empty_curve_is_zero():
    assert voc_ap([], [], True) == 0.0
    assert voc_ap([], [], False) == 0.0


def test_voc_metrics_reproduces_known_curve():
    gts, dets = known_curve_case()
    result = voc_metrics(gts, dets, num_classes=1)
    np.testing.assert_allclose(result["recall"][1], KNOWN_RECALL)
    np.testing.assert_allclose(result["precision"][1], KNOWN_PRECISION)
    assert result["per_class_AP_voc07"][1] == pytest.approx(6 / 11)
    assert result["per_class_AP"][1] == pytest.approx(0.5)
    assert result["mAP_voc07"] == pytest.approx(6 / 11)
    assert result["mAP_voc"] == pytest.approx(0.5)
    assert result["num_gt"][1] == 5


def test_perfect_detector_gives_one():
    gts = [
        {"image_id": "a", "boxes": [[10, 10, 50, 60], [100, 20, 180, 90]], "labels": [1, 2]},
        {"image_id": "b", "boxes": [[5, 5, 25, 30]], "labels": [2]},
        {"image_id": "c", "boxes": np.zeros((0, 4)), "labels": []},
    ]
    dets = [
        {
            "image_id": g["image_id"],
            "boxes": g["boxes"],
            "scores": np.linspace(0.9, 0.5, len(g["labels"])),
            "classes": g["labels"],
        }
        for g in gts
    ]
    result = voc_metrics(gts, dets, num_classes=2)
    assert result["mAP_voc07"] == pytest.approx(1.0)
    assert result["mAP_voc"] == pytest.approx(1.0)


def test_duplicate_detections_are_false_positives():
    """Two objects; detections in score order: A, A again, B.

    TP: 1, 0, 1 -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    All-point: 0.5 * 1 + 0.5 * 2/3 = 5/6.  VOC07: t = 0 .. 0.5 -> 1 (6 points), t = 0.6 .. 1 -> 2/3
    (5 points): (6 + 10/3) / 11 = 28/33.
    """
    a, b = [0, 0, 10, 10], [0, 50, 10, 60]
    gts = [{"image_id": "img", "boxes": [a, b], "labels": [1, 1]}]
    dets = [
        {"image_id": "img", "boxes": [a, a, b], "scores": [0.9, 0.8, 0.7], "classes": [1, 1, 1]}
    ]
    result = voc_metrics(gts, dets, num_classes=1)
    np.testing.assert_allclose(result["precision"][1], [1.0, 0.5, 2 / 3])
    assert result["mAP_voc"] == pytest.approx(5 / 6)
    assert result["mAP_voc07"] == pytest.approx(28 / 33)


def test_difficult_objects_are_neither_missed_nor_false_positives():
    normal, difficult = [0, 0, 10, 10], [0, 50, 10, 60]
    gts = [
        {
            "image_id": "img",
            "boxes": [normal, difficult],
            "labels": [1, 1],
            "difficult": [False, True],
        }
    ]
    missed = [{"image_id": "img", "boxes": [normal], "scores": [0.9], "classes": [1]}]
    # The detection on the difficult object scores highest: as a false positive it would halve AP.
    found = [
        {"image_id": "img", "boxes": [difficult, normal], "scores": [0.95, 0.9], "classes": [1, 1]}
    ]
    for dets in (missed, found):
        result = voc_metrics(gts, dets, num_classes=1)
        assert result["num_gt"][1] == 1
        assert result["mAP_voc07"] == pytest.approx(1.0)
        assert result["mAP_voc"] == pytest.approx(1.0)
        np.testing.assert_allclose(result["precision"][1], [1.0])

    not_difficult = [{**gts[0], "difficult": [False, False]}]
    assert voc_metrics(not_difficult, missed, num_classes=1)["mAP_voc"] == pytest.approx(0.5)
    assert voc_metrics(not_difficult, found, num_classes=1)["mAP_voc"] == pytest.approx(1.0)


def test_wrong_class_gives_zero():
    box = [0, 0, 10, 10]
    gts = [{"image_id": "img", "boxes": [box], "labels": [1]}]
    dets = [{"image_id": "img", "boxes": [box], "scores": [0.9], "classes": [2]}]
    result = voc_metrics(gts, dets, num_classes=2)
    assert result["per_class_AP"][1] == 0.0
    assert math.isnan(result["per_class_AP"][2])  # no ground truth: undefined, left out of the mean
    assert result["mAP_voc07"] == 0.0
    assert result["mAP_voc"] == 0.0


def test_iou_threshold_is_inclusive_and_continuous():
    gt = [0, 0, 10, 10]
    half = [0, 0, 10, 5]  # IoU exactly 50 / 100 with continuous coordinates
    gts = [{"image_id": "img", "boxes": [gt], "labels": [1]}]
    dets = [{"image_id": "img", "boxes": [half], "scores": [0.9], "classes": [1]}]
    assert voc_metrics(gts, dets, 1, iou_threshold=0.5)["mAP_voc"] == pytest.approx(1.0)
    assert voc_metrics(gts, dets, 1, iou_threshold=0.51)["mAP_voc"] == 0.0


def test_no_detections_and_no_groundtruth():
    gts = [{"image_id": "img", "boxes": [[0, 0, 10, 10]], "labels": [1]}]
    assert voc_metrics(gts, [], num_classes=1)["mAP_voc07"] == 0.0
    assert math.isnan(voc_metrics([], [], num_classes=1)["mAP_voc"])


def test_rejects_bad_input():
    gts = [{"image_id": "img", "boxes": [[0, 0, 10, 10]], "labels": [1]}]
    with pytest.raises(ValueError, match="num_classes is 1"):
        voc_metrics([{**gts[0], "labels": [2]}], [], num_classes=1)
    with pytest.raises(ValueError, match="1-based"):
        voc_metrics([{**gts[0], "labels": [0]}], [], num_classes=1)
    with pytest.raises(ValueError, match="ymax >= ymin"):
        voc_metrics([{**gts[0], "boxes": [[10, 0, 0, 10]]}], [], num_classes=1)
    with pytest.raises(ValueError, match="no ground truth"):
        voc_metrics(
            gts, [{"image_id": "other", "boxes": [], "scores": [], "classes": []}], num_classes=1
        )
