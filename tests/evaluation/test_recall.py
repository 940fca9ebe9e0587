"""RPN recall (the paper's Fig. 4) on hand-built proposals.

Boxes: absolute [ymin, xmin, ymax, xmax]."""

import math

import pytest

from tf_frcnn.evaluation import recall_key, rpn_recall
from tf_frcnn.evaluation.recall import RECALL_PROPOSALS
from tf_frcnn.stages import RPN_METRIC, RPN_RECALL_AT

# Four 10x10 objects in a row and one difficult object.
OBJECTS = [[0, 20 * i, 10, 20 * i + 10] for i in range(4)]
DIFFICULT = [50, 50, 60, 60]
GROUNDTRUTHS = [
    {
        "image_id": "img",
        "boxes": OBJECTS + [DIFFICULT],
        "labels": [1, 1, 2, 2, 1],
        "difficult": [False, False, False, False, True],
    }
]
# In objectness order: object 0 exactly, object 1 at IoU 0.6 (60 / 100 px), a box on nothing,
# object 2 exactly. Object 3 and the difficult one are never covered.
PROPOSALS = [OBJECTS[0], [0, 20, 10, 26], [200, 200, 220, 220], OBJECTS[2]]


def test_recall_key():
    assert recall_key(300, 0.5) == "recall@300"
    assert recall_key(300, 0.7) == "recall@300_iou0.7"


def test_top_n_truncation_and_iou_threshold():
    result = rpn_recall(
        GROUNDTRUTHS, [{"image_id": "img", "boxes": PROPOSALS}], num_proposals=(1, 2, 4)
    )
    assert result == {
        "recall@1": pytest.approx(1 / 4),  # object 0
        "recall@2": pytest.approx(2 / 4),  # objects 0, 1
        "recall@4": pytest.approx(3 / 4),  # objects 0, 1, 2; the difficult object is not counted
        "recall@1_iou0.7": pytest.approx(1 / 4),
        "recall@2_iou0.7": pytest.approx(1 / 4),  # object 1's IoU 0.6 is too low
        "recall@4_iou0.7": pytest.approx(2 / 4),
    }


def test_scores_sort_the_proposals():
    shuffled = [PROPOSALS[3], PROPOSALS[1], PROPOSALS[0], PROPOSALS[2]]
    proposals = [{"image_id": "img", "boxes": shuffled, "scores": [0.1, 0.8, 0.9, 0.5]}]
    result = rpn_recall(GROUNDTRUTHS, proposals, num_proposals=(2,), iou_thresholds=(0.5,))
    assert result == {"recall@2": pytest.approx(0.5)}


def test_recall_is_pooled_over_objects_not_averaged_over_images():
    gts = [
        {"image_id": "one", "boxes": OBJECTS[:1], "labels": [1]},
        {"image_id": "three", "boxes": OBJECTS[1:], "labels": [1, 1, 1]},
    ]
    proposals = [{"image_id": "one", "boxes": OBJECTS[:1]}]  # "three" has no proposals at all
    result = rpn_recall(gts, proposals, num_proposals=(300,), iou_thresholds=(0.5,))
    assert result["recall@300"] == pytest.approx(1 / 4)


def test_no_groundtruth_is_nan():
    gts = [{"image_id": "img", "boxes": [DIFFICULT], "labels": [1], "difficult": [True]}]
    assert math.isnan(rpn_recall(gts, [], num_proposals=(300,))["recall@300"])


def test_the_stages_metric_is_evals_headline_recall():
    assert recall_key(RPN_RECALL_AT, 0.5) == RPN_METRIC
    assert RPN_RECALL_AT in RECALL_PROPOSALS
