"""Data sources and the input pipeline: every source yields the record dict of `records`;
`build_pipeline` turns records into padded batches with absolute pixel boxes for the detector.
"""

from tf_frcnn.data.catalog import tfds_class_names, tfds_dataset, tfds_to_record
from tf_frcnn.data.coco import coco_class_names, coco_dataset
from tf_frcnn.data.csv_table import csv_class_names, csv_dataset
from tf_frcnn.data.pipeline import (
    PipelineOptions,
    build_pipeline,
    flip_boxes_left_right,
    resize_image,
)
from tf_frcnn.data.records import DataError, DataWarning, read_image_rgb
from tf_frcnn.data.synthetic import (
    SYNTHETIC_CLASS_NAMES,
    draw_scene,
    shapes_config,
    synthetic_builder,
    synthetic_dataset,
)
from tf_frcnn.data.voc import VOC_CLASS_NAMES, discover_voc_classes, voc_dataset
from tf_frcnn.data.yolo import yolo_class_names, yolo_dataset

__all__ = [
    "SYNTHETIC_CLASS_NAMES",
    "VOC_CLASS_NAMES",
    "DataError",
    "DataWarning",
    "PipelineOptions",
    "build_pipeline",
    "coco_class_names",
    "coco_dataset",
    "csv_class_names",
    "csv_dataset",
    "discover_voc_classes",
    "draw_scene",
    "flip_boxes_left_right",
    "read_image_rgb",
    "resize_image",
    "shapes_config",
    "synthetic_builder",
    "synthetic_dataset",
    "tfds_class_names",
    "tfds_dataset",
    "tfds_to_record",
    "voc_dataset",
    "yolo_class_names",
    "yolo_dataset",
]
