"""Pictures of boxes: detections drawn on images with
``keras.visualization.draw_bounding_boxes``, saved as PNG. Small images are drawn enlarged
(short side >= 512 px by default) with lines and text sized to the picture, so labels stay
legible."""

import os

import keras
import numpy as np
from PIL import Image

from tf_frcnn.boxes import to_absolute
from tf_frcnn.evaluation.thresholds import keep_mask

MIN_SIDE = 512

# Colours (RGB) of the error report's drawings: detections by their status, ground truth by its.
STATUS_COLOURS = {
    "true_positive": (40, 210, 70),
    "classification": (255, 140, 0),
    "localisation": (255, 225, 0),
    "both": (190, 100, 255),
    "duplicate": (0, 200, 255),
    "background": (255, 40, 40),
    "missed": (255, 0, 200),
    "groundtruth": (255, 255, 255),
    "ignored": (150, 150, 150),
}
# Short tags after the class name of a detection drawn in an error colour.
STATUS_TAGS = {
    "classification": "cls",
    "localisation": "loc",
    "both": "cls+loc",
    "duplicate": "dup",
    "background": "bkg",
}


def display_scale(height, width, min_side=MIN_SIDE, max_side=None):
    """The factor an image of ``height`` x ``width`` is drawn at: enlarged until its short side
    reaches ``min_side`` (never shrunk for that), then shrunk if its long side passes
    ``max_side`` (when given)."""
    scale = max(1.0, min_side / max(min(height, width), 1))
    if max_side and max(height, width) * scale > max_side:
        scale = max_side / max(height, width)
    return scale


def enlarge(image, scale):
    """uint8 [H, W, 3] resized by ``scale`` (Lanczos); the image itself at scale 1."""
    image = np.asarray(image, np.uint8)
    if scale == 1.0:
        return image.copy()
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def _pen(image):
    """Line thickness, font scale and text thickness for a drawing of this size."""
    short = min(image.shape[:2])
    font_scale = max(0.45, short / 900)
    return max(2, round(short / 256)), font_scale, max(1, round(font_scale * 1.8))


def _draw(image, boxes, classes, scores, mapping, colour):
    """Draws boxes [N, 4] absolute [ymin, xmin, ymax, xmax] of ``image`` in one colour, each
    labelled ``mapping[class]`` (and ``score`` when scores are given); returns the image.

    The boxes are Keras' ``draw_bounding_boxes``; the labels are drawn here because Keras writes
    them in the box colour straight onto the picture, unreadable on a busy one: here each sits on
    a black plate, above its box (inside it at the top edge of the picture)."""
    import cv2

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not boxes.shape[0]:
        return image
    line, font_scale, text = _pen(image)
    classes = np.asarray(classes, np.int32).reshape(-1)
    drawn = keras.visualization.draw_bounding_boxes(
        image[None],
        {"boxes": boxes[None], "labels": classes[None]},
        bounding_box_format="yxyx",
        color=colour,
        line_thickness=line,
    )
    drawn = np.ascontiguousarray(drawn[0], np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, (box, label) in enumerate(zip(boxes, classes)):
        if label not in mapping:
            continue
        caption = mapping[label] if scores is None else f"{mapping[label]} {scores[i]:.2f}"
        (width, height), baseline = cv2.getTextSize(caption, font, font_scale, text)
        x = int(np.clip(box[1], 0, max(drawn.shape[1] - width - 4, 0)))
        top = int(box[0]) - height - baseline - 4
        if top < 0:
            top = int(box[0]) + line
        cv2.rectangle(
            drawn, (x, top), (x + width + 4, top + height + baseline + 4), (0, 0, 0), cv2.FILLED
        )
        cv2.putText(
            drawn, caption, (x + 2, top + height + 2), font, font_scale, colour, text, cv2.LINE_AA
        )
    return drawn


def draw_errors(image, groundtruth, detections, class_names, min_side=MIN_SIDE, max_side=1024):
    """Ground truth and detections of one image coloured by what the error analysis made of them
    (``STATUS_COLOURS``): found objects white, missed ones magenta, detections by their type.

    Args:
      image: uint8 [H, W, 3].
      groundtruth: {"boxes": [N, 4] absolute [ymin, xmin, ymax, xmax] of ``image``, "labels" [N],
        "status": [N] of "found", "missed", "covered" or "ignored"}.
      detections: {"boxes": [K, 4], "classes": [K], "scores": [K], "status": [K] of
        "true_positive" or a false-positive type of ``tf_frcnn.evaluation.errors``}.
      class_names: names of labels 1..C.

    Returns:
      uint8 image drawn at ``display_scale(H, W, min_side, max_side)``.
    """
    height, width = np.asarray(image).shape[:2]
    scale = display_scale(height, width, min_side, max_side)
    canvas = enlarge(image, scale)
    names = dict(enumerate(class_names, start=1))
    gt_status = np.asarray(groundtruth["status"])
    gt_boxes = np.asarray(groundtruth["boxes"], np.float32).reshape(-1, 4) * scale
    gt_labels = np.asarray(groundtruth["labels"])
    missed = {label: f"missed {name}" for label, name in names.items()}
    for status, colour, mapping in (
        ("ignored", STATUS_COLOURS["ignored"], {}),
        ("found", STATUS_COLOURS["groundtruth"], {}),
        ("covered", STATUS_COLOURS["groundtruth"], {}),
        ("missed", STATUS_COLOURS["missed"], missed),
    ):
        mine = gt_status == status
        canvas = _draw(canvas, gt_boxes[mine], gt_labels[mine], None, mapping, colour)
    det_status = np.asarray(detections["status"])
    det_boxes = np.asarray(detections["boxes"], np.float32).reshape(-1, 4) * scale
    for status, colour in STATUS_COLOURS.items():
        mine = det_status == status
        if not mine.any():
            continue
        tag = STATUS_TAGS.get(status)
        mapping = {label: f"{name} {tag}" if tag else name for label, name in names.items()}
        classes = np.asarray(detections["classes"])[mine]
        scores = np.asarray(detections["scores"])[mine]
        canvas = _draw(canvas, det_boxes[mine], classes, scores, mapping, colour)
    return canvas


def draw_predictions(predictor, image, class_names, path, thresholds=None, score_threshold=0.5):
    """Run ``predictor`` (``tf_frcnn.export.load_predictor``) on ``image`` (uint8 [H, W, 3]), draw
    the detections that reach their class's threshold in ``thresholds`` ({label: float or None},
    ``score_threshold`` for a class without one) with their class names and scores on the image
    enlarged by ``display_scale``, and save the picture as a PNG at ``path``.

    Returns:
      [(class name, score rounded to 3 places)] of the drawn detections, best first.
    """
    out = predictor(image)
    classes, scores = np.asarray(out["detection_classes"]), np.asarray(out["detection_scores"])
    keep = keep_mask(scores, classes, thresholds or {}, score_threshold)
    classes, scores = classes[keep], scores[keep]
    scale = display_scale(*image.shape[:2])
    drawn_size = np.multiply(image.shape[:2], scale)
    boxes = to_absolute(np.asarray(out["detection_boxes"])[keep], drawn_size)
    names = dict(enumerate(class_names, start=1))
    colour = STATUS_COLOURS["true_positive"]
    drawn = _draw(enlarge(image, scale), boxes, classes, scores, names, colour)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(drawn).save(path)
    return [(class_names[c - 1], round(float(s), 3)) for c, s in zip(classes, scores)]
