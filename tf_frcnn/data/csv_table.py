"""Detection datasets as one CSV table with a row per box (the keras-retinanet format).

Rows. ``path,xmin,ymin,xmax,ymax,class``: the image path relative to the image directory,
the box corners in absolute, continuous 0-based pixels, and the class name. An image with
several objects has several rows (they need not be adjacent); a row whose five box and class
fields are all empty (``path,,,,,``) lists an image without objects.

Header. A first row naming a coordinate column (``xmin``...) is a header: the columns are
then found by name, in any order and beside others (so the TensorFlow object-detection CSV,
``filename,width,height,class,xmin,ymin,xmax,ymax``, reads too): PATH_COLUMNS, COORDINATES,
CLASS_COLUMNS. Without a header the six columns are positional.

Box convention. The record box is [ymin / H, xmin / W, ymax / H, xmax / W], with H and W
read from the image file.
"""

from __future__ import annotations

import collections
import csv
import os
import pathlib

import tensorflow as tf

from tf_frcnn.data.records import Annotation, DataError, annotated_dataset, parse_float, path_inside

COORDINATES = ("xmin", "ymin", "xmax", "ymax")
PATH_COLUMNS = ("path", "filename", "file", "image")
CLASS_COLUMNS = ("class", "label", "name")

# corners: [xmin, ymin, xmax, ymax]; corners and class_name are None for an image without objects.
Row = collections.namedtuple("Row", "line path corners class_name")


def _columns(header: list[str], where: str) -> list[int]:
    """Indices of (path, xmin, ymin, xmax, ymax, class) in a header row."""
    names = [name.strip().lower() for name in header]
    indices = []
    for wanted in (PATH_COLUMNS, *((name,) for name in COORDINATES), CLASS_COLUMNS):
        found = [index for index, name in enumerate(names) if name in wanted]
        if len(found) != 1:
            raise DataError(
                f"{where}: the header {header} needs exactly one column named {' or '.join(wanted)}"
            )
        indices.append(found[0])
    return indices


def _read_rows(csv_path) -> list[Row]:
    path = pathlib.Path(csv_path)
    if not path.is_file():
        raise DataError(f"CSV annotation file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            # line_num after a row is its last physical line (a quoted field may hold newlines).
            table = [(reader.line_num, row) for row in reader]
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"cannot parse CSV file {path}: {error}") from error
    table = [(number, row) for number, row in table if any(field.strip() for field in row)]
    header = bool(table) and any(field.strip().lower() in COORDINATES for field in table[0][1])
    if header:
        number, names = table.pop(0)
        columns = _columns(names, f"{path}:{number}")
    else:
        columns = list(range(6))
    rows = []
    for number, row in table:
        where = f"{path}:{number}"
        if len(row) <= max(columns) or (not header and len(row) != 6):
            raise DataError(
                f"{where}: expected {', '.join(('path', *COORDINATES, 'class'))}, got "
                f"{len(row)} fields"
            )
        image, *box, class_name = (row[index].strip() for index in columns)
        if not any(box) and not class_name:
            rows.append(Row(number, image, None, None))
            continue
        if not all(box) or not class_name:
            raise DataError(
                f"{where}: the box and class fields must all be filled, or all be empty "
                f"(an image without objects), got {row}"
            )
        rows.append(Row(number, image, [parse_float(value, where) for value in box], class_name))
    if not rows:
        raise DataError(f"CSV file {path} lists no images")
    return rows


def _sorted_names(rows: list[Row]) -> list[str]:
    return sorted({row.class_name for row in rows if row.class_name})


def csv_class_names(csv_path) -> list[str]:
    """The distinct class names of the table, sorted: label i + 1 is names[i].

    Raises:
      DataError naming the file (and line) when it is missing, malformed or empty.
    """
    return _sorted_names(_read_rows(csv_path))


def csv_dataset(csv_path, image_dir, class_names=None, strict: bool = False) -> tf.data.Dataset:
    """Records (see `tf_frcnn.data.records`) of a CSV table with one box per row.

    Args:
      csv_path: the table (see the module doc for the columns and the optional header).
      image_dir: directory the table's image paths are relative to.
      class_names: label i + 1 is class_names[i]; defaults to `csv_class_names(csv_path)`.
        Give the training table's names when reading an evaluation table.
      strict: decode every image now and raise on the first bad one, instead of skipping
        corrupt or truncated images with a warning.
    Returns:
      one record per distinct image, in the order of their first row; "image_id" is the path
      as written, normalised ("./a.jpg" is "a.jpg"); "difficult" and "iscrowd" are all False.
    Raises:
      DataError naming the file and line: a missing or empty table, a row that is not six
      fields, a non-numeric coordinate, a partly empty row, a class not in `class_names`,
      a missing image, a path leading outside `image_dir` (absolute or with "..").
    """
    rows = _read_rows(csv_path)
    class_names = list(_sorted_names(rows) if class_names is None else class_names)
    label_of = {name: index + 1 for index, name in enumerate(class_names)}
    image_dir = pathlib.Path(image_dir)
    source = f"csv_dataset({os.fspath(csv_path)!r})"

    objects_of = {}
    for row in rows:
        where = f"{csv_path}:{row.line}"
        image_id = os.path.normpath(row.path) if row.path else row.path
        if image_id not in objects_of:
            what = f"{where}: path {row.path!r}"
            image_path = pathlib.Path(path_inside(image_dir, row.path, what))
            if not image_path.is_file():
                raise DataError(f"{where}: image file not found: {image_path}")
            objects_of[image_id] = (image_path, [], [])
        if row.corners is None:
            continue
        if row.class_name not in label_of:
            raise DataError(
                f"{where}: unknown class {row.class_name!r}; known classes: {class_names}"
            )
        xmin, ymin, xmax, ymax = row.corners
        objects_of[image_id][1].append([ymin, xmin, ymax, xmax])
        objects_of[image_id][2].append(label_of[row.class_name])

    annotations = [
        Annotation(image_path, image_id, boxes, labels)
        for image_id, (image_path, boxes, labels) in objects_of.items()
    ]
    return annotated_dataset(annotations, strict=strict, source=source)
