"""Per-image records shared by the metrics: checking, conversion to NumPy, and box IoU.

Every box in this package is absolute pixel [ymin, xmin, ymax, xmax] in the ORIGINAL image, in
continuous coordinates: a box from xmin=10 to xmax=20 is 10 pixels wide (no "+1" as in the VOC
devkit).

Records are plain dicts, one per image; any array-like (lists, NumPy arrays, eager `tf.Tensor`s)
is accepted and converted with `np.asarray`:

- ground truth: {"image_id": str, "boxes": [N, 4], "labels": int [N] (1-based), "difficult":
  bool [N] (optional), "iscrowd": bool [N] (optional), "height": int, "width": int (optional,
  metadata only)}
- detections:   {"image_id": str, "boxes": [K, 4], "scores": [K], "classes": int [K] (1-based)}
- proposals:    {"image_id": str, "boxes": [P, 4] sorted by objectness, descending,
  "scores": [P] (optional; when given, the boxes are sorted by it)}
"""

from __future__ import annotations

import numpy as np


def image_id_to_str(image_id) -> str:
    """Returns an image id as `str`; accepts str, bytes (what `tf.string` tensors hold), numbers."""
    value = np.asarray(image_id)
    if value.ndim != 0:
        raise ValueError(f"image_id must be a scalar, got shape {value.shape}")
    value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _boxes(value, what: str) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape [N, 4], got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{what}: boxes contain NaN or inf")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(
            f"{what}: boxes must be [ymin, xmin, ymax, xmax] with ymax >= ymin and xmax >= xmin"
        )
    return boxes


def _vector(value, length: int, dtype, what: str, default=None) -> np.ndarray:
    if value is None:
        return np.full((length,), default, dtype)
    vector = np.asarray(value).reshape(-1).astype(dtype)
    if vector.shape[0] != length:
        raise ValueError(f"{what} has {vector.shape[0]} entries for {length} boxes")
    return vector


def _labelled_boxes(record: dict, label_key: str, num_classes: int | None, what: str):
    """(image id, float64 boxes [N, 4], int64 1-based ``record[label_key]`` [N], ``what`` naming
    the image) of a record, checked."""
    image_id = image_id_to_str(record["image_id"])
    what = f"{what} of image {image_id!r}"
    boxes = _boxes(record["boxes"], what)
    labels = _vector(record[label_key], boxes.shape[0], np.int64, f"{what}: {label_key}")
    if labels.size and labels.min() < 1:
        raise ValueError(f"{what}: {label_key} must be 1-based class ids (0 is background/padding)")
    if num_classes is not None and labels.size and labels.max() > num_classes:
        raise ValueError(
            f"{what}: {label_key} has class {labels.max()} but num_classes is {num_classes}"
        )
    return image_id, boxes, labels, what


def as_groundtruth(record: dict, num_classes: int | None = None) -> dict:
    """Checks one ground-truth record; returns it as NumPy arrays (float64 boxes, int64 labels)."""
    image_id, boxes, labels, what = _labelled_boxes(record, "labels", num_classes, "ground truth")
    n = boxes.shape[0]
    return {
        "image_id": image_id,
        "boxes": boxes,
        "labels": labels,
        "difficult": _vector(record.get("difficult"), n, bool, f"{what}: difficult", False),
        "iscrowd": _vector(record.get("iscrowd"), n, bool, f"{what}: iscrowd", False),
        "height": int(np.asarray(record.get("height", 0))),
        "width": int(np.asarray(record.get("width", 0))),
    }


def as_detections(record: dict, num_classes: int | None = None) -> dict:
    """Checks one detection record; returns it as NumPy arrays (float64 boxes/scores, int64
    classes)."""
    image_id, boxes, classes, what = _labelled_boxes(record, "classes", num_classes, "detections")
    scores = _vector(record["scores"], boxes.shape[0], np.float64, f"{what}: scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: scores contain NaN or inf")
    return {"image_id": image_id, "boxes": boxes, "scores": scores, "classes": classes}


def as_proposals(record: dict) -> dict:
    """Checks one proposal record; returns {"image_id", "boxes"} with boxes in objectness order."""
    image_id = image_id_to_str(record["image_id"])
    boxes = _boxes(record["boxes"], f"proposals of image {image_id!r}")
    if record.get("scores") is not None:
        scores = _vector(record["scores"], boxes.shape[0], np.float64, "proposal scores")
        boxes = boxes[np.argsort(-scores, kind="stable")]
    return {"image_id": image_id, "boxes": boxes}


def check_unique_ids(groundtruths: list[dict]) -> set[str]:
    """The image ids of `groundtruths`; an id given twice is an error."""
    ids = set()
    for record in groundtruths:
        if record["image_id"] in ids:
            raise ValueError(f"ground truth for image {record['image_id']!r} given twice")
        ids.add(record["image_id"])
    return ids


def index_by_image(records: list[dict], groundtruths: list[dict], what: str) -> dict[str, dict]:
    """Maps image id -> record; every id must be one of the `groundtruths`' images."""
    known_ids = check_unique_ids(groundtruths)
    indexed = {}
    for record in records:
        if record["image_id"] not in known_ids:
            raise ValueError(f"{what} for image {record['image_id']!r}, which has no ground truth")
        if record["image_id"] in indexed:
            raise ValueError(f"{what} for image {record['image_id']!r} given twice")
        indexed[record["image_id"]] = record
    return indexed


def checked_records(groundtruths: list[dict], detections: list[dict], num_classes: int):
    """(checked ground-truth records, {image id: checked detection record})."""
    groundtruths = [as_groundtruth(g, num_classes) for g in groundtruths]
    detections = [as_detections(d, num_classes) for d in detections]
    return groundtruths, index_by_image(detections, groundtruths, "detections")


def concat(parts: list, dtype) -> np.ndarray:
    """`np.concatenate(parts)` as `dtype`; an empty [0] array without parts."""
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def box_areas(boxes) -> np.ndarray:
    """float [N]: areas of boxes [N, 4] [ymin, xmin, ymax, xmax]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of every pair: boxes1 [N, 4], boxes2 [M, 4], absolute [ymin, xmin, ymax, xmax] -> [N, M].

    A NumPy twin of the library's TF IoU so that evaluation runs in float64 without TensorFlow.
    Pairs whose union is empty (two degenerate boxes) get IoU 0.
    """
    boxes1 = np.asarray(boxes1, np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = np.clip(bottom_right - top_left, 0.0, None)
    intersection = size[..., 0] * size[..., 1]
    union = box_areas(boxes1)[:, None] + box_areas(boxes2)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
