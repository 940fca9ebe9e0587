"""Error analysis on hand-built cases: TIDE types and the AP each costs, the confusion matrix, the
max-F1 thresholds, AP by size. Boxes: absolute [ymin, xmin, ymax, xmax]."""

import math

import numpy as np
import pytest

from tf_frcnn.evaluation import voc_metrics
from tf_frcnn.evaluation.errors import (
    ERROR_TYPES,
    classify_images,
    confusion_matrix,
    error_analysis,
    select_gallery,
)
from tf_frcnn.evaluation.sizes import COCO_BINS, ap_by_size, tercile_bins
from tf_frcnn.evaluation.thresholds import apply_thresholds, max_f1_thresholds, read_thresholds

A = [0, 0, 10, 10]  # class 1, found by a true positive (score 0.8) in every case
B = [0, 50, 10, 60]  # class 1, the object an error is about
C = [50, 0, 60, 10]  # class 2, found by a true positive (score 0.5) in every case
B_LOOSE = [0, 53, 10, 68]  # IoU 70/180 = 0.39 with B: between t_b = 0.1 and t_f = 0.5
A_LOOSE = [0, 3, 10, 18]  # IoU 0.39 with A
FAR = [200, 200, 210, 210]  # overlaps nothing


def scene(extra_boxes, extra_dets):
    """Ground truth A (1), C (2) and `extra_boxes`; detections: TPs on A and C, then `extra_dets`
    as (box, class, score)."""
    boxes = [A, C] + [box for box, _ in extra_boxes]
    labels = [1, 2] + [label for _, label in extra_boxes]
    dets = [(A, 1, 0.8), (C, 2, 0.5)] + list(extra_dets)
    gts = [{"image_id": "img", "boxes": boxes, "labels": labels}]
    detections = [
        {
            "image_id": "img",
            "boxes": [d[0] for d in dets],
            "classes": [d[1] for d in dets],
            "scores": [d[2] for d in dets],
        }
    ]
    return gts, detections


# Each case: the scene, its mAP now and with the error fixed (VOC all-point AP, IoU 0.5).
CASES = {
    # Class 2's curve is FP (0.9), TP: AP 0.5; class 1 finds A of A, B: AP 0.5. Fixed, the
    # detection becomes a class-1 TP on B: both APs are 1.
    "classification": (scene([(B, 1)], [(B, 2, 0.9)]), 0.5, 1.0),
    # Class 1: FP (0.9), TP with 2 objects: AP 0.5 * 0.5 = 0.25; class 2: 1. Fixed: TP on B.
    "localisation": (scene([(B, 1)], [(B_LOOSE, 1, 0.9)]), 0.625, 1.0),
    # A class-2 box loosely on A (class 1): class 2's curve FP, TP: 0.5; class 1: 1. Removed.
    "both": (scene([], [(A_LOOSE, 2, 0.9)]), 0.75, 1.0),
    # Class 1 (A, B): TP 0.8, duplicate on A 0.7, TP on B 0.6: P = 1, 1/2, 2/3 at R = 1/2, 1/2,
    # 1: AP 1/2 + 1/2 * 2/3 = 5/6; mean with class 2's 1: 11/12. Removed: 1.
    "duplicate": (scene([(B, 1)], [(A, 1, 0.7), (B, 1, 0.6)]), 11 / 12, 1.0),
    # Class 1: FP (0.9), TP: AP 0.5; class 2: 1. Removed.
    "background": (scene([], [(FAR, 1, 0.9)]), 0.75, 1.0),
    # B is never detected: class 1 AP 0.5. Fixed by counting one positive fewer: 1.
    "missed": (scene([(B, 1)], []), 0.75, 1.0),
}


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_each_error_type_and_its_ap_gain(kind):
    (gts, dets), ap_now, ap_fixed = CASES[kind]
    result = error_analysis(classify_images(gts, dets, 2), num_classes=2)
    assert result["counts"] == {other: int(other == kind) for other in ERROR_TYPES}
    assert result["AP50"] == pytest.approx(ap_now)
    assert result["AP50"] == pytest.approx(voc_metrics(gts, dets, 2)["mAP_voc"])
    expected = {other: (ap_fixed - ap_now if other == kind else 0.0) for other in ERROR_TYPES}
    assert result["delta_AP50"] == pytest.approx(expected)
    # A false positive counts in its detected class, a missed object in its own.
    counted_in = 2 if kind in ("classification", "both") else 1
    assert result["per_class"][counted_in]["counts"][kind] == 1


def test_one_fix_per_object_and_all_missed_class():
    """Two loose class-1 boxes on B: both are localisation errors, only the higher-scoring one
    becomes a TP when fixed, the other is removed. Class 1 curve now: FP .9, FP .85, TP .8 with
    2 objects: AP 1/3 * 1/2; fixed: TP, TP: 1. Class 3's only object is missed: AP 0, and 1
    once fixed (no positive left)."""
    gts, dets = scene([(B, 1), (FAR, 3)], [(B_LOOSE, 1, 0.9), ([0, 54, 10, 66], 1, 0.85)])
    result = error_analysis(classify_images(gts, dets, 3), num_classes=3)
    assert result["counts"]["localisation"] == 2 and result["counts"]["missed"] == 1
    now = (1 / 6 + 1 + 0) / 3
    assert result["AP50"] == pytest.approx(now)
    assert result["delta_AP50"]["localisation"] == pytest.approx((1 + 1 + 0) / 3 - now)
    assert result["delta_AP50"]["missed"] == pytest.approx((1 / 6 + 1 + 1) / 3 - now)
    assert result["per_class"][3]["delta_AP50"]["missed"] == pytest.approx(1.0)


def test_difficult_boxes_are_neither_found_nor_missed():
    gts = [{"image_id": "img", "boxes": [A, B], "labels": [1, 1], "difficult": [False, True]}]
    dets = [
        {"image_id": "img", "boxes": [A, B, FAR], "classes": [1, 1, 1], "scores": [0.9, 0.8, 0.7]}
    ]
    (image,) = classify_images(gts, dets, 1)
    assert image["detection_status"].tolist() == [0, 1, 5]  # TP, ignored, background
    assert image["groundtruth_status"].tolist() == [0, 1]  # found, ignored


def test_ap_now_equals_voc_map_on_random_scenes():
    rng = np.random.default_rng(3)
    gts, dets = [], []
    for i in range(12):
        n, k = rng.integers(0, 6), rng.integers(0, 12)
        corners = rng.uniform(0, 80, (n, 2))
        gts.append(
            {
                "image_id": str(i),
                "labels": rng.integers(1, 4, n),
                "boxes": np.hstack([corners, corners + rng.uniform(5, 30, (n, 2))]),
                "difficult": rng.random(n) < 0.15,
            }
        )
        jitter = rng.uniform(0, 80, (k, 2))
        dets.append(
            {
                "image_id": str(i),
                "classes": rng.integers(1, 4, k),
                "scores": rng.random(k).round(1),
                "boxes": np.hstack([jitter, jitter + rng.uniform(5, 30, (k, 2))]),
            }
        )
        if n and k:
            dets[-1]["boxes"][: min(n, k)] = gts[-1]["boxes"][: min(n, k)] + rng.normal(
                0, 2, (min(n, k), 4)
            ).clip(-1, 1)
    result = error_analysis(classify_images(gts, dets, 3), 3)
    assert result["AP50"] == pytest.approx(voc_metrics(gts, dets, 3)["mAP_voc"])
    assert all(gain >= -1e-12 for gain in result["delta_AP50"].values())
    assert sum(result["counts"].values()) > 10


def test_confusion_matrix_with_background():
    """a (1) found as 1, b (2) found as 1, d (2) missed, a background class-2 box, a box on a
    difficult object (not counted), and a second class-1 box on a (unmatched: background)."""
    a, b, d, hard = [0, 0, 10, 10], [0, 20, 10, 30], [0, 40, 10, 50], [0, 60, 10, 70]
    gts = [
        {
            "image_id": "1",
            "boxes": [a, b, d, hard],
            "labels": [1, 2, 2, 1],
            "difficult": [False, False, False, True],
        },
        {"image_id": "2", "boxes": [], "labels": []},
    ]
    dets = [
        {
            "image_id": "1",
            "boxes": [a, [0, 1, 10, 11], b, hard, FAR],
            "classes": [1, 1, 1, 2, 2],
            "scores": [0.9, 0.8, 0.7, 0.6, 0.5],
        },
        {"image_id": "2", "boxes": [FAR], "classes": [1], "scores": [0.9]},
    ]
    matrix = confusion_matrix(gts, dets, num_classes=2)
    assert matrix.tolist() == [
        [1, 0, 0],  # true 1: detected as 1
        [1, 0, 1],  # true 2: detected as 1 once, missed once
        [2, 1, 0],
    ]  # background: two class-1 and one class-2 boxes


def test_max_f1_threshold_on_a_known_curve(tmp_path):
    """TP, FP, TP, TP, FP, FP over 5 objects: F1 = 1/3, 2/7, 1/2, 2/3, 3/5, 6/11; the best cut is
    after the 4th detection (score 0.6): P 0.75, R 0.6. With the 4th and 5th tied at 0.6 the cut
    must keep both: F1 3/5 there beats 1/2 before them."""
    five = [[0, 20 * i, 10, 20 * i + 10] for i in range(5)]
    far = [[1000 + 20 * i, 1000, 1010 + 20 * i, 1010] for i in range(3)]
    boxes = [five[0], far[0], five[1], five[2], far[1], far[2]]
    gts = [{"image_id": "img", "boxes": five, "labels": [1] * 5}]

    def thresholds(scores):
        dets = [{"image_id": "img", "boxes": boxes, "scores": scores, "classes": [1] * 6}]
        return max_f1_thresholds(voc_metrics(gts, dets, 2))

    found = thresholds([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert found[1] == pytest.approx(
        {"threshold": 0.6, "precision": 0.75, "recall": 0.6, "f1": 2 / 3}
    )
    assert all(math.isnan(value) for value in found[2].values())  # no ground truth
    tied = thresholds([0.9, 0.8, 0.7, 0.6, 0.6, 0.4])
    assert tied[1] == pytest.approx({"threshold": 0.6, "precision": 0.6, "recall": 0.6, "f1": 0.6})

    kept = apply_thresholds(
        [{"image_id": "x", "boxes": [A, B, C], "scores": [0.7, 0.5, 0.3], "classes": [1, 1, 2]}],
        {1: 0.6, 2: None},
        default=0.2,
    )
    assert kept[0]["scores"].tolist() == [0.7, 0.3]

    path = tmp_path / "metrics.json"
    path.write_text(
        '{"thresholds": {"1": {"name": "cat", "threshold": 0.6}, '
        '"2": {"name": "dog", "threshold": null}}}'
    )
    assert read_thresholds(path, ["cat", "dog"]) == {1: 0.6, 2: None}
    with pytest.raises(ValueError, match="metrics.json.*classes"):
        read_thresholds(path, ["cat", "owl"])
    (tmp_path / "plain.json").write_text('{"AP": 0.5}')
    with pytest.raises(ValueError, match="plain.json has no 'thresholds'"):
        read_thresholds(tmp_path / "plain.json", ["cat", "dog"])


def test_size_terciles_and_ap_by_size():
    """Sides 2, 2, 4, 4, 8, 8: areas 4, 4, 16, 16, 64, 64, terciles (linear quantiles) at 12 and
    32. The two small ones and the two large ones are found; a 10 x 10 false positive (area 100)
    scores highest: it counts only in the upper third (FP, TP, TP of 2: AP 2/3)."""
    sides = [2, 2, 4, 4, 8, 8]
    boxes = [[0, 20 * i, s, 20 * i + s] for i, s in enumerate(sides)]
    gts = [{"image_id": "img", "boxes": boxes, "labels": [1] * 6}]
    found = [boxes[0], boxes[1], boxes[4], boxes[5]]
    dets = [
        {
            "image_id": "img",
            "boxes": [[300, 300, 310, 310]] + found,
            "scores": [0.9, 0.8, 0.7, 0.6, 0.5],
            "classes": [1] * 5,
        }
    ]
    bins = tercile_bins(gts)
    assert [edge for _, low, high in bins for edge in (low, high)] == pytest.approx(
        [0, 12, 12, 32, 32, math.inf]
    )
    result = ap_by_size(gts, dets, 1, bins)
    assert [r["num_gt"] for r in result] == [2, 2, 2]
    assert [r["AP50"] for r in result] == pytest.approx([1.0, 0.0, 2 / 3])
    coco = ap_by_size(gts, dets, 1, COCO_BINS)
    assert coco[0]["num_gt"] == 6 and coco[0]["AP50"] == pytest.approx(4 / 6 * 0.8)
    assert math.isnan(coco[1]["AP50"]) and coco[1]["num_gt"] == 0


def test_gallery_takes_the_worst_and_the_best():
    gts = [{"image_id": str(i), "boxes": [A, C], "labels": [1, 2]} for i in range(4)]
    dets = [
        {"image_id": "0", "boxes": [A, C], "classes": [1, 2], "scores": [0.9, 0.9]},
        {"image_id": "1", "boxes": [FAR, FAR], "classes": [1, 1], "scores": [0.9, 0.8]},
        {"image_id": "2", "boxes": [A], "classes": [1], "scores": [0.9]},
    ]
    worst, best = select_gallery(classify_images(gts, dets, 2), worst=2, best=1)
    assert worst == ["1", "3"]  # 2 FPs + 2 missed; then 2 missed
    assert best == ["0"]
