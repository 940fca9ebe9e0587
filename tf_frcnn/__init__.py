"""tf_frcnn: Faster R-CNN (Ren, He, Girshick, Sun, 2015) in TensorFlow 2 / Keras 3.

Boxes inside the library are absolute pixel [ymin, xmin, ymax, xmax] float32;
dataset records carry normalised [ymin, xmin, ymax, xmax].
"""

from tf_frcnn.anchors import AnchorGenerator, PyramidAnchorGenerator
from tf_frcnn.config import Config, ConfigError, load_config
from tf_frcnn.fpn import FeaturePyramid
from tf_frcnn.head import FastRCNNHead
from tf_frcnn.model import FasterRCNN
from tf_frcnn.proposals import ProposalLayer
from tf_frcnn.roi import ROIPooling, ROIPoolingBuiltin
from tf_frcnn.rpn import RPNHead

__version__ = "0.1.0"

__all__ = [
    "AnchorGenerator",
    "Config",
    "ConfigError",
    "FastRCNNHead",
    "FasterRCNN",
    "FeaturePyramid",
    "ProposalLayer",
    "PyramidAnchorGenerator",
    "ROIPooling",
    "ROIPoolingBuiltin",
    "RPNHead",
    "load_config",
]
