"""COCO-style detection datasets: one instances JSON and a directory of images.

Box convention. COCO boxes are [x, y, width, height] in continuous 0-based pixel
coordinates; the record box is [y / H, x / W, (y + height) / H, (x + width) / W], with H and
W from the image entry (or from the file when the entry lacks them).

Labels. Category ids are mapped to contiguous labels 1..C in increasing id order (COCO 2017
ids 1..90 with gaps become 1..80); `coco_class_names` gives the names in the same order.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib

import tensorflow as tf

from tf_frcnn.data.records import Annotation, DataError, annotated_dataset, path_inside


def _load(annotation_json) -> dict:
    path = pathlib.Path(annotation_json)
    if not path.is_file():
        raise DataError(f"COCO annotation file not found: {path}")
    try:
        with open(path) as file:
            content = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"cannot parse COCO annotation file {path}: {error}") from error
    for key in ("images", "categories"):
        if not isinstance(content.get(key), list):
            raise DataError(f"COCO annotation file {path} has no {key!r} list")
    return content


def _sorted_categories(content: dict) -> list[dict]:
    return sorted(content["categories"], key=lambda category: category["id"])


def coco_class_names(annotation_json) -> list[str]:
    """Category names in label order: the name of label i + 1 is names[i]."""
    return [category["name"] for category in _sorted_categories(_load(annotation_json))]


def coco_dataset(annotation_json, image_dir, strict: bool = False) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of a COCO instances file.

    Args:
      annotation_json: path of e.g. annotations/instances_val2017.json.
      image_dir: directory the images' `file_name`s are relative to.
      strict: decode every image now and raise on the first bad one, instead of skipping
        corrupt or truncated images with a warning.
    Returns:
      records in the file's image order, images without annotations included; "image_id" is
      the COCO image id ("139"), labels follow `coco_class_names`, "difficult" is all False.
    Raises:
      DataError naming the file, image or category: missing annotation or image file,
      an annotation whose category or image id is not declared or whose bbox is not four
      numbers, no images, a file_name that leads outside `image_dir` (absolute or with
      ".."), or (strict) an unreadable image.
    """
    content = _load(annotation_json)
    image_dir = pathlib.Path(image_dir)
    source = f"coco_dataset({os.fspath(annotation_json)!r})"
    label_of = {
        category["id"]: index + 1 for index, category in enumerate(_sorted_categories(content))
    }
    images = content["images"]
    if not images:
        raise DataError(f"COCO annotation file {annotation_json} lists no images")

    annotations_of = collections.defaultdict(list)
    image_ids = {image["id"] for image in images}
    for annotation in content.get("annotations", []):
        if annotation.get("category_id") not in label_of:
            raise DataError(
                f"unknown category id {annotation.get('category_id')} in annotation "
                f"{annotation.get('id')} of {annotation_json}"
            )
        bbox = annotation.get("bbox")
        numbers = isinstance(bbox, list) and all(isinstance(v, (int, float)) for v in bbox)
        if not (numbers and len(bbox) == 4):
            raise DataError(
                f"annotation {annotation.get('id')} of {annotation_json}: bbox {bbox!r} is "
                "not [x, y, width, height]"
            )
        if annotation.get("image_id") not in image_ids:
            raise DataError(
                f"annotation {annotation.get('id')} of {annotation_json} refers to image id "
                f"{annotation.get('image_id')}, which is not in 'images'"
            )
        annotations_of[annotation["image_id"]].append(annotation)

    entries = []
    for image in images:
        name = image.get("file_name")
        what = f"file_name {name!r} of image id {image['id']}"
        path = pathlib.Path(path_inside(image_dir, name, what))
        if not path.is_file():
            raise DataError(f"COCO image file not found: {path} (image id {image['id']})")
        objects = annotations_of[image["id"]]
        boxes = [[y, x, y + h, x + w] for x, y, w, h in (entry["bbox"] for entry in objects)]
        labels = [label_of[entry["category_id"]] for entry in objects]
        iscrowd = [bool(entry.get("iscrowd", 0)) for entry in objects]
        size = (image.get("height") or 0, image.get("width") or 0)
        entries.append(Annotation(path, image["id"], boxes, labels, {"iscrowd": iscrowd}, size))
    return annotated_dataset(entries, strict=strict, source=source)
