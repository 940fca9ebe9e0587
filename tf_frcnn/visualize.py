"""Pictures of boxes: detections drawn on images with
``keras.visualization.draw_bounding_boxes``, saved as PNG."""

import os

import keras
import numpy as np
from PIL import Image


def draw_detections(image, boxes, classes, scores, class_names, score_threshold=0.0):
    """Draw detections on an image.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [N, 4] absolute [ymin, xmin, ymax, xmax] pixels of ``image``.
      classes: int [N] 1-based; scores: float [N].
      class_names: names of labels 1..C.

    Returns:
      uint8 [H, W, 3] with boxes, class names and scores drawn.
    """
    keep = np.asarray(scores) >= score_threshold
    mapping = {i + 1: name for i, name in enumerate(class_names)}
    if not keep.any():
        return np.asarray(image, np.uint8)
    drawn = keras.visualization.draw_bounding_boxes(
        np.asarray(image, np.uint8)[None],
        {"boxes": np.asarray(boxes, np.float32)[keep][None],
         "labels": np.asarray(classes, np.int32)[keep][None],
         "confidences": np.asarray(scores, np.float32)[keep][None]},
        bounding_box_format="yxyx", class_mapping=mapping,
        line_thickness=max(1, min(image.shape[:2]) // 200), font_scale=0.4)
    return np.asarray(drawn[0], np.uint8)


def save_png(image, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path
