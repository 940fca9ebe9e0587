"""The names a config key may take, where config validation reads them without importing the
modules that act on them (the backbones, the training loop, its optimizers). Those modules map
the same names to their implementations, and a test checks each mapping covers these names."""

BACKBONES = ("vgg16", "resnet50", "mobilenet", "tiny")
DATA_SOURCES = ("synthetic", "voc", "coco", "tfds", "yolo", "csv")
FILL_MODES = ("negatives", "zeros", "top_iou")
OPTIMIZERS = ("sgd", "adam", "adamw")
STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCHEDULES = ("constant", "step", "cosine")
# What a detector stage's validation selects and stops by (RPN stages: recall@300).
SELECT_BY = ("fitness", "mAP50", "AP")
