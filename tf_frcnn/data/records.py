"""The record every data source produces, and the checks shared by the readers.

A *record* is one image with its objects. VOC, COCO, the TFDS catalog and the synthetic
dataset all yield exactly this dict, so the input pipeline never branches on the source:

    {"image":      uint8   [H, W, 3]  RGB,
     "boxes":      float32 [N, 4]     normalised [ymin, xmin, ymax, xmax] in [0, 1],
     "labels":     int32   [N]        1-based class index (0 is reserved for background),
     "image_id":   string  []         the source's id (VOC file stem, COCO image id),
     "difficult":  bool    [N]        VOC "difficult" flag, False for other sources,
     "iscrowd":    bool    [N]        COCO "iscrowd" flag, False for other sources}

N may be 0: an image without objects is a background-only example. The on-disk readers
index the annotations in Python and decode the pixels lazily in `tf.data` with Pillow, so a
broken image is reported by its file name, not as a bare decoder error.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import threading
import typing
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image


class DataError(ValueError):
    """Bad input data: a missing or unreadable file, an unknown class, an empty split."""


class DataWarning(UserWarning):
    """Input data was repaired or skipped (clipped boxes, a corrupt image)."""


class BoxRepairWarning(DataWarning):
    """A reader's one warning about the boxes it dropped or clipped; the counts are kept as
    attributes so `tf_frcnn.data.analysis` can report them without parsing the text."""

    def __init__(self, message: str, dropped: int, clipped: int):
        super().__init__(message)
        self.dropped = dropped
        self.clipped = clipped


@dataclasses.dataclass
class Example:
    """One indexed, not yet decoded, image.

    boxes: float32 [N, 4] normalised [ymin, xmin, ymax, xmax], already clipped to [0, 1].
    """

    image_path: str
    image_id: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray


def path_inside(directory, relative, what: str) -> str:
    """``directory / relative``, refusing an absolute name or one climbing out with ``..``.

    The check is on the path as written, so symlinks inside the dataset still work.

    Args:
      what: the entry as the error names it, e.g. "file_name '../x.jpg' of image id 7".
    Raises:
      DataError naming the entry when ``relative`` is not a string or leaves ``directory``.
    """
    if not isinstance(relative, str) or not relative:
        raise DataError(f"{what} is not a file name")
    base = os.path.abspath(directory)
    if (
        os.path.isabs(relative)
        or os.path.commonpath([base, os.path.abspath(os.path.join(base, relative))]) != base
    ):
        raise DataError(f"{what} points outside {os.fspath(directory)}; refused")
    return os.path.join(os.fspath(directory), relative)


def parse_float(text, where: str) -> float:
    """``float(text)``, or a DataError "{where}: {text!r} is not a number".

    NaN and infinities parse; `BoxAudit.clean` drops a box holding NaN and clips infinities.
    """
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {text!r} is not a number") from None


def read_image_rgb(path) -> np.ndarray:
    """Decodes any image file Pillow reads into uint8 [H, W, 3] RGB.

    An alpha channel is dropped, not composited, as `tf.io.decode_image(channels=3)` does, so
    training and the exported `serving_bytes` signature see the same pixels. EXIF orientation
    is not applied (annotations refer to the stored pixels).

    Raises:
      DataError naming the file when it cannot be opened or is truncated.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot decode image {os.fspath(path)}: {error}") from error


def read_image_size(path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels.

    Raises:
      DataError naming the file when it is not a readable image.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {os.fspath(path)}: {error}") from error
    return height, width


def check_images(paths, *, strict: bool, source: str) -> list[tuple[int, int] | None]:
    """(height, width) of every image, or None for one that must be skipped.

    Non-strict: only the header is read; an unreadable file is skipped with a `DataWarning`
    naming it (a body truncated further in is skipped when the pipeline decodes it). Strict:
    every image is decoded now, so the first bad file raises a `DataError` before training.
    """
    probe = (lambda p: read_image_rgb(p).shape[:2]) if strict else read_image_size

    def safe_probe(path):
        try:
            return probe(path)
        except DataError as error:
            if strict:
                raise
            warnings.warn(f"{source}: skipping {error}", DataWarning, stacklevel=2)
            return None

    # Pillow releases the GIL while reading and decoding, so threads overlap the I/O.
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(16, (os.cpu_count() or 1) * 4)
    ) as pool:
        return list(pool.map(safe_probe, paths))


class BoxAudit:
    """Clips boxes to the image and counts what had to be repaired, to warn once per dataset."""

    def __init__(self, source: str):
        self.source = source
        self.clipped = 0
        self.dropped = 0

    def clean(
        self, boxes: np.ndarray, height: float, width: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalises and clips absolute boxes, dropping those empty inside the image.

        Args:
          boxes: float [N, 4] absolute pixel [ymin, xmin, ymax, xmax] of a `height` x `width`
            image.
        Returns:
          (boxes float32 [M, 4] normalised [ymin, xmin, ymax, xmax] clipped to [0, 1],
           keep bool [N]: the rows kept, those with ymin < ymax and xmin < xmax after clipping).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        normalised = boxes / np.array([height, width, height, width], dtype=np.float64)
        clipped = np.clip(normalised, 0.0, 1.0)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        was_outside = np.any(clipped != normalised, axis=1)
        self.dropped += int(np.sum(~keep))
        self.clipped += int(np.sum(was_outside & keep))
        return clipped[keep].astype(np.float32), keep

    def warn(self, stacklevel: int = 3) -> None:
        """One warning for the whole dataset, if anything was repaired; the default
        `stacklevel` points at the caller of the reader that calls `warn`."""
        if self.dropped or self.clipped:
            message = (
                f"{self.source}: dropped {self.dropped} boxes that were inverted, zero-area or "
                f"outside the image, and clipped {self.clipped} boxes to the image"
            )
            warnings.warn(
                BoxRepairWarning(message, self.dropped, self.clipped), stacklevel=stacklevel
            )


class Annotation(typing.NamedTuple):
    """One image as a reader indexed it, before `annotated_dataset` checks it.

    boxes: float [N, 4] [ymin, xmin, ymax, xmax], absolute pixels (normalised for YOLO);
    labels: int [N] 1-based; flags: {"difficult" / "iscrowd": bool [N]}, False where absent;
    size: the annotation's (height, width), or None / zeros to take it from the image file.
    """

    image_path: str
    image_id: str
    boxes: np.ndarray
    labels: list
    flags: dict = {}
    size: tuple | None = None


def annotated_dataset(
    annotations: list[Annotation],
    *,
    strict: bool,
    source: str,
    normalised: bool = False,
    size_mismatch: str | None = None,
) -> tf.data.Dataset:
    """Records of indexed images: the path every on-disk reader takes.

    Checks the image files (`check_images`), clips or drops the boxes (`BoxAudit`, one
    warning) and decodes lazily (`examples_to_dataset`), in the order of `annotations`.

    Args:
      normalised: the boxes are already normalised by the image size (YOLO); otherwise they
        are divided by the annotation's size, or the file's.
      size_mismatch: when given, one `DataWarning` "{source}: " + this text, formatted with
        `count` and `first` (an image id), for annotations whose size differs from the file.
    Raises:
      DataError when no image is left to read, or (strict) naming an unreadable image.
    """
    paths = [annotation.image_path for annotation in annotations]
    file_sizes = check_images(paths, strict=strict, source=source)
    audit = BoxAudit(source)
    examples, mismatched = [], []
    for annotation, file_size in zip(annotations, file_sizes):
        if file_size is None:
            continue
        size = annotation.size
        if normalised:
            size = (1.0, 1.0)
        elif size is None or min(size) <= 0:
            size = file_size
        elif tuple(size) != tuple(file_size):
            mismatched.append(annotation.image_id)
        boxes, keep = audit.clean(annotation.boxes, *size)
        flags = {key: np.asarray(value, bool)[keep] for key, value in annotation.flags.items()}
        count = len(boxes)
        examples.append(
            Example(
                image_path=os.fspath(annotation.image_path),
                image_id=str(annotation.image_id),
                boxes=boxes,
                labels=np.asarray(annotation.labels, np.int32).reshape(-1)[keep],
                difficult=flags.get("difficult", np.zeros(count, bool)),
                iscrowd=flags.get("iscrowd", np.zeros(count, bool)),
            )
        )
    audit.warn(stacklevel=4)  # past this helper and the reader, at the reader's caller
    if size_mismatch and mismatched:
        message = size_mismatch.format(count=len(mismatched), first=mismatched[0])
        warnings.warn(f"{source}: {message}", DataWarning, stacklevel=3)
    return examples_to_dataset(examples, strict=strict, source=source)


_capture = threading.local()


@contextlib.contextmanager
def captured_examples():
    """Collects, in this thread, the `Example` lists the readers hand to `examples_to_dataset`.

    So code that needs only the boxes and image files (`tf_frcnn.data.analysis`) reads a split
    through the readers training uses, without decoding a pixel. Yields the list of lists.
    """
    captured = []
    previous = getattr(_capture, "lists", None)
    _capture.lists = captured
    try:
        yield captured
    finally:
        _capture.lists = previous


def examples_to_dataset(examples: list[Example], *, strict: bool, source: str) -> tf.data.Dataset:
    """A `tf.data.Dataset` of records from indexed examples, decoding the images lazily.

    An image that fails to decode is skipped with a `DataWarning` naming the file; with
    `strict=True` the failure is raised instead, and its message names the file.
    Raises:
      DataError when no image is left to read.
    """
    if getattr(_capture, "lists", None) is not None:
        _capture.lists.append(list(examples))
    if not examples:
        raise DataError(f"{source}: no readable images")
    row_lengths = [len(example.labels) for example in examples]

    def ragged(field, dtype):
        flat = np.concatenate([getattr(example, field) for example in examples]).astype(dtype)
        return tf.RaggedTensor.from_row_lengths(flat, row_lengths)

    index = tf.data.Dataset.from_tensor_slices(
        {
            "image_path": [example.image_path for example in examples],
            "image_id": [example.image_id for example in examples],
            "boxes": ragged("boxes", np.float32),
            "labels": ragged("labels", np.int32),
            "difficult": ragged("difficult", bool),
            "iscrowd": ragged("iscrowd", bool),
        }
    )

    def decode(path):
        path = path.decode()
        try:
            return read_image_rgb(path), np.bool_(True)
        except DataError as error:
            if strict:
                raise
            warnings.warn(f"{source}: skipping {error}", DataWarning, stacklevel=2)
            return np.zeros((1, 1, 3), np.uint8), np.bool_(False)

    def to_record(entry):
        image, decoded = tf.numpy_function(decode, [entry["image_path"]], (tf.uint8, tf.bool))
        image.set_shape([None, None, 3])
        decoded.set_shape([])
        record = {
            "image": image,
            "boxes": tf.reshape(entry["boxes"], [-1, 4]),
            "labels": tf.reshape(entry["labels"], [-1]),
            "image_id": entry["image_id"],
            "difficult": tf.reshape(entry["difficult"], [-1]),
            "iscrowd": tf.reshape(entry["iscrowd"], [-1]),
        }
        return record, decoded

    return (
        index.map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .filter(lambda record, decoded: decoded)
        .map(lambda record, decoded: record)
    )
