"""Pascal VOC directories on disk.

Layout: Annotations/{id}.xml, JPEGImages/{id}.jpg, ImageSets/Main/{split}.txt; the image
path is built from the id, never from the XML's <filename>.

Box convention. VOC pixel coordinates are 1-based; like py-faster-rcnn, 1 is subtracted from
all four to get 0-based positions, then divided by the image size: ymin_n = (ymin - 1) / H,
xmin_n = (xmin - 1) / W, and so on, so a box with xmin == xmax has zero width and is dropped.
H and W come from the XML `<size>`, or from the image file when `<size>` is missing or 0; a
`<size>` that disagrees with the file is still used (the annotator's frame), with a warning.
"""

from __future__ import annotations

import os
import pathlib
import xml.etree.ElementTree as ElementTree

import tensorflow as tf

from tf_frcnn.data.records import Annotation, DataError, annotated_dataset, parse_float, path_inside

# fmt: off
VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
# fmt: on


def _split_ids(root: pathlib.Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"VOC split file not found: {split_file}")
    # Classification split files ("aeroplane_train.txt") carry a second column; keep the id.
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split {split!r} lists no images: {split_file}")
    return ids


def _file_of(root: pathlib.Path, folder: str, image_id: str, suffix: str, split: str):
    """root/folder/{image_id}{suffix}; an id leading outside root/folder is a DataError."""
    what = f"VOC id {image_id!r} of split {split!r}"
    return pathlib.Path(path_inside(root / folder, f"{image_id}{suffix}", what))


def _parse_annotation(
    path: pathlib.Path,
) -> tuple[tuple[float, float], list[tuple[str, list[float], bool]]]:
    """((height, width) of <size>, 0 if absent; [(name, [xmin, ymin, xmax, ymax], difficult)])."""
    if not path.is_file():
        raise DataError(f"VOC annotation file not found: {path}")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"cannot parse VOC annotation {path}: {error}") from error

    def number(text):
        return parse_float(text or 0, f"VOC annotation {path}")

    size = (number(root.findtext("size/height")), number(root.findtext("size/width")))
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        corners = [obj.findtext(f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
        if not name or None in corners:
            raise DataError(
                f"VOC annotation {path}: an <object> lacks <name> or <bndbox> coordinates"
            )
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        objects.append((name, [number(value) for value in corners], difficult))
    return size, objects


def discover_voc_classes(root, split: str) -> list[str]:
    """Sorted class names that occur in the annotations of `split`.

    Use it for VOC-layout datasets whose classes are not the 20 VOC ones; the label of
    `names[i]` in `voc_dataset(root, split, class_names=names)` is then i + 1.
    """
    root = pathlib.Path(root)
    names = set()
    for image_id in _split_ids(root, split):
        _, objects = _parse_annotation(_file_of(root, "Annotations", image_id, ".xml", split))
        names.update(name for name, _, _ in objects)
    return sorted(names)


def voc_dataset(root, split: str, class_names=None, strict: bool = False) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of a Pascal VOC directory.

    Args:
      root: directory holding Annotations/, JPEGImages/ and ImageSets/Main/ (e.g. VOC2007).
      split: name of a list in ImageSets/Main/, e.g. "trainval" or "test".
      class_names: class names; label i + 1 is class_names[i]. Defaults to the 20 VOC classes.
      strict: decode every image now and raise on the first bad one, instead of skipping
        corrupt or truncated images with a warning.
    Returns:
      records in split-file order; "image_id" is the VOC id, "iscrowd" all False.
    Raises:
      DataError naming the file, class or id: missing split, annotation or image file, an
      unknown class name, an empty split, an id that leads outside `root` (absolute or
      with ".."), or (strict) an unreadable image.
    """
    root = pathlib.Path(root)
    class_names = list(VOC_CLASS_NAMES if class_names is None else class_names)
    label_of = {name: index + 1 for index, name in enumerate(class_names)}
    source = f"voc_dataset({os.fspath(root)!r}, {split!r})"

    entries = []
    for image_id in _split_ids(root, split):
        annotation_path = _file_of(root, "Annotations", image_id, ".xml", split)
        size, objects = _parse_annotation(annotation_path)
        for name, _, _ in objects:
            if name not in label_of:
                raise DataError(
                    f"unknown class {name!r} in {annotation_path}; known classes: {class_names} "
                    "(pass class_names, or see discover_voc_classes)"
                )
        image_path = _file_of(root, "JPEGImages", image_id, ".jpg", split)
        if not image_path.is_file():
            raise DataError(f"VOC image file not found: {image_path} (listed in split {split!r})")
        # 1-based VOC corners to 0-based pixel positions (module docstring).
        boxes = [[y0 - 1, x0 - 1, y1 - 1, x1 - 1] for _, (x0, y0, x1, y1), _ in objects]
        labels = [label_of[name] for name, _, _ in objects]
        flags = {"difficult": [flag for _, _, flag in objects]}
        entries.append(Annotation(image_path, image_id, boxes, labels, flags, size))

    return annotated_dataset(
        entries,
        strict=strict,
        source=source,
        size_mismatch="{count} annotations give a <size> that differs from the image file "
        "(first: {first}); their boxes are normalised by <size>",
    )
