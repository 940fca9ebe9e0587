"""Configuration: defaults in code, YAML files override them.

This is the one edge where configuration enters: ``build_model`` and the
training code read a ``Config``; layers only take explicit arguments.
Unknown keys are an error that names the key.
"""

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


@dataclass
class ModelConfig:
    backbone: str = "vgg16"               # vgg16 | resnet50 | mobilenet | tiny
    weights: Optional[str] = None         # None | "imagenet" | path to a weights file
    alpha: float = 0.25                   # MobileNet width multiplier
    tiny_channels: list = field(default_factory=lambda: [16, 32, 64, 128])  # tiny: one per stage
    num_classes: int = 20
    class_names: Optional[list] = None    # len == num_classes when given
    rpn_channels: int = 512               # 256 for small backbones
    anchor_base_size: int = 16
    anchor_scales: list = field(default_factory=lambda: [8, 16, 32])
    anchor_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    pool_size: Optional[int] = None       # None: the backbone's (7 for VGG16)
    fc_units: list = field(default_factory=lambda: [1024, 1024])  # when the backbone has no fc head
    dropout: float = 0.0


@dataclass
class RPNConfig:
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    batch_size: int = 256
    positive_fraction: float = 0.5
    ignore_cross_boundary: bool = True
    lambda_reg: float = 10.0
    train_pre_nms: int = 12000
    train_post_nms: int = 2000
    test_pre_nms: int = 6000
    test_post_nms: int = 300
    nms_iou: float = 0.7
    min_size: float = 16.0


@dataclass
class ROIConfig:
    num_rois: int = 128
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.1
    bg_iou_high: float = 0.5
    fill: str = "negatives"               # negatives | zeros | top_iou
    box_stds: list = field(default_factory=lambda: [0.1, 0.1, 0.2, 0.2])


@dataclass
class DetectionConfig:
    nms_iou: float = 0.3
    score_threshold: float = 0.05
    max_detections: int = 100


@dataclass
class DataConfig:
    source: str = "synthetic"             # synthetic | voc | coco | tfds
    root: Optional[str] = None            # VOC root, COCO image dir, or TFDS name
    annotations: Optional[str] = None     # COCO annotation JSON (training)
    eval_annotations: Optional[str] = None  # COCO annotation JSON of the eval split
    eval_root: Optional[str] = None       # COCO image dir of the eval split
    data_dir: Optional[str] = None        # TFDS data dir
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 128                 # synthetic images' side
    num_train: int = 512                  # synthetic images per split
    num_eval: int = 128
    min_size: int = 600
    max_size: int = 1000
    pad_to: Optional[list] = None         # static [H, W] padding
    batch_size: int = 1
    flip: bool = True
    max_boxes: int = 100


@dataclass
class StageConfig:
    steps: int = 1000
    learning_rate: float = 1e-3
    decay_steps: list = field(default_factory=list)  # steps at which lr drops 10x
    batch_size: Optional[int] = None      # None: data.batch_size


@dataclass
class TrainConfig:
    schedule: str = "alternating"         # alternating | joint
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: Optional[float] = None
    seed: int = 0
    strategy: str = "default"             # default | mirrored | multiworker
    mixed_precision: bool = False
    jit_compile: bool = False
    checkpoint_every: int = 200           # steps between checkpoints
    deterministic: bool = False           # TF op determinism: bit-exact resume on CPU
    stages: dict = field(default_factory=dict)  # stage name -> StageConfig fields


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: ROIConfig = field(default_factory=ROIConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


def _merge(section, values, prefix):
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' "
                              f"(expected one of: {', '.join(sorted(names))})")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix}{key}' must be a mapping")
            _merge(current, value, f"{prefix}{key}.")
        else:
            setattr(section, key, value)


def _check_stages(stages):
    names = {f.name for f in dataclasses.fields(StageConfig)}
    parsed = {}
    for stage, values in (stages or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"config key 'train.stages.{stage}' must be a mapping")
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown config key 'train.stages.{stage}.{key}' "
                                  f"(expected one of: {', '.join(sorted(names))})")
        parsed[stage] = StageConfig(**values)
    return parsed


CHOICES = {
    "model.backbone": ("vgg16", "resnet50", "mobilenet", "tiny"),
    "data.source": ("synthetic", "voc", "coco", "tfds"),
    "roi.fill": ("negatives", "zeros", "top_iou"),
    "train.schedule": ("alternating", "joint"),
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.strategy": ("default", "mirrored", "multiworker"),
}
SCHEDULE_STAGES = {"alternating": ("rpn1", "detector2", "rpn3", "detector4"),
                   "joint": ("joint",)}


def _check_types(section, prefix):
    """Each value has its field's type (ints are fine where floats are
    expected; None only where the default is None)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_types(value, f"{key}.")
            continue
        kind = f.type.__name__ if isinstance(f.type, type) else str(f.type).replace("typing.", "")
        if value is None:
            if not kind.startswith("Optional"):
                raise ConfigError(f"config key '{key}' must not be null")
            continue
        if "bool" in kind:
            ok = isinstance(value, bool)
        elif "int" in kind:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif "float" in kind:
            if isinstance(value, str):
                # PyYAML reads 1e-3 (no dot) as a string.
                try:
                    value = float(value)
                    setattr(section, f.name, value)
                except ValueError:
                    pass
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif "str" in kind:
            ok = isinstance(value, str)
        elif "list" in kind:
            ok = isinstance(value, list)
        elif "dict" in kind:
            ok = isinstance(value, dict)
        else:
            ok = True
        if not ok:
            expected = kind.replace("Optional[", "").rstrip("]")
            raise ConfigError(f"config key '{key}' = {value!r} must be of type {expected}")


def _validate(config):
    def between(key, value, low, high):
        if not (low <= value <= high):
            raise ConfigError(f"config key '{key}' = {value} is outside [{low}, {high}]")

    def positive(key, value):
        if value is None or not value > 0:
            raise ConfigError(f"config key '{key}' = {value} must be > 0")

    _check_types(config, "")
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' = {value!r} must be one of "
                              f"{', '.join(allowed)}")

    for key in ("positive_iou", "negative_iou", "positive_fraction", "nms_iou"):
        between(f"rpn.{key}", getattr(config.rpn, key), 0.0, 1.0)
    for key in ("fg_fraction", "fg_iou", "bg_iou_low", "bg_iou_high"):
        between(f"roi.{key}", getattr(config.roi, key), 0.0, 1.0)
    between("detection.nms_iou", config.detection.nms_iou, 0.0, 1.0)
    between("detection.score_threshold", config.detection.score_threshold, 0.0, 1.0)
    for key in ("batch_size", "train_pre_nms", "train_post_nms", "test_pre_nms", "test_post_nms"):
        positive(f"rpn.{key}", getattr(config.rpn, key))
    positive("roi.num_rois", config.roi.num_rois)
    positive("detection.max_detections", config.detection.max_detections)
    for key in ("min_size", "max_size", "batch_size", "max_boxes"):
        positive(f"data.{key}", getattr(config.data, key))
    positive("model.num_classes", config.model.num_classes)
    positive("model.anchor_base_size", config.model.anchor_base_size)
    positive("model.rpn_channels", config.model.rpn_channels)
    positive("model.alpha", config.model.alpha)
    for key in ("anchor_scales", "anchor_ratios", "fc_units"):
        for value in getattr(config.model, key):
            positive(f"model.{key}", value)
    if config.model.pool_size is not None:
        positive("model.pool_size", config.model.pool_size)
    tiny = config.model.tiny_channels
    if not (2 <= len(tiny) <= 4 and all(isinstance(c, int) and c > 0 for c in tiny)):
        raise ConfigError(f"config key 'model.tiny_channels' = {tiny} must be 2 to 4 positive "
                          "integers (one per stage of the tiny backbone)")
    between("model.dropout", config.model.dropout, 0.0, 1.0)
    if not config.rpn.min_size >= 0:
        raise ConfigError(f"config key 'rpn.min_size' = {config.rpn.min_size} must be >= 0")
    for value in config.roi.box_stds:
        positive("roi.box_stds", value)
    if len(config.roi.box_stds) != 4:
        raise ConfigError("config key 'roi.box_stds' must have 4 values")
    if config.data.image_size < 16:
        raise ConfigError(f"config key 'data.image_size' = {config.data.image_size} must be "
                          ">= 16")
    for key in ("num_train", "num_eval"):
        positive(f"data.{key}", getattr(config.data, key))
    if config.data.pad_to is not None:
        if len(config.data.pad_to) != 2:
            raise ConfigError("config key 'data.pad_to' must be [height, width]")
        for value in config.data.pad_to:
            positive("data.pad_to", value)
    positive("train.checkpoint_every", config.train.checkpoint_every)
    if config.train.clip_norm is not None:
        positive("train.clip_norm", config.train.clip_norm)
    if config.rpn.negative_iou > config.rpn.positive_iou:
        raise ConfigError("config key 'rpn.negative_iou' must be <= rpn.positive_iou")
    if config.roi.bg_iou_low > config.roi.bg_iou_high:
        raise ConfigError("config key 'roi.bg_iou_low' must be <= roi.bg_iou_high")
    names = config.model.class_names
    if names is not None and len(names) != config.model.num_classes:
        raise ConfigError(f"config key 'model.class_names' has {len(names)} names but "
                          f"model.num_classes = {config.model.num_classes}")
    # "pretrain": the optional supervised pre-training of the backbone (either schedule).
    allowed_stages = ("pretrain",) + SCHEDULE_STAGES[config.train.schedule]
    for stage, stage_config in config.train.stages.items():
        if stage not in allowed_stages:
            raise ConfigError(f"config key 'train.stages.{stage}': the {config.train.schedule} "
                              f"schedule has stages {', '.join(allowed_stages)}")
        _check_types(stage_config, f"train.stages.{stage}.")
        positive(f"train.stages.{stage}.steps", stage_config.steps)
        positive(f"train.stages.{stage}.learning_rate", stage_config.learning_rate)
        for value in stage_config.decay_steps:
            positive(f"train.stages.{stage}.decay_steps", value)
        if stage_config.batch_size is not None:
            positive(f"train.stages.{stage}.batch_size", stage_config.batch_size)


def config_from_dict(values, source="<dict>"):
    """A validated ``Config`` from a nested dict (as read from YAML)."""
    config = Config()
    values = copy.deepcopy(values or {})
    stages = (values.get("train") or {}).pop("stages", None) if isinstance(
        values.get("train"), dict) else None
    try:
        _merge(config, values, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    try:
        config.train.stages = _check_stages(stages)
        _validate(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def load_config(path):
    """Read a YAML config (safe loader); defaults fill what it leaves out.

    Raises ``ConfigError`` naming the file and the key for a missing file,
    invalid YAML, an unknown key or an out-of-range value.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(values, source=path)
