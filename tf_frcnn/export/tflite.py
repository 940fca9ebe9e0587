"""TFLite export with TFLite built-in ops only (no Flex / Select TF ops).

The ``.tflite`` file keeps the SavedModel's ``serving_default`` signature and outputs (batch 1)
on a fixed input ``images`` uint8 [1, height, width, 3] RGB. Either the graph resizes it like the
SavedModel (for datasets of one image size), or (``canvas=True``) it takes the image already
resized by that rule and zero-padded at the bottom/right into [height, width], as the eval
pipeline pads to ``data.pad_to``, with a second input ``image_shape`` int32 [1, 2], the resized
image's (height, width) inside the canvas: proposals and detections are clipped to it and the
boxes normalised by it (``load_predictor(path, resize=(min_size, max_size))`` prepares both).

What makes the graph built-in only:
- the model runs with :class:`tf_frcnn.roi.ROIPoolingBuiltin` (gather + bilinear arithmetic) in
  place of ``ROIPooling``, whose ``CropAndResize`` is not a TFLite built-in; the weights are the
  same;
- batch 1 is static, so the proposal layer and the detection post-processing take their
  batch-1 paths (one ``NON_MAX_SUPPRESSION`` op each, no ``map_fn`` / ``WHILE``);
- the resize is bilinear without antialiasing (``RESIZE_BILINEAR``).

The "int8" variant runs the networks in int8 and the box arithmetic in float32 (see
``_networks_int8``).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow as tf

# The flatbuffer schema's op codes, to name the ops of a calibrated model.
from tensorflow.lite.python import schema_py_generated as _schema

from tf_frcnn.config import ConfigError
from tf_frcnn.data.pipeline import resize_image
from tf_frcnn.export.frozen import freeze
from tf_frcnn.export.saved_model import INPUT_NAME, serving_outputs
from tf_frcnn.export.serving import CANVAS_IMAGE_SHAPE as IMAGE_SHAPE
from tf_frcnn.export.serving import _letterbox
from tf_frcnn.model import builtin_twin
from tf_frcnn.precision import compute_dtype

_BUILTIN_NAMES = {
    value: name for name, value in vars(_schema.BuiltinOperator).items() if not name.startswith("_")
}
# Ops that move or blend feature values; under ``feature_scopes`` they run in int8 when an
# input comes from an int8 op (ROI pooling's gathers and bilinear blend of the feature map).
_FEATURE_OPS = {"GATHER", "SUB", "MUL", "ADD", "RESHAPE", "REDUCE_MAX"}
# Variant name -> ``quantization`` argument.
VARIANTS = {"float32": None, "float16": "float16", "dynamic_int8": "dynamic_int8", "int8": "int8"}
QUANTIZATIONS = tuple(VARIANTS.values())


class TFLiteModule:
    """``serving_default`` on a fixed [1, height, width, 3] uint8 input (see the module
    docstring), for the converter; with ``canvas``, the second input ``image_shape``."""

    def __init__(self, model, *, height, width, min_size, max_size, canvas=False):
        self.model = builtin_twin(model)
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)
        # Static sizes keep every shape in the converted graph static.
        resized, _ = resize_image(
            tf.zeros([1, height, width, 1], tf.uint8), self.min_size, self.max_size
        )
        self.resized_shape = tuple(resized.shape[1:3])
        images = tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)
        if canvas:
            self.serve = tf.function(
                self._serve_canvas,
                input_signature=[images, tf.TensorSpec([1, 2], tf.int32, name=IMAGE_SHAPE)],
            )
        else:
            self.serve = tf.function(self._serve, input_signature=[images])

    def _serve_canvas(self, images, image_shape):
        return serving_outputs(self.model, tf.cast(images, tf.float32), image_shape)

    def _serve(self, images):
        resized, _ = resize_image(images, self.min_size, self.max_size)
        resized.set_shape((1,) + self.resized_shape + (3,))
        return serving_outputs(self.model, resized, tf.constant([self.resized_shape], tf.int32))


def _frozen_signature(model, *, height, width, min_size, max_size, canvas):
    """(``TFLiteModule.serve`` of ``model`` as a concrete function with the weights as
    constants, the ``int8_scopes`` of its model)."""
    dtype = compute_dtype(model)
    if dtype != "float32":
        raise ConfigError(
            f"TFLite export: the model computes in {dtype} (detection.mixed_precision); "
            "export it from a float32 model (detection.mixed_precision: false) and use the "
            "float16 TFLite variant for half-size weights"
        )
    module = TFLiteModule(
        model, height=height, width=width, min_size=min_size, max_size=max_size, canvas=canvas
    )
    # The converter's own freezing leaves the Keras variables as ``VAR_HANDLE`` ops that the
    # interpreter never initialises (the outputs come out NaN), so the graph is frozen here.
    return freeze(module.serve.get_concrete_function()), int8_scopes(module.model)


def int8_scopes(model):
    """Name scopes of what the "int8" variant runs in int8, for ``model`` (the converted
    ``builtin_twin``): (networks: the backbone's feature network, the RPN head's convs and the
    Fast R-CNN head's fc layers; feature scopes: ROI pooling, whose gathers and bilinear blend
    of feature values follow the int8 feature map, its sampling coordinates staying float)."""
    return (
        (model.features.name, model.rpn_head.name, model.detector_head.name),
        (model.roi_pooling.name,),
    )


def _converter(signature):
    # With a trackable object the converter goes through a SavedModel, which keeps the
    # signature key and the output names.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([signature], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _op_name(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    # Codes above 127 live in builtinCode only; older ones in deprecatedBuiltinCode too.
    return _BUILTIN_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)]


def _in_scopes(name, scopes):
    return any(re.search(f"(^|/){re.escape(scope)}(_\\d+)?/", name) for scope in scopes)


def _networks_int8(signature, representative_images, scopes, feature_scopes=()):
    """Calibrate ``signature`` on the images, then quantize only the networks (the ops under
    ``scopes``) and the feature-value ops under ``feature_scopes`` that follow them.

    The converter's public options quantize everything that has an int8 kernel (full-integer,
    which puts the box arithmetic in int8 and loses the detections) or whole op types, with a
    quantize / dequantize pair around each op. Here the calibrated model is quantized with every
    other op deny-listed (by op type where the type never runs in int8, by output tensor
    otherwise) and its calibration range removed: the MLIR quantizer otherwise carries the
    fixed-scale int8 output of a float SOFTMAX through the slices after it, rounding the
    objectness and class scores to 1/256. What stays is two int8 blocks: image -> feature map ->
    RPN logits and deltas, and feature map -> ROI pooling's gathers and bilinear blend -> fc
    layers -> class logits and box deltas, with ROI pooling's interpolation weights (float, from
    the float ROI coordinates) quantized where they enter the blend.
    """
    # No public API quantizes a calibrated model with a deny-list of nodes except
    # tf.lite.experimental.QuantizationDebugger, which also builds a numeric-verify model
    # and cannot drop calibration ranges; this is the call it makes.
    from tensorflow.lite.python import convert as lite_convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter = _converter(signature)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    images = list(representative_images)
    converter.representative_dataset = lambda: (
        item if isinstance(item, dict) else [item] for item in images
    )
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    calibrated = flatbuffer_utils.convert_bytearray_to_object(bytearray(converter.convert()))
    graph = calibrated.subgraphs[0]
    int8_ops, int8_tensors = set(), set()
    for number, op in enumerate(graph.operators):
        names = [graph.tensors[index].name.decode() for index in op.outputs]
        if all(_in_scopes(name, scopes) for name in names) or (
            _op_name(calibrated, op) in _FEATURE_OPS
            and all(_in_scopes(name, feature_scopes) for name in names)
            and any(index in int8_tensors for index in op.inputs)
        ):
            int8_ops.add(number)
            int8_tensors.update(op.outputs)
    int8_inputs = {index for number in int8_ops for index in graph.operators[number].inputs}
    float_nodes, float_types, int8_types = [], set(), set()
    for number, op in enumerate(graph.operators):
        if number in int8_ops:
            int8_types.add(_op_name(calibrated, op))
            continue
        float_types.add(_op_name(calibrated, op))
        float_nodes.extend(graph.tensors[index].name.decode() for index in op.outputs)
        for index in op.outputs:
            # A float value that enters an int8 op (ROI pooling's interpolation weights)
            # keeps its range, to be quantized there.
            if index not in int8_inputs:
                graph.tensors[index].quantization = None
    if not int8_types:
        raise ValueError(f"no op of the graph lies in the network scopes {scopes}")
    return lite_convert.mlir_quantize(
        bytes(flatbuffer_utils.convert_object_to_bytearray(calibrated)),
        fully_quantize=False,
        denylisted_ops=sorted(float_types - int8_types),
        denylisted_nodes=float_nodes,
    )


def convert(signature, quantization=None, representative_images=None, scopes=None):
    """The flatbuffer bytes of ``signature`` (see ``_frozen_signature``) under the signature key
    ``serving_default``.

    Args:
      signature: a concrete function without variables.
      quantization: None (float32), "float16" (weights stored as float16), "dynamic_int8"
        (dynamic-range quantization: int8 weights, float activations) or "int8" (the networks,
        i.e. the ops under ``scopes``, in int8 with weights and activations calibrated
        on ``representative_images``; the box arithmetic in float32: see
        ``_networks_int8`` and docs/deployment.md).
      representative_images: for "int8": the model's inputs for a few dozen training images
        (``calibration_inputs``: uint8 [1, H, W, 3] arrays, or dicts of the two inputs).
      scopes: for "int8": ``int8_scopes(model)`` of the converted model.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8":
        if representative_images is None:
            raise ValueError("quantization 'int8' needs representative_images to calibrate on")
        if not scopes:
            raise ValueError("quantization 'int8' needs the scopes to quantize")
        return _networks_int8(signature, representative_images, *scopes)
    converter = _converter(signature)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_tflite(
    model,
    path,
    *,
    height,
    width,
    min_size,
    max_size,
    quantization=None,
    representative_images=None,
    canvas=False,
):
    """Convert ``model`` to a built-in-only ``.tflite`` file for [1, height, width, 3] images.

    Args:
      model: a built ``tf_frcnn.FasterRCNN`` (its ``ROIPooling`` is replaced by the built-in twin
        in the converted graph; the model itself is unchanged).
      path: the ``.tflite`` file to write (parent directories are created).
      height, width: the fixed input size.
      min_size, max_size: the resize rule, as for the SavedModel.
      quantization: None, "float16", "dynamic_int8" or "int8" (see ``convert``).
      representative_images: calibration images for "int8" (see ``convert``).
      canvas: the input is the image resized by the rule and padded, with a second input
        ``image_shape`` (see the module docstring); False: the graph resizes its input.

    Raises:
      ValueError: an unknown ``quantization``.
      tf_frcnn.config.ConfigError: the model computes in float16 or bfloat16 (its ops would
        not be TFLite built-ins).
      tf.lite ConverterError: an op of the graph is not a TFLite built-in (the message names it).
    """
    signature, scopes = _frozen_signature(
        model, height=height, width=width, min_size=min_size, max_size=max_size, canvas=canvas
    )
    flatbuffer = convert(signature, quantization, representative_images, scopes)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


def calibration_inputs(images, height, width, resize=None):
    """Inputs of a ``.tflite`` model made from uint8 images [h, w, 3] as ``load_predictor``
    prepares them, for calibration: uint8 [1, height, width, 3] each, or with ``resize`` (a
    canvas model, see the module docstring) {"images": canvas, "image_shape": int32
    [1, 2]} dicts."""
    inputs = []
    for image in images:
        if resize is not None:
            canvas, fitted = _letterbox(image, height, width, resize)
            inputs.append({INPUT_NAME: canvas[None], IMAGE_SHAPE: np.array([fitted], np.int32)})
            continue
        if image.shape[:2] != (height, width):
            image = _letterbox(image, height, width)[0]
        inputs.append(image[None])
    return inputs


def export_tflite_variants(
    model,
    out_dir,
    *,
    height,
    width,
    min_size,
    max_size,
    name="model",
    representative_images=None,
    canvas=False,
    variants=None,
):
    """The float32, float16, dynamic-range int8 and (with ``representative_images``) int8
    ``.tflite`` files of ``model``.

    Writes ``out_dir/<name>.tflite``, ``<name>_float16.tflite``, ``<name>_dynamic_int8.tflite``
    (and ``<name>_int8.tflite``); the graph is traced once for all.

    Args:
      model, height, width, min_size, max_size, canvas: as for ``export_tflite``.
      representative_images: calibration inputs of the "int8" file (``calibration_inputs``).
      variants: the subset of "float32", "float16", "dynamic_int8", "int8" to write (default:
        all, "int8" only with ``representative_images``).

    Returns:
      {variant: {"path": pathlib.Path, "bytes": int, "resize": None or (min_size, max_size),
      the ``resize`` argument of ``load_predictor`` for the file}}.
    """
    if variants is None:
        variants = [v for v in VARIANTS if v != "int8" or representative_images is not None]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown TFLite variant(s) {unknown}; expected some of {list(VARIANTS)}")
    signature, scopes = _frozen_signature(
        model, height=height, width=width, min_size=min_size, max_size=max_size, canvas=canvas
    )
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for variant in variants:
        quantization = VARIANTS[variant]
        suffix = "" if quantization is None else f"_{quantization}"
        path = out_dir / f"{name}{suffix}.tflite"
        path.write_bytes(convert(signature, quantization, representative_images, scopes))
        written[variant] = {
            "path": path,
            "bytes": path.stat().st_size,
            "resize": (min_size, max_size) if canvas else None,
        }
    return written
