"""YOLO txt datasets, as Ultralytics and Roboflow export them.

Layout. A split is an images/ directory and a labels/ directory beside it, arranged as:

    ROOT/SPLIT/images/*.jpg   ROOT/SPLIT/labels/*.txt     (Roboflow export: train/ valid/ test/)
    ROOT/images/SPLIT/*.jpg   ROOT/labels/SPLIT/*.txt     (Ultralytics)

The label file of ``images/a/b.jpg`` is ``labels/a/b.txt`` (same relative path and stem).

Box convention. A label row is ``class cx cy w h``: a 0-based class index (label i + 1) and
the box centre and size divided by the image width (cx, w) and height (cy, h). The record box
is [cy - h/2, cx - w/2, cy + h/2, cx + w/2], already normalised.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import tensorflow as tf
import yaml

from tf_frcnn.data.records import Annotation, DataError, DataWarning, annotated_dataset, parse_float

# The image suffixes Pillow reads among those Ultralytics lists; other files are ignored.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
DATA_YAML_NAMES = ("data.yaml", "data.yml")
NAMES_FILES = ("classes.txt", "obj.names")


def _names_from_yaml(path: pathlib.Path) -> list[str]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataError(f"cannot parse {path}: {error}") from error
    names = content.get("names") if isinstance(content, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: 'names' keys {sorted(names)} are not 0..{len(names) - 1}")
        names = [names[index] for index in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path} has no 'names' list or {{index: name}} mapping")
    names = [str(name) for name in names]
    count = content.get("nc")
    if count is not None and count != len(names):
        raise DataError(f"{path}: 'nc' = {count!r} but 'names' lists {len(names)} classes")
    return names


def yolo_class_names(root) -> list[str]:
    """Class names of a YOLO dataset; the name of label i + 1 (YOLO class i) is names[i].

    Read from ROOT/data.yaml or data.yml (``names:`` a list or an {index: name} mapping, ``nc:``
    checked against it), else from ROOT/classes.txt or ROOT/obj.names (one name a line).
    Raises:
      DataError naming the file when it cannot be parsed, or naming the files looked for
      when none exists.
    """
    root = pathlib.Path(root)
    for name in DATA_YAML_NAMES:
        if (root / name).is_file():
            return _names_from_yaml(root / name)
    for name in NAMES_FILES:
        path = root / name
        if path.is_file():
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            except UnicodeDecodeError as error:
                raise DataError(f"cannot read {path}: {error}") from error
            names = [name for name in names if name]
            if not names:
                raise DataError(f"names file {path} lists no class")
            return names
    raise DataError(
        f"no class names for the YOLO dataset {root}: none of "
        f"{', '.join(DATA_YAML_NAMES + NAMES_FILES)} exists (or set model.class_names)"
    )


def _split_dirs(root: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(images dir, labels dir) of `split`, in the Roboflow or the Ultralytics layout."""
    if not split or os.path.isabs(split) or ".." in pathlib.PurePath(split).parts:
        raise DataError(f"YOLO split name {split!r} must be a folder name inside {root}")
    layouts = (
        (root / split / "images", root / split / "labels"),
        (root / "images" / split, root / "labels" / split),
    )
    for images, labels in layouts:
        if images.is_dir():
            if not labels.is_dir():
                raise DataError(f"YOLO labels directory not found: {labels} (beside {images})")
            return images, labels
    raise DataError(
        f"YOLO split {split!r} not found under {root}: neither "
        f"{layouts[0][0]} nor {layouts[1][0]} is a directory"
    )


def _parse_labels(path: pathlib.Path, num_classes: int) -> tuple[list, list]:
    """(boxes [[ymin, xmin, ymax, xmax]] normalised, 1-based labels) of one label file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"cannot read YOLO label file {path}: {error}") from error
    boxes, labels = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise DataError(
                f"{where}: expected 'class cx cy w h' (5 numbers), got {len(fields)} fields "
                "(segmentation polygons are not read)"
            )
        index = parse_float(fields[0], where)
        if not index.is_integer():
            raise DataError(f"{where}: class index {fields[0]!r} is not an integer")
        if not 0 <= index < num_classes:
            raise DataError(
                f"{where}: class index {int(index)} is outside 0..{num_classes - 1} "
                f"({num_classes} class names)"
            )
        cx, cy, w, h = (parse_float(value, where) for value in fields[1:])
        boxes.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
        labels.append(int(index) + 1)
    return boxes, labels


def yolo_dataset(root, split: str, class_names=None, strict: bool = False) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of one split of a YOLO txt dataset.

    Args:
      root: dataset directory (holding data.yaml and the split folders, see the module doc).
      split: split folder name, e.g. "train", "valid" (Roboflow) or "val" (Ultralytics).
      class_names: label i + 1 is class_names[i]; defaults to `yolo_class_names(root)`.
      strict: decode every image now and raise on the first bad one, instead of skipping
        corrupt or truncated images with a warning.
    Returns:
      records in sorted path order; "image_id" is the image's path under images/ without its
      suffix; "difficult" and "iscrowd" are all False.
    Bad input: an empty label file is a background image, and so is an image without one (as
      in Ultralytics; one DataWarning with the count). Boxes are repaired as `BoxAudit` does.
    Raises:
      DataError naming the file (and line): a split or labels directory not found, no
      images in the split, a row that is not five numbers, a class index that is not an
      integer in 0..len(class_names) - 1, a label file whose image is missing (except
      labels/classes.txt, labelImg's names file), two images sharing one label file.
    """
    root = pathlib.Path(root)
    class_names = list(yolo_class_names(root) if class_names is None else class_names)
    images_dir, labels_dir = _split_dirs(root, split)
    source = f"yolo_dataset({os.fspath(root)!r}, {split!r})"

    image_of = {}
    for path in sorted(images_dir.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = path.relative_to(images_dir).with_suffix("").as_posix()
        if stem in image_of:
            raise DataError(
                f"images {image_of[stem]} and {path} share the label file "
                f"{labels_dir / stem}.txt; rename one"
            )
        image_of[stem] = path
    if not image_of:
        raise DataError(f"YOLO split {split!r} has no images in {images_dir}")
    for label_path in sorted(labels_dir.rglob("*.txt")):
        stem = label_path.relative_to(labels_dir).with_suffix("").as_posix()
        # labelImg saves the class names as classes.txt beside the label files.
        if stem not in image_of and stem != "classes":
            raise DataError(
                f"YOLO label file {label_path} has no image {images_dir / stem}.* "
                f"({'/'.join(IMAGE_SUFFIXES)}): the image is missing"
            )

    annotations = []
    unlabelled = []
    for stem, image_path in image_of.items():
        if not image_path.is_file():
            raise DataError(f"YOLO image file not found: {image_path} (a broken link?)")
        label_path = labels_dir / f"{stem}.txt"
        if label_path.is_file():
            boxes, labels = _parse_labels(label_path, len(class_names))
        else:
            boxes, labels = [], []
            unlabelled.append(label_path)
        annotations.append(Annotation(image_path, stem, boxes, labels))
    if unlabelled:
        warnings.warn(
            f"{source}: {len(unlabelled)} images have no label file and are read as "
            f"background (first: {unlabelled[0]})",
            DataWarning,
            stacklevel=2,
        )
    return annotated_dataset(annotations, strict=strict, source=source, normalised=True)
