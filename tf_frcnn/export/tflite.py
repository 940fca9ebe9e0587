"""TFLite export with TFLite built-in ops only (no Flex / Select TF ops).

The ``.tflite`` file keeps the SavedModel's ``serving_default`` signature on a fixed input:
``images`` uint8 [1, height, width, 3] RGB, with ``height`` and ``width`` chosen at export. It
resizes in-graph like the SavedModel (shorter side ``min_size``, longer at most ``max_size``) and
returns the same outputs: ``detection_boxes`` float32 [1, max_detections, 4] NORMALISED
[ymin, xmin, ymax, xmax] relative to the input image, ``detection_scores`` float32
[1, max_detections], ``detection_classes`` int32 [1, max_detections] (1-based, 0 on padding),
``num_detections`` int32 [1]. ``Interpreter.get_signature_runner()`` serves it.

What makes the graph built-in only:
- the model runs with :class:`tf_frcnn.roi.ROIPoolingBuiltin` (gather + bilinear arithmetic) in
  place of ``ROIPooling``, whose ``CropAndResize`` is not a TFLite built-in; the other parts are
  the model's own layers, so the weights are the same;
- batch 1 is static, so the proposal layer and the detection post-processing take their
  batch-1 paths (one ``NON_MAX_SUPPRESSION`` op each, no ``map_fn`` / ``WHILE``);
- the resize is bilinear without antialiasing (``RESIZE_BILINEAR``).
"""

from __future__ import annotations

import os
import pathlib

import tensorflow as tf

from tf_frcnn.data.pipeline import resize_image
from tf_frcnn.export.frozen import freeze
from tf_frcnn.export.saved_model import INPUT_NAME, detection_outputs
from tf_frcnn.config import ConfigError
from tf_frcnn.model import builtin_twin
from tf_frcnn.precision import compute_dtype

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
# Variant name -> ``quantization`` argument.
VARIANTS = {"float32": None, "float16": "float16", "dynamic_int8": "dynamic_int8"}


class TFLiteModule:
    """``serving_default`` on a fixed [1, height, width, 3] uint8 input (see the module
    docstring), for the converter."""

    def __init__(self, model, *, height, width, min_size, max_size):
        self.model = builtin_twin(model)
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)
        # Static sizes keep every shape in the converted graph static.
        resized, _ = resize_image(tf.zeros([1, height, width, 1], tf.uint8), self.min_size,
                                  self.max_size)
        self.resized_shape = tuple(resized.shape[1:3])
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)])

    def _serve(self, images):
        resized, _ = resize_image(images, self.min_size, self.max_size)
        resized.set_shape((1,) + self.resized_shape + (3,))
        image_shape = tf.constant([self.resized_shape], tf.int32)
        detections = self.model({"images": resized, "image_shape": image_shape}, training=False)
        return detection_outputs(detections, image_shape)


def frozen_signature(module):
    """``module.serve`` as a concrete function with the weights as constants.

    The converter's own freezing leaves the Keras variables as ``VAR_HANDLE`` ops that the
    interpreter never initialises (the outputs come out NaN), so the graph is frozen here
    (``tf_frcnn.export.frozen.freeze``, which also gives the outputs back their names).
    """
    return freeze(module.serve.get_concrete_function())


def _check_quantization(quantization):
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


def _check_float32(model):
    dtype = compute_dtype(model)
    if dtype != "float32":
        raise ConfigError(
            f"TFLite export: the model computes in {dtype} (detection.mixed_precision); "
            "export it from a float32 model (detection.mixed_precision: false) and use the "
            "float16 TFLite variant for half-size weights")


def convert(signature, quantization=None, representative_images=None):
    """The flatbuffer bytes of ``signature`` (see ``frozen_signature``) under the signature key
    ``serving_default``.

    Args:
      signature: a concrete function without variables.
      quantization: None (float32), "float16" (weights stored as float16), "dynamic_int8"
        (dynamic-range quantization: int8 weights, float activations) or "int8" (full integer
        quantization: int8 weights and activations calibrated on ``representative_images``,
        the kernels XNNPACK runs fastest; ops without an int8 kernel stay float). Lossy: on the
        demo model it runs 1.9x faster than float32 but AP drops from 0.77 to 0.00, the loss
        being in the arithmetic after the convs (anchors, box decoding, proposals in pixels;
        see the README); prefer None or "dynamic_int8" there.
      representative_images: for "int8": uint8 arrays [1, H, W, 3] of the input size (a few
        dozen training images).
    """
    _check_quantization(quantization)
    if quantization == "int8" and representative_images is None:
        raise ValueError("quantization 'int8' needs representative_images to calibrate on")
    # With a trackable object the converter goes through a SavedModel, which keeps the
    # signature key and the output names.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([signature], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        images = list(representative_images)
        converter.representative_dataset = lambda: ([image] for image in images)
    return converter.convert()


def export_tflite(model, path, *, height, width, min_size, max_size, quantization=None,
                  representative_images=None):
    """Convert ``model`` to a built-in-only ``.tflite`` file for [1, height, width, 3] images.

    Args:
      model: a built ``tf_frcnn.FasterRCNN`` (its ``ROIPooling`` is replaced by the built-in twin
        in the converted graph; the model itself is unchanged).
      path: the ``.tflite`` file to write (parent directories are created).
      height, width: the fixed input size.
      min_size, max_size: the in-graph resize, as for the SavedModel.
      quantization: None, "float16", "dynamic_int8" or "int8" (see ``convert``).
      representative_images: calibration images for "int8" (see ``convert``).

    Returns:
      pathlib.Path of the written file.

    Raises:
      ValueError: an unknown ``quantization``.
      tf_frcnn.config.ConfigError: the model computes in float16 or bfloat16 (its ops would
        not be TFLite built-ins).
      tf.lite ConverterError: an op of the graph is not a TFLite built-in (the message names it).
    """
    _check_quantization(quantization)
    _check_float32(model)
    module = TFLiteModule(model, height=height, width=width, min_size=min_size,
                          max_size=max_size)
    flatbuffer = convert(frozen_signature(module), quantization, representative_images)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def export_tflite_variants(model, out_dir, *, height, width, min_size, max_size,
                           name="model", representative_images=None):
    """The float32, float16 and dynamic-range int8 ``.tflite`` files of ``model``, and the full
    integer one when ``representative_images`` are given.

    Writes ``out_dir/<name>.tflite``, ``<name>_float16.tflite``, ``<name>_dynamic_int8.tflite``
    (and ``<name>_int8.tflite``); the graph is traced once for all.

    Returns:
      {"float32" | "float16" | "dynamic_int8" | "int8": {"path": pathlib.Path, "bytes": int}}.
    """
    _check_float32(model)
    module = TFLiteModule(model, height=height, width=width, min_size=min_size,
                          max_size=max_size)
    signature = frozen_signature(module)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = {}
    wanted = dict(VARIANTS)
    if representative_images is not None:
        wanted["int8"] = "int8"
    for variant, quantization in wanted.items():
        suffix = "" if quantization is None else f"_{quantization}"
        path = out_dir / f"{name}{suffix}.tflite"
        path.write_bytes(convert(signature, quantization, representative_images))
        variants[variant] = {"path": path, "bytes": os.path.getsize(path)}
    return variants
