"""The label-error finder on hand-built images: each rule on one box, and planted errors in a set
where the detector sees every true object."""

import numpy as np
import pytest

from tf_frcnn.evaluation.label_errors import (
    DEFAULT_SCORE_THRESHOLD,
    describe_kinds,
    find_label_errors,
)

NAMES = ("ellipse", "rectangle", "triangle", "cross")


def _gt(image_id, boxes, labels, difficult=None):
    return {"image_id": image_id, "boxes": boxes, "labels": labels, "difficult": difficult}


def _dets(image_id, boxes, scores, classes):
    return {"image_id": image_id, "boxes": boxes, "scores": scores, "classes": classes}


def test_each_rule_on_one_box():
    labels = _gt("a", [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [1, 2, 3])
    detections = _dets(
        "a",
        [
            [0, 0, 10, 10],  # on box 0, right class: fine
            [20, 20, 30, 30],  # on box 1 (label 2) as class 4: wrong
            [50, 54, 60, 64],  # box 2 shifted by 4 of 10: IoU 60 / 140 = 0.4286: loose
            [80, 80, 90, 90],  # nothing there: missing
            [80, 81, 90, 91],  # the same spot as class 2, lower score: one missing only
            [100, 100, 110, 110],  # nothing there but below the threshold
        ],
        [0.99, 0.95, 0.9, 0.97, 0.85, 0.5],
        [1, 4, 3, 1, 2, 1],
    )
    found = find_label_errors([labels], [detections], 4, NAMES)
    assert found["counts"] == {"missing": 1, "wrong": 1, "loose": 1}
    assert [e["kind"] for e in found["issues"]] == ["missing", "wrong", "loose"]  # by score
    missing, wrong, loose = found["issues"]
    assert missing["box"] == [80, 80, 90, 90] and missing["class_name"] == "ellipse"
    assert wrong["label_index"] == 1 and wrong["label_name"] == "rectangle"
    assert wrong["class_name"] == "cross" and wrong["iou"] == 1.0
    assert loose["label_index"] == 2 and loose["iou"] == pytest.approx(60 / 140, abs=1e-4)


def test_a_correct_detection_clears_the_box():
    """A confident detection of the label's class on the box: the other class's detection there
    and a loose same-class duplicate are model errors, not label errors."""
    labels = _gt("a", [[0, 0, 10, 10]], [1])
    detections = _dets(
        "a", [[0, 0, 10, 10], [0, 0, 10, 10], [0, 4, 10, 14]], [0.9, 0.95, 0.99], [1, 2, 1]
    )
    assert find_label_errors([labels], [detections], 4)["issues"] == []


def test_difficult_boxes_are_not_judged():
    labels = _gt("a", [[0, 0, 10, 10]], [1], difficult=[True])
    detections = _dets("a", [[0, 0, 10, 10], [40, 40, 50, 50]], [0.99, 0.99], [2, 1])
    found = find_label_errors([labels], [detections], 4)
    assert [(e["kind"], e["box"]) for e in found["issues"]] == [("missing", [40, 40, 50, 50])]


def test_threshold_and_description():
    labels = _gt("a", [], [])
    detections = _dets("a", [[0, 0, 10, 10]], [0.79], [1])
    assert find_label_errors([labels], [detections], 4)["counts"]["missing"] == 0
    found = find_label_errors([labels], [detections], 4, score_threshold=0.7)
    assert found["counts"]["missing"] == 1 and found["score_threshold"] == 0.7
    assert "IoU 0.3 to 0.5" in describe_kinds(found)["loose"]


def _planted_set(seed=0, num_images=40):
    """Images of 4 well-separated objects, a detector that finds each at score 0.85-1.0 (plus a
    low-score false positive per image), and labels with 10 objects removed, 10 relabelled and 10
    shifted to IoU ~0.4 with the object. Returns (labels, detections, planted {kind: set of
    (image, box index in the true objects)})."""
    rng = np.random.default_rng(seed)
    cells = np.array([[0, 0], [0, 100], [100, 0], [100, 100]], np.float64)
    truth, detections = [], []
    for i in range(num_images):
        sides = rng.uniform(20, 60, (4, 2))
        corners = cells + rng.uniform(0, 30, (4, 2))
        boxes = np.concatenate([corners, corners + sides], axis=1)
        classes = rng.integers(1, 5, 4)
        truth.append((f"im{i}", boxes, classes))
        scores = rng.uniform(0.85, 1.0, 4)
        noise = [[210, 210, 230, 230]]
        detections.append(
            _dets(f"im{i}", np.concatenate([boxes, noise]), np.append(scores, 0.3), [*classes, 1])
        )
    spots = rng.permutation([(i, j) for i in range(num_images) for j in range(4)])[:30]
    planted = {"missing": set(), "wrong": set(), "loose": set()}
    for kind, spot in zip(np.repeat(list(planted), 10), spots):
        planted[kind].add((int(spot[0]), int(spot[1])))
    labels = []
    for i, (image_id, boxes, classes) in enumerate(truth):
        boxes, classes, keep = boxes.copy(), classes.copy(), np.ones(4, bool)
        for j in range(4):
            if (i, j) in planted["missing"]:
                keep[j] = False
            if (i, j) in planted["wrong"]:
                classes[j] = classes[j] % 4 + 1
            if (i, j) in planted["loose"]:
                width = boxes[j, 3] - boxes[j, 1]
                boxes[j, [1, 3]] += 0.43 * width  # IoU (1 - s) / (1 + s) = 0.399
        labels.append(_gt(image_id, boxes[keep], classes[keep]))
    return labels, detections, planted


def test_planted_errors_are_found():
    labels, detections, planted = _planted_set()
    found = find_label_errors(labels, detections, 4, NAMES)
    assert found["score_threshold"] == DEFAULT_SCORE_THRESHOLD
    flagged = {kind: set() for kind in planted}
    for entry in found["issues"]:
        i = int(entry["image_id"][2:])
        j = next(
            j
            for j in range(4)
            if np.allclose(detections[i]["boxes"][j], entry["box"])  # the true object it is on
        )
        flagged[entry["kind"]].add((i, j))
    for kind in planted:
        recall = len(flagged[kind] & planted[kind]) / len(planted[kind])
        precision = len(flagged[kind] & planted[kind]) / max(len(flagged[kind]), 1)
        assert recall >= 0.8, (kind, recall)
        assert precision == 1.0, (kind, precision)
    assert len(found["issues"]) == 30
