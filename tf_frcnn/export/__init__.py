"""Deployment: a SavedModel with serving signatures (TF Serving, SavedModel import) and a
TFLite model of built-in ops only, plus a predictor that runs either.

- ``export_saved_model(model, "saved_models/NAME", class_names, min_size=, max_size=)`` writes
  ``saved_models/NAME/<N>/`` with ``labels.txt``; signatures ``serving_default`` (uint8 images)
  and ``serving_bytes`` (encoded JPEG / PNG).
- ``export_tflite(model, "model.tflite", height=, width=, min_size=, max_size=,
  quantization=None | "float16" | "dynamic_int8" | "int8", canvas=False)``;
  ``export_tflite_variants`` writes them all ("int8": the networks in int8, the box arithmetic
  in float, calibrated on images from ``calibration_inputs``).
- ``verify_export(model, config, class_names, version_dir, tflite)``: every artifact over the
  eval split against the Keras model (``tf-frcnn export --verify``).
- ``load_predictor(path)``: image -> detections for a SavedModel directory or a ``.tflite``.
- ``frozen_inference(model, height, width)``: the model's inference with its weights frozen to
  constants (faster on CPU; what the TFLite path converts).

Outputs everywhere: ``detection_boxes`` float32 [batch, 100, 4] normalised [ymin, xmin, ymax,
xmax] relative to the original image, ``detection_scores`` float32 [batch, 100],
``detection_classes`` int32 [batch, 100] (1-based, 0 on padding), ``num_detections`` int32
[batch].
"""

from tf_frcnn.export.frozen import freeze, frozen_inference
from tf_frcnn.export.saved_model import (
    OUTPUT_NAMES,
    SERVING_BYTES,
    SERVING_DEFAULT,
    DetectionModule,
    export_saved_model,
)
from tf_frcnn.export.serving import (
    DOCKER_COMMAND,
    PREDICT_URL,
    REST_EXAMPLES,
    Predictor,
    load_predictor,
    read_labels,
    resolve_saved_model,
    rest_body,
)
from tf_frcnn.export.tflite import calibration_inputs, export_tflite, export_tflite_variants
from tf_frcnn.export.verify import VerifyError, verify_export
from tf_frcnn.training.state import LABELS_FILE

__all__ = [
    "DOCKER_COMMAND",
    "DetectionModule",
    "LABELS_FILE",
    "OUTPUT_NAMES",
    "PREDICT_URL",
    "Predictor",
    "REST_EXAMPLES",
    "SERVING_BYTES",
    "SERVING_DEFAULT",
    "VerifyError",
    "calibration_inputs",
    "export_saved_model",
    "export_tflite",
    "export_tflite_variants",
    "freeze",
    "frozen_inference",
    "load_predictor",
    "read_labels",
    "resolve_saved_model",
    "rest_body",
    "verify_export",
]
