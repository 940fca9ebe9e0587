"""End-to-end check of an export: every artifact run over the eval split, against the Keras
model that was exported (what ``tf-frcnn export --verify`` does).

For the Keras model (through `tf_frcnn.evaluation.runner.evaluate`, the very computation of
``tf-frcnn eval``) and for each artifact (the SavedModel's ``serving_default`` on uint8 pixels and
``serving_bytes`` on the encoded files, each ``.tflite`` file): COCO AP and AP50 on the same
images, ms/image, file size; for the SavedModel also that a batch of N images gives the N results
of N single calls. An artifact fails when its AP is more than ``tolerance`` below the Keras
model's, or when its batch differs from its single calls. Boxes are compared in original-image
pixels, absolute [ymin, xmin, ymax, xmax].
"""

from __future__ import annotations

import functools
import io
import json
import math
import pathlib
import statistics
import time

import numpy as np
import tensorflow as tf

from tf_frcnn.boxes import to_absolute
from tf_frcnn.data import inputs
from tf_frcnn.evaluation import Evaluator
from tf_frcnn.evaluation.runner import evaluate
from tf_frcnn.export.saved_model import INPUT_NAME, OUTPUT_NAMES, SERVING_BYTES, SERVING_DEFAULT
from tf_frcnn.export.serving import load_predictor, trim_detections

VERIFY_JSON = "verify.json"
VERIFY_TABLE = "verify.md"
KERAS = "Keras model"
TFLITE_THREADS = 2  # the TFLite interpreter's (the SavedModel runs on TensorFlow's own)
# Batch equality: boxes (normalised) and scores of a batched call against single calls.
BATCH_ATOL = 1e-4
BATCH_SIZE = 4


class VerifyError(Exception):
    """An artifact fell short; the message names each one."""


def _encoded(config, record):
    """The image file's bytes for ``serving_bytes``: the JPEG itself for a VOC directory, else
    the decoded pixels as a (lossless) PNG."""
    if config.data.source == "voc":
        path = pathlib.Path(config.data.root) / "JPEGImages" / f"{record['image_id'].decode()}.jpg"
        if path.is_file():
            return path.read_bytes()
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(record["image"]).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples(config, split, limit):
    """The first ``limit`` records of ``split`` (None: all) as dicts of numpy, with "bytes"."""
    records, _ = inputs.source(config, split)
    if limit is not None:
        records = records.take(limit)
    return [{**record, "bytes": _encoded(config, record)} for record in records.as_numpy_iterator()]


def _metrics(samples, outputs, class_names):
    """COCO / VOC metrics of per-sample outputs (normalised boxes, trimmed to num_detections)."""
    evaluator = Evaluator(len(class_names), class_names)
    for record, out in zip(samples, outputs):
        height, width = size = record["image"].shape[:2]
        keys = ("image_id", "labels", "difficult", "iscrowd")
        groundtruth = {key: record.get(key) for key in keys}
        groundtruth.update(boxes=to_absolute(record["boxes"], size), height=height, width=width)
        detections = {
            "image_id": record["image_id"],
            "boxes": to_absolute(out["detection_boxes"], size),
            "scores": out["detection_scores"],
            "classes": out["detection_classes"],
        }
        evaluator.update([groundtruth], [detections])
    return evaluator.result()


def _trim(outputs, index):
    return trim_detections({name: value[index] for name, value in outputs.items()})


def _run_all(predict, inputs_):
    """Outputs of ``predict`` on each input, and the median ms per call (after one warm-up)."""
    predict(inputs_[0])
    outputs, times = [], []
    for item in inputs_:
        start = time.perf_counter()
        outputs.append(predict(item))
        times.append(time.perf_counter() - start)
    return outputs, 1000.0 * statistics.median(times)


def _call(signature, batch):
    outputs = signature(**{INPUT_NAME: tf.constant(batch)})
    return {name: outputs[name].numpy() for name in OUTPUT_NAMES}


def _call_one(signature, item):
    """The detections of one image (uint8 [H, W, 3]) or encoded file (bytes), trimmed to
    ``num_detections``."""
    batch = item[np.newaxis] if isinstance(item, np.ndarray) else [item]
    return _trim(_call(signature, batch), 0)


def _batch_mismatch(signature, batch):
    """The largest difference between a batched call and single calls (None when equal
    within ``BATCH_ATOL`` and with the same detections), as a message."""
    together = _call(signature, batch)
    for index in range(len(batch)):
        alone = _call_one(signature, batch[index])
        joint = _trim(together, index)
        if joint["num_detections"] != alone["num_detections"] or not np.array_equal(
            joint["detection_classes"], alone["detection_classes"]
        ):
            return (
                f"image {index} of the batch: {joint['num_detections']} detections, "
                f"{alone['num_detections']} alone"
            )
        for key in ("detection_boxes", "detection_scores"):
            gap = float(np.max(np.abs(joint[key] - alone[key]), initial=0.0))
            if gap > BATCH_ATOL:
                return f"image {index} of the batch: {key} differ by {gap:.2g} from alone"
    return None


def _common_crop(images):
    """The images cropped at the top left to their smallest common size, stacked [N, h, w, 3]
    (``serving_default`` takes one size per batch)."""
    height = min(image.shape[0] for image in images)
    width = min(image.shape[1] for image in images)
    return np.stack([image[:height, :width] for image in images])


def _size_bytes(path):
    """A file's size, or a SavedModel's (its graph, variables and assets; not the ``.tflite``
    files and reports beside them)."""
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    parts = [path / "saved_model.pb", path / "fingerprint.pb"]
    parts += [p for folder in ("variables", "assets") for p in (path / folder).rglob("*")]
    return sum(p.stat().st_size for p in parts if p.is_file())


def _row(name, path, metrics, reference, ms, size, tolerance, problem=None):
    change = metrics["AP"] - reference["AP"]
    if problem is None and change < -tolerance:
        problem = (
            f"AP {metrics['AP']:.4f} is {-change:.4f} below the Keras model's "
            f"{reference['AP']:.4f} (tolerance {tolerance})"
        )
    return {
        "artifact": name,
        "path": str(path),
        "bytes": size,
        "ms_per_image": round(ms, 2),
        "AP": round(metrics["AP"], 4),
        "AP50": round(metrics["AP50"], 4),
        "AP_change": round(change, 4),
        "ok": problem is None,
        "problem": problem,
    }


def format_table(report):
    """The Markdown table of a ``verify_export`` report."""
    lines = [
        "| artifact | file | size | ms/image | AP | AP50 | AP change | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["artifacts"]:
        size = "" if row["bytes"] is None else f"{row['bytes'] / 1e6:.1f} MB"
        check = "ok" if row["ok"] else f"FAIL: {row['problem']}"
        change = "" if row["artifact"] == KERAS else f"{row['AP_change']:+.4f}"
        lines.append(
            f"| {row['artifact']} | {pathlib.Path(row['path']).name} | {size} | "
            f"{row['ms_per_image']:.1f} | {row['AP']:.4f} | {row['AP50']:.4f} | "
            f"{change} | {check} |"
        )
    return "\n".join(lines)


def verify_export(
    model, config, class_names, version_dir, tflite=(), *, num_images=None, tolerance=0.005
):
    """Run every artifact of an export over the eval split and compare it with ``model``.

    Args:
      version_dir: the SavedModel version directory; ``verify.json`` and ``verify.md`` go there.
      tflite: (name, path, resize) per ``.tflite`` file: a display name, the file, and the
        ``resize`` argument of ``load_predictor`` it needs (None or (min_size, max_size)).
      num_images: the first N images of the split (rounded up to whole eval batches); None:
        all of it.
      tolerance: the largest AP drop an artifact may have.

    Returns:
      the report dict (also written as ``verify.json``): {"split", "images", "tolerance",
      "artifacts": [row per artifact, the Keras model first], "ok"}; each row has "artifact",
      "path", "bytes", "ms_per_image", "AP", "AP50", "AP_change", "ok", "problem".

    Raises:
      VerifyError: an artifact failed; the message names each failing one (the files are
        written first).
    """
    version_dir = pathlib.Path(version_dir)
    split = config.data.eval_split
    batch_size = config.data.batch_size
    num_batches = math.ceil(num_images / batch_size) if num_images else None
    batches = inputs.batches(config, split, training=False)
    if num_batches is not None:
        batches = batches.take(num_batches)
    start = time.perf_counter()
    reference, _ = evaluate(model, class_names, batches, progress=False)
    samples = _samples(config, split, num_batches and num_batches * batch_size)
    keras_ms = 1000.0 * (time.perf_counter() - start) / max(len(samples), 1)
    judge = _Judge(samples, class_names, reference, tolerance)
    rows = [_row(KERAS, "", reference, reference, keras_ms, None, tolerance)]
    rows += _saved_model_rows(version_dir, judge)
    images = [record["image"] for record in samples]
    for name, path, resize in tflite:
        predictor = load_predictor(path, num_threads=TFLITE_THREADS, resize=resize)
        outputs, ms = _run_all(predictor, images)
        rows.append(judge.row(f"TFLite {name}", path, outputs, ms, _size_bytes(path)))
    report = {
        "split": split,
        "images": len(samples),
        "tolerance": tolerance,
        "tflite_threads": TFLITE_THREADS,
        "artifacts": rows,
        "ok": all(r["ok"] for r in rows),
    }
    (version_dir / VERIFY_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (version_dir / VERIFY_TABLE).write_text(format_table(report) + "\n")
    failed = [row for row in rows if not row["ok"]]
    if failed:
        raise VerifyError(
            "; ".join(f"{row['artifact']} ({row['path']}): {row['problem']}" for row in failed)
        )
    return report


class _Judge:
    """An artifact's report row from its outputs on ``samples``, against the Keras
    model's metrics (``reference``)."""

    def __init__(self, samples, class_names, reference, tolerance):
        self.samples = samples
        self.class_names = class_names
        self.reference = reference
        self.tolerance = tolerance

    def row(self, name, path, outputs, ms, size, problem=None):
        metrics = _metrics(self.samples, outputs, self.class_names)
        return _row(name, path, metrics, self.reference, ms, size, self.tolerance, problem)


def _saved_model_rows(version_dir, judge):
    """The rows of the SavedModel's two signatures, each also checked batched."""
    samples = judge.samples
    loaded = tf.saved_model.load(str(version_dir))
    size = _size_bytes(version_dir)
    images = [record["image"] for record in samples]
    encoded = [record["bytes"] for record in samples]
    count = min(BATCH_SIZE, len(samples))
    rows = []
    for name, items, batch in (
        (SERVING_DEFAULT, images, _common_crop(images[:count])),
        (SERVING_BYTES, encoded, np.array(encoded[:count], dtype=object)),
    ):
        signature = loaded.signatures[name]
        outputs, ms = _run_all(functools.partial(_call_one, signature), items)
        problem = _batch_mismatch(signature, batch) if count > 1 else None
        if problem:
            problem = f"a batch of {count} differs from {count} single calls: {problem}"
        rows.append(judge.row(f"SavedModel {name}", version_dir, outputs, ms, size, problem))
    return rows
