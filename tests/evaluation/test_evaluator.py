"""Evaluator accumulation and the padded-batch helpers. Boxes: [ymin, xmin, ymax, xmax]."""

import numpy as np
import pytest

from tf_frcnn.evaluation import (
    Evaluator,
    coco_metrics,
    unpad_detections,
    unpad_groundtruths,
    unpad_proposals,
    voc_metrics,
)

REQUIRED_KEYS = ("AP", "AP50", "AP75", "mAP_voc07", "recall@300")


def random_case(seed, num_images=6, num_classes=3):
    """Ground truth, noisy detections (some right, some jittered, some wrong) and proposals."""
    rng = np.random.default_rng(seed)
    gts, dets, proposals = [], [], []
    for i in range(num_images):
        n = int(rng.integers(1, 5))
        corner = rng.uniform(0, 300, (n, 2))
        size = rng.uniform(20, 150, (n, 2))
        boxes = np.concatenate([corner, corner + size], axis=1)
        labels = rng.integers(1, num_classes + 1, n)
        gts.append(
            {
                "image_id": f"img{i}",
                "boxes": boxes,
                "labels": labels,
                "height": 480,
                "width": 480,
                "difficult": rng.random(n) < 0.2,
            }
        )
        noisy = np.concatenate([boxes + rng.normal(0, 8, boxes.shape), boxes[:1] + 40])
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        dets.append(
            {
                "image_id": f"img{i}",
                "boxes": noisy,
                "scores": rng.random(n + 1),
                "classes": np.concatenate([labels, rng.integers(1, num_classes + 1, 1)]),
            }
        )
        proposals.append({"image_id": f"img{i}", "boxes": np.concatenate([noisy, boxes])})
    return gts, dets, proposals


def test_accumulating_batches_equals_one_call():
    gts, dets, proposals = random_case(seed=0)
    evaluator = Evaluator(num_classes=3, class_names=["a", "b", "c"])
    evaluator.update(gts[:2], dets[:2], proposals[:2])
    # Detections may arrive in a later batch than their ground truth.
    evaluator.update(gts[2:], dets[2:5], proposals[2:])
    evaluator.update([], dets[5:], [])
    metrics = evaluator.result()

    coco = coco_metrics(gts, dets, 3)
    voc = voc_metrics(gts, dets, 3)
    for key in REQUIRED_KEYS:
        assert key in metrics
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["AP"] == pytest.approx(coco["AP"])
    assert metrics["mAP_voc07"] == pytest.approx(voc["mAP_voc07"])
    assert metrics["num_images"] == 6
    assert metrics["per_class"][2]["name"] == "b"
    assert set(metrics["per_class"][1]) == {"name", "num_gt", "AP", "AP50", "AP_voc07", "AP_voc"}
    np.testing.assert_allclose(evaluator.voc_result()["precision"][1], voc["precision"][1])


def test_without_proposals_there_is_no_recall():
    gts, dets, _ = random_case(seed=1)
    evaluator = Evaluator(num_classes=3)
    evaluator.update(gts, dets)
    assert not any(key.startswith("recall@") for key in evaluator.result())
    with pytest.raises(ValueError, match="every batch or in none"):
        evaluator.update([], [], [])


def test_rejects_repeated_and_unknown_images():
    gts, dets, _ = random_case(seed=2)
    evaluator = Evaluator(num_classes=3)
    evaluator.update(gts[:3], dets[:3])
    with pytest.raises(ValueError, match="given twice"):
        evaluator.update(gts[2:], dets[2:])
    with pytest.raises(ValueError, match="no ground truth"):
        evaluator.update([], dets[4:])
    evaluator.reset()
    assert evaluator.num_images == 0


def test_unpad_groundtruths_drops_padding():
    batch = {
        "image_id": np.asarray([b"a", b"b"]),
        "boxes": np.asarray(
            [
                [[10, 40, 50, 120], [0, 0, 100, 200], [0, 0, 0, 0]],
                [[100, 200, 200, 400], [0, 0, 0, 0], [0, 0, 0, 0]],
            ],
            np.float32,
        ),
        "labels": np.asarray([[2, 1, 0], [3, 0, 0]], np.int32),
        "difficult": np.asarray([[False, True, False], [False, False, False]]),
        "height": np.asarray([100, 200]),
        "width": np.asarray([200, 400]),
    }
    records = unpad_groundtruths(batch)
    assert [r["image_id"] for r in records] == ["a", "b"]
    np.testing.assert_allclose(records[0]["boxes"], [[10, 40, 50, 120], [0, 0, 100, 200]])
    np.testing.assert_array_equal(records[0]["labels"], [2, 1])
    np.testing.assert_array_equal(records[0]["difficult"], [False, True])
    np.testing.assert_allclose(records[1]["boxes"], [[100, 200, 200, 400]])
    assert records[1]["height"] == 200


def test_unpad_detections_and_proposals_keep_the_first_n():
    boxes = np.asarray([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]] * 2, np.float32)
    scores = np.asarray([[0.9, 0.0], [0.8, 0.7]], np.float32)
    classes = np.asarray([[1, 0], [2, 1]], np.int32)
    records = unpad_detections(boxes * 10, scores, classes, [1, 2], ["a", "b"])
    np.testing.assert_allclose(records[0]["boxes"], [[0, 0, 5, 5]])
    np.testing.assert_array_equal(records[1]["classes"], [2, 1])
    np.testing.assert_allclose(records[1]["scores"], [0.8, 0.7], rtol=1e-6)

    proposals = unpad_proposals(boxes * 100, [2, 0], ["a", "b"])
    assert proposals[0]["boxes"].shape == (2, 4) and proposals[1]["boxes"].shape == (0, 4)
