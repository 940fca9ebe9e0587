"""What ``tf-frcnn predict`` reads and writes besides the drawn pictures: the image files that
files, directories and globs name, the default output directory, and ``predictions.json`` in
COCO's results format."""

import glob
import json
import os

import numpy as np

from tf_frcnn.rundir import atomic_write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
PREDICTIONS_FILE = "predictions.json"
# Like Ultralytics' runs/detect/predict: relative to the current directory.
DEFAULT_ROOT = os.path.join("runs", "predict")


class NoImages(ValueError):
    """A file, directory or glob of the command line names no image."""


def _images_in(directory):
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, name))
    )


def image_paths(arguments):
    """The image files ``arguments`` name, in order, each once: a file as is, a directory's
    images (by extension, not recursive, sorted), a glob's matches (sorted). Raises ``NoImages``
    naming an argument that is none of these or names no image."""
    found = []
    for argument in arguments:
        if os.path.isdir(argument):
            paths = _images_in(argument)
        elif os.path.isfile(argument):
            paths = [argument]
        elif glob.has_magic(argument):
            paths = sorted(p for p in glob.glob(argument) if os.path.isfile(p))
        else:
            raise NoImages(f"image not found: {argument} ({os.path.abspath(argument)})")
        if not paths:
            raise NoImages(f"no image in {argument} ({', '.join(IMAGE_EXTENSIONS)})")
        found += [p for p in paths if p not in found]
    return found


def default_output_dir(model):
    """runs/predict/<model name>: the name of an export's base directory (saved_models/shapes
    for saved_models/shapes, saved_models/shapes/1 and saved_models/shapes/1/model.tflite)."""
    path = os.path.abspath(model)
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if os.path.basename(path).isdigit():
        path = os.path.dirname(path)
    return os.path.join(DEFAULT_ROOT, os.path.basename(path) or "model")


def coco_image_id(path):
    """COCO's convention (as Ultralytics and detectron2 write it): a numeric file name is the
    image id (000000397133.jpg -> 397133), any other name is its stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else stem


def coco_results(path, outputs, keep, image_shape, class_names):
    """COCO results-format rows of one image's detections (``outputs`` of a ``Predictor``,
    boxes normalised [ymin, xmin, ymax, xmax]) where ``keep`` is true: "image_id",
    "category_id" (the model's label, line of labels.txt), "bbox" [x, y, width, height] in
    pixels of the image, "score", plus "category_name" and "file_name"."""
    height, width = image_shape[:2]
    boxes = np.asarray(outputs["detection_boxes"])[keep] * [height, width, height, width]
    labels = np.asarray(outputs["detection_classes"])[keep]
    scores = np.asarray(outputs["detection_scores"])[keep]
    return [
        {
            "image_id": coco_image_id(path),
            "category_id": int(label),
            "bbox": [round(float(v), 2) for v in (xmin, ymin, xmax - xmin, ymax - ymin)],
            "score": round(float(score), 5),
            "category_name": class_names[int(label) - 1],
            "file_name": os.path.basename(path),
        }
        for (ymin, xmin, ymax, xmax), label, score in zip(boxes, labels, scores)
    ]


def write_predictions(directory, rows):
    """``predictions.json`` in ``directory``: the list of COCO results rows, one a line."""
    path = os.path.join(directory, PREDICTIONS_FILE)
    atomic_write_text(path, "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")
    return path
