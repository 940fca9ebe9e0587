"""Deployment: a SavedModel with serving signatures for TF Serving (`saved_model`), a TFLite
model of built-in ops only and its quantized variants (`tflite`), a predictor that runs either
(`serving.load_predictor`), the check of every artifact against the Keras model over the eval
split (`verify`, ``tf-frcnn export --verify``), and inference with the weights frozen to
constants (`frozen`). The outputs are the SavedModel's signatures' (`saved_model`).
"""

from tf_frcnn.export.frozen import freeze, frozen_inference, unoptimized
from tf_frcnn.export.saved_model import (
    OUTPUT_NAMES,
    SERVING_BYTES,
    SERVING_DEFAULT,
    DetectionModule,
    export_saved_model,
)
from tf_frcnn.export.serving import Predictor, load_predictor, read_labels, resolve_saved_model
from tf_frcnn.export.tflite import calibration_inputs, export_tflite, export_tflite_variants
from tf_frcnn.export.verify import VerifyError, verify_export
from tf_frcnn.rundir import LABELS_FILE

__all__ = [
    "DetectionModule",
    "LABELS_FILE",
    "OUTPUT_NAMES",
    "Predictor",
    "SERVING_BYTES",
    "SERVING_DEFAULT",
    "VerifyError",
    "calibration_inputs",
    "export_saved_model",
    "export_tflite",
    "export_tflite_variants",
    "freeze",
    "frozen_inference",
    "unoptimized",
    "load_predictor",
    "read_labels",
    "resolve_saved_model",
    "verify_export",
]
