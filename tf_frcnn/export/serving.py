"""Using an export: its labels, and a predictor for a SavedModel or a ``.tflite`` file."""

from __future__ import annotations

import pathlib

import numpy as np

from tf_frcnn.export.saved_model import INPUT_NAME, OUTPUT_NAMES, SERVING_DEFAULT, version_dirs
from tf_frcnn.rundir import LABELS_FILE


def resolve_saved_model(path):
    """The SavedModel version directory that ``path`` names.

    Args:
      path: a version directory (holding ``saved_model.pb``) or a base directory
        (``saved_models/NAME``) of numbered versions, whose newest is taken.

    Raises:
      FileNotFoundError: neither.
    """
    path = pathlib.Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = {
        number: version
        for number, version in version_dirs(path).items()
        if (version / "saved_model.pb").is_file()
    }
    if not versions:
        raise FileNotFoundError(
            f"{path}: no saved_model.pb, and no numbered version directory holding one"
        )
    return versions[max(versions)]


def read_labels(path):
    """Class names of a model dir or an export: ``labels[i - 1]`` names class i.

    Args:
      path: a ``labels.txt`` file, a directory holding one (a model dir, a SavedModel version
        directory), a ``.tflite`` file (the ``labels.txt`` beside it), or a SavedModel base
        directory (its newest version).

    Raises:
      FileNotFoundError: no labels file there.
    """
    path = pathlib.Path(path)
    if path.suffix == ".tflite":
        path = path.parent / LABELS_FILE
    elif path.is_dir():
        if not (path / LABELS_FILE).is_file():
            path = resolve_saved_model(path)
        path = path / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no labels file")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Predictor:
    """Detections for one image at a time; see ``load_predictor``.

    Attributes:
      path: the version directory or ``.tflite`` file in use.
      labels: class names (``labels[i - 1]`` names class i), or None without ``labels.txt``.
    """

    def __init__(self, path, run, labels):
        self.path = path
        self.labels = labels
        self._run = run

    def __call__(self, image):
        """Detect the objects of ``image``.

        Args:
          image: uint8 numpy [height, width, 3] RGB.

        Returns:
          dict of numpy arrays trimmed to the N detections, best first:
          "detection_boxes" float32 [N, 4] NORMALISED [ymin, xmin, ymax, xmax] relative to
          ``image``, "detection_scores" float32 [N], "detection_classes" int32 [N] (1-based),
          "num_detections" int (N).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                f"expected a uint8 [height, width, 3] RGB image, got {image.dtype} "
                f"{list(image.shape)}"
            )
        return trim_detections(self._run(image))


def trim_detections(outputs):
    """One image's outputs (numpy) trimmed to its ``num_detections`` N: "detection_boxes"
    float32 [N, 4], "detection_scores" float32 [N], "detection_classes" int32 [N],
    "num_detections" int N."""
    count = int(outputs["num_detections"])
    return {
        "detection_boxes": np.asarray(outputs["detection_boxes"][:count], np.float32),
        "detection_scores": np.asarray(outputs["detection_scores"][:count], np.float32),
        "detection_classes": np.asarray(outputs["detection_classes"][:count], np.int32),
        "num_detections": count,
    }


def _saved_model_runner(version_dir):
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures[SERVING_DEFAULT]

    def run(image):
        outputs = serve(**{INPUT_NAME: tf.constant(image[np.newaxis])})
        return {name: outputs[name].numpy()[0] for name in OUTPUT_NAMES}

    return run


def _tflite_interpreter(path, num_threads, xnnpack=True):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    # AUTO applies the default XNNPACK delegate; the other keeps the reference kernels.
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(
        model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=resolver
    )


def _rule_size(height, width, min_size, max_size):
    """(height, width) that `tf_frcnn.data.resize_image` gives an image (same float32
    arithmetic and round-half-to-even)."""
    size = np.array([height, width], np.float32)
    scale = np.float32(min_size) / size.min()
    if max_size is not None:
        scale = min(scale, np.float32(max_size) / size.max())
    return tuple(max(1, int(side)) for side in np.round(size * scale))


def _resize_bilinear(image, size):
    """uint8 [h, w, 3] -> uint8 [size[0], size[1], 3], bilinear with half-pixel centres and no
    antialiasing: ``tf.image.resize(..., "bilinear", antialias=False)``, rounded to uint8.
    Written here because the TFLite predictor runs without TensorFlow, and Pillow's bilinear
    filter widens its support when shrinking (antialiasing), which the model never saw."""

    def taps(inside, outside):
        where = (np.arange(outside, dtype=np.float32) + 0.5) * np.float32(inside / outside) - 0.5
        low = np.floor(where)
        return (
            np.clip(low, 0, inside - 1).astype(int),
            np.clip(low + 1, 0, inside - 1).astype(int),
            (where - low).astype(np.float32),
        )

    top, bottom, y_lerp = taps(image.shape[0], size[0])
    left, right, x_lerp = taps(image.shape[1], size[1])
    pixels = image.astype(np.float32)
    x_lerp = x_lerp[np.newaxis, :, np.newaxis]
    upper = pixels[top][:, left] + (pixels[top][:, right] - pixels[top][:, left]) * x_lerp
    lower = pixels[bottom][:, left] + (pixels[bottom][:, right] - pixels[bottom][:, left]) * x_lerp
    out = upper + (lower - upper) * y_lerp[:, np.newaxis, np.newaxis]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# The second input of a canvas ``.tflite`` (``tf_frcnn.export.tflite.IMAGE_SHAPE``).
CANVAS_IMAGE_SHAPE = "image_shape"


def _letterbox(image, height, width, resize=None):
    """``image`` resized at the top left of a zero canvas [height, width]; returns (canvas,
    (fitted height, fitted width)). With ``resize`` = (min_size, max_size) the model's resize
    rule sets the size (capped to fit the canvas); otherwise the image is scaled to fit."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    fitted = (min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale))))
    if resize is not None:
        ruled = _rule_size(h, w, *resize)
        if ruled[0] <= height and ruled[1] <= width:
            fitted = ruled
    canvas = np.zeros([height, width, 3], np.uint8)
    canvas[: fitted[0], : fitted[1]] = (
        image if fitted == (h, w) else _resize_bilinear(image, fitted)
    )
    return canvas, fitted


def _tflite_runner(path, num_threads, xnnpack=True, resize=None):
    """image -> outputs of a ``.tflite`` file; a canvas file (inputs ``images`` and
    ``image_shape``) gets the image resized (``_letterbox``) and its valid size."""
    interpreter = _tflite_interpreter(path, num_threads, xnnpack)
    serve = interpreter.get_signature_runner(SERVING_DEFAULT)
    details = serve.get_input_details()
    _, height, width, _ = details[INPUT_NAME]["shape"]

    def run_canvas(image):
        canvas, fitted = _letterbox(image, height, width, resize)
        outputs = serve(
            **{INPUT_NAME: canvas[np.newaxis], CANVAS_IMAGE_SHAPE: np.array([fitted], np.int32)}
        )
        # Boxes come normalised to the valid part, i.e. relative to the image.
        return {name: outputs[name][0] for name in OUTPUT_NAMES}

    if CANVAS_IMAGE_SHAPE in details:
        return run_canvas

    def run(image):
        if image.shape[:2] == (height, width):
            outputs = serve(**{INPUT_NAME: image[np.newaxis]})
            return {name: outputs[name][0] for name in OUTPUT_NAMES}
        canvas, (fitted_h, fitted_w) = _letterbox(image, height, width, resize)
        outputs = serve(**{INPUT_NAME: canvas[np.newaxis]})
        outputs = {name: value[0] for name, value in outputs.items()}
        # Boxes come normalised to the canvas; the image fills only its top-left part.
        stretch = np.array([height / fitted_h, width / fitted_w] * 2, np.float32)
        boxes = np.clip(outputs["detection_boxes"] * stretch, 0.0, 1.0)
        count = int(outputs["num_detections"])
        # Drop detections that lie wholly in the padding, keeping the order.
        visible = np.flatnonzero(
            (boxes[:count, 2] > boxes[:count, 0]) & (boxes[:count, 3] > boxes[:count, 1])
        )
        return {
            "detection_boxes": boxes[visible],
            "detection_scores": outputs["detection_scores"][visible],
            "detection_classes": outputs["detection_classes"][visible],
            "num_detections": len(visible),
        }

    return run


def load_predictor(path, *, num_threads=None, xnnpack=True, resize=None):
    """A callable image -> detections for an export (see ``Predictor.__call__``).

    Args:
      path: a SavedModel base directory (``saved_models/NAME``: its newest numbered version), a
        version directory, or a ``.tflite`` file. A ``.tflite`` model has a fixed input size:
        images of that size go in as they are; others are scaled to fit it (aspect kept) and
        padded at the bottom/right, and the boxes are mapped back to the image. A canvas
        ``.tflite`` (inputs ``images`` and ``image_shape``) gets every image resized on the
        host, by the model's rule with ``resize`` (else scaled to fit), padded into the
        canvas as the eval pipeline pads to ``data.pad_to``.
      num_threads: CPU threads of the TFLite interpreter (None: its default). A SavedModel
        runs on TensorFlow's process-wide thread settings (``tf.config.threading``).
      xnnpack: TFLite only: run under the default XNNPACK delegate (True) or the built-in
        reference kernels alone (False, for comparison).
      resize: a canvas TFLite file only: (min_size, max_size) of the model's resize rule,
        applied on the host (bilinear as ``tf_frcnn.data.resize_image``, rounded to uint8);
        None: scaled to fit the canvas.

    Raises:
      FileNotFoundError: nothing loadable at ``path``.
    """
    path = pathlib.Path(path)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such TFLite file")
        run = _tflite_runner(path, num_threads, xnnpack, resize)
    else:
        path = resolve_saved_model(path)
        run = _saved_model_runner(path)
    try:
        labels = read_labels(path)
    except FileNotFoundError:
        labels = None
    return Predictor(path, run, labels)
