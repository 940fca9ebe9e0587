"""tf_frcnn: Faster R-CNN (Ren, He, Girshick, Sun, 2015) in TensorFlow 2 / Keras 3.

Boxes inside the library are absolute pixel [ymin, xmin, ymax, xmax] float32;
dataset records carry normalised [ymin, xmin, ymax, xmax].

The names below load on first use (PEP 562), so that ``tf-frcnn --help`` does not load
TensorFlow: ``import tf_frcnn.cli`` runs this file first.
"""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "AnchorGenerator": "tf_frcnn.anchors",
    "Config": "tf_frcnn.config",
    "ConfigError": "tf_frcnn.config",
    "FastRCNNHead": "tf_frcnn.head",
    "FasterRCNN": "tf_frcnn.model",
    "ProposalLayer": "tf_frcnn.proposals",
    "ROIPooling": "tf_frcnn.roi",
    "ROIPoolingBuiltin": "tf_frcnn.roi",
    "RPNHead": "tf_frcnn.rpn",
    "load_config": "tf_frcnn.config",
}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'tf_frcnn' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
