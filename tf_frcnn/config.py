"""Configuration: defaults in code, YAML files override them.

This is the one edge where configuration enters: ``build_model`` and the
training code read a ``Config``; layers only take explicit arguments.
Unknown keys are an error that names the key.
"""

import copy
import dataclasses
import inspect
import os
from dataclasses import dataclass, field

import yaml

from tf_frcnn.boxes import DETECTOR_BOX_STDS


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


@dataclass
class ModelConfig:
    backbone: str = "vgg16"  # vgg16 | resnet50 | mobilenet | tiny
    weights: str | None = None  # None | "imagenet" | path to a weights file
    alpha: float = 0.25  # MobileNet width multiplier
    tiny_channels: list = field(default_factory=lambda: [16, 32, 64, 128])  # tiny: one per stage
    num_classes: int = 20
    class_names: list | None = None  # len == num_classes when given
    rpn_channels: int = 512  # 256 for small backbones
    anchor_base_size: int = 16
    # A list, or "auto": fitted to the training boxes when training starts
    # (tf_frcnn.data.analysis.resolve_anchors); the model dir's config.yaml keeps the result.
    anchor_scales: object = field(default_factory=lambda: [8, 16, 32])
    anchor_ratios: object = field(default_factory=lambda: [0.5, 1.0, 2.0])
    num_anchor_scales: int = 3  # scales fitted for anchor_scales: auto
    num_anchor_ratios: int = 3  # ratios fitted for anchor_ratios: auto
    pool_size: int | None = None  # None: the backbone's (7 for VGG16)
    # Detector fc layers and their dropout; None: the backbone's (backbones.head_defaults).
    fc_units: list | None = None
    dropout: float | None = None


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
    fill: str = "negatives"  # negatives | zeros | top_iou
    box_stds: list = field(default_factory=lambda: list(DETECTOR_BOX_STDS))


@dataclass
class DetectionConfig:
    nms_iou: float = 0.3
    score_threshold: float = 0.05
    max_detections: int = 100
    # Precision of inference, evaluation and export: false (float32) | float16 | bfloat16
    # (tf_frcnn.precision). Independent of train.mixed_precision.
    mixed_precision: object = False


@dataclass
class AugmentConfig:
    """Training-time augmentation (tf_frcnn.data.augment); all off by default."""

    scales: list | None = None  # multi-scale: shorter side drawn from these per image
    crop_probability: float = 0.0  # chance of a random crop (zoom in) per image
    min_crop: float = 0.5  # a crop keeps at least this fraction of each side
    min_visible: float = 0.5  # a cropped box keeping less of its area is dropped
    brightness: float = 0.0  # max brightness delta, fraction of 255
    contrast: float = 0.0  # contrast factor drawn in [1 - c, 1 + c]
    saturation: float = 0.0  # saturation factor drawn in [1 - s, 1 + s]
    hue: float = 0.0  # max hue delta, in [0, 0.5]


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | voc | coco | tfds | yolo | csv
    root: str | None = None  # VOC root, COCO image dir, or TFDS name
    annotations: str | None = None  # COCO annotation JSON (training)
    eval_annotations: str | None = None  # COCO annotation JSON of the eval split
    eval_root: str | None = None  # COCO image dir of the eval split
    data_dir: str | None = None  # TFDS data dir
    train_split: str = "train"
    eval_split: str = "test"
    # Validation during training (train.eval_every): a split name, or a fraction in
    # (0, 1) of the training split held out by image id; None: no validation.
    val_split: object = None
    image_size: int = 128  # synthetic images' side
    num_train: int = 512  # synthetic images per split
    num_eval: int = 128
    min_size: int = 600
    max_size: int = 1000
    pad_to: list | None = None  # static [H, W] padding
    batch_size: int = 1
    flip: bool = True
    max_boxes: int = 100
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class StageConfig:
    steps: int = 1000
    epochs: float | None = None  # when given, replaces steps: passes over the train split
    learning_rate: float = 1e-3
    decay_steps: list = field(default_factory=list)  # steps at which lr drops 10x
    batch_size: int | None = None  # None: data.batch_size


@dataclass
class TrainConfig:
    schedule: str = "alternating"  # alternating | joint
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: float | None = None
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multiworker
    # false (float32) | float16 | bfloat16: Keras' mixed policy on the backbone and heads
    # (tf_frcnn.precision); true is read as float16. float16 also scales the loss.
    mixed_precision: object = False
    jit_compile: bool = False  # XLA-compile the training step of every stage
    checkpoint_every: int = 200  # steps between checkpoints
    deterministic: bool = False  # TF op determinism: bit-exact resume on CPU
    stages: dict = field(default_factory=dict)  # stage name -> StageConfig fields
    eval_every: int | None = None  # steps between validations (needs data.val_split)
    val_images: int | None = None  # validate on the first N images (None: all)
    patience: int | None = None  # stop a stage after N validations without gain
    minutes: float | None = None  # fit the whole schedule into this wall time


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
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (expected one of: {', '.join(sorted(names))})"
            )
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
                raise ConfigError(
                    f"unknown config key 'train.stages.{stage}.{key}' "
                    f"(expected one of: {', '.join(sorted(names))})"
                )
        # A config written back (the model dir's config.yaml) has both keys, one null.
        if values.get("steps") is not None and values.get("epochs") is not None:
            raise ConfigError(
                f"config keys 'train.stages.{stage}.steps' and '.epochs': give one of them"
            )
        parsed[stage] = StageConfig(**values)
    return parsed


DATA_SOURCES = ("synthetic", "voc", "coco", "tfds", "yolo", "csv")


def choices():
    """{config key: its allowed values}, read from the modules that define them."""
    # Imported here: those modules import this one (ConfigError).
    from tf_frcnn.backbones import BACKBONES
    from tf_frcnn.roi import FILL_MODES
    from tf_frcnn.stages import SCHEDULES
    from tf_frcnn.training.loop import STRATEGIES
    from tf_frcnn.training.optimizers import OPTIMIZERS

    return {
        "model.backbone": BACKBONES,
        "data.source": DATA_SOURCES,
        "roi.fill": FILL_MODES,
        "train.schedule": tuple(SCHEDULES),
        "train.optimizer": tuple(OPTIMIZERS),
        "train.strategy": STRATEGIES,
    }


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
            # "object" fields (a list or "auto", a name or a fraction) check their own values.
            if "None" not in kind and kind != "object":
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


# Accepted values of the precision keys and what they mean (false and float32: no policy;
# true: float16, what the key turned on before it named a type).
PRECISIONS = {
    False: False,
    "float32": False,
    True: "float16",
    "float16": "float16",
    "bfloat16": "bfloat16",
}


def _precision(key, value):
    if not isinstance(value, (bool, str)) or value not in PRECISIONS:
        raise ConfigError(f"config key '{key}' = {value!r} must be false, float16 or bfloat16")
    return PRECISIONS[value]


def _validate(config):
    def between(key, value, low, high):
        if not (low <= value <= high):
            raise ConfigError(f"config key '{key}' = {value} is outside [{low}, {high}]")

    def positive(key, value):
        if value is None or not value > 0:
            raise ConfigError(f"config key '{key}' = {value} must be > 0")

    _check_types(config, "")
    for key, allowed in choices().items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' = {value!r} must be one of {', '.join(allowed)}")

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
    for key in ("anchor_scales", "anchor_ratios"):
        value = getattr(config.model, key)
        if value == "auto":
            continue
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"config key 'model.{key}' = {value!r} must be a list of numbers or 'auto'"
            )
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise ConfigError(
                    f"config key 'model.{key}' = {value!r} must be a list of numbers or 'auto'"
                )
            positive(f"model.{key}", item)
    for key in ("num_anchor_scales", "num_anchor_ratios"):
        positive(f"model.{key}", getattr(config.model, key))
    for value in config.model.fc_units or ():
        positive("model.fc_units", value)
    if config.model.pool_size is not None:
        positive("model.pool_size", config.model.pool_size)
    from tf_frcnn.backbones import tiny_stem_stride

    try:
        tiny_stem_stride(config.model.tiny_channels)
    except ValueError as error:
        raise ConfigError(f"config key 'model.tiny_channels': {error}") from None
    if config.model.dropout is not None:
        between("model.dropout", config.model.dropout, 0.0, 1.0)
    if not config.rpn.min_size >= 0:
        raise ConfigError(f"config key 'rpn.min_size' = {config.rpn.min_size} must be >= 0")
    for value in config.roi.box_stds:
        positive("roi.box_stds", value)
    if len(config.roi.box_stds) != 4:
        raise ConfigError("config key 'roi.box_stds' must have 4 values")
    if config.data.image_size < 16:
        raise ConfigError(f"config key 'data.image_size' = {config.data.image_size} must be >= 16")
    for key in ("num_train", "num_eval"):
        positive(f"data.{key}", getattr(config.data, key))
    if config.data.pad_to is not None:
        if len(config.data.pad_to) != 2:
            raise ConfigError("config key 'data.pad_to' must be [height, width]")
        for value in config.data.pad_to:
            positive("data.pad_to", value)
    positive("train.checkpoint_every", config.train.checkpoint_every)
    config.train.mixed_precision = _precision("train.mixed_precision", config.train.mixed_precision)
    config.detection.mixed_precision = _precision(
        "detection.mixed_precision", config.detection.mixed_precision
    )
    if config.train.jit_compile and config.train.strategy != "default":
        raise ConfigError(
            f"config key 'train.jit_compile' works with train.strategy: default "
            f"only, not {config.train.strategy!r}"
        )
    for key in ("eval_every", "val_images", "patience", "minutes"):
        if getattr(config.train, key) is not None:
            positive(f"train.{key}", getattr(config.train, key))
    val = config.data.val_split
    if (
        val is not None
        and not isinstance(val, str)
        and not (isinstance(val, float) and 0.0 < val < 1.0)
    ):
        raise ConfigError(
            f"config key 'data.val_split' = {val!r} must be a split name or a fraction in (0, 1)"
        )
    if config.train.eval_every is not None and val is None:
        raise ConfigError(
            "config key 'train.eval_every' needs data.val_split (the split to validate on)"
        )
    aug = config.data.augment
    if aug.scales is not None:
        if not aug.scales:
            raise ConfigError("config key 'data.augment.scales' must list at least one size")
        for value in aug.scales:
            positive("data.augment.scales", value)
    for key in (
        "crop_probability",
        "min_crop",
        "min_visible",
        "brightness",
        "contrast",
        "saturation",
    ):
        between(f"data.augment.{key}", getattr(aug, key), 0.0, 1.0)
    between("data.augment.hue", aug.hue, 0.0, 0.5)
    if aug.min_crop <= 0:
        raise ConfigError("config key 'data.augment.min_crop' must be > 0")
    if aug.scales and config.data.pad_to is not None:
        largest = min(max(aug.scales), config.data.max_size or max(aug.scales))
        if min(config.data.pad_to) < largest:
            raise ConfigError(
                f"config key 'data.pad_to' = {list(config.data.pad_to)} must "
                f"hold the largest of 'data.augment.scales' = {list(aug.scales)} "
                f"under data.max_size = {config.data.max_size}: use "
                f"data.pad_to >= [{largest}, {largest}]"
            )
    if config.train.clip_norm is not None:
        positive("train.clip_norm", config.train.clip_norm)
    if config.rpn.negative_iou > config.rpn.positive_iou:
        raise ConfigError("config key 'rpn.negative_iou' must be <= rpn.positive_iou")
    if config.roi.bg_iou_low > config.roi.bg_iou_high:
        raise ConfigError("config key 'roi.bg_iou_low' must be <= roi.bg_iou_high")
    names = config.model.class_names
    if names is not None and len(names) != config.model.num_classes:
        raise ConfigError(
            f"config key 'model.class_names' has {len(names)} names but "
            f"model.num_classes = {config.model.num_classes}"
        )
    from tf_frcnn.stages import PRETRAIN, SCHEDULES

    allowed_stages = [PRETRAIN] + [stage.name for stage in SCHEDULES[config.train.schedule]]
    for stage, stage_config in config.train.stages.items():
        if stage not in allowed_stages:
            raise ConfigError(
                f"config key 'train.stages.{stage}': the {config.train.schedule} "
                f"schedule has stages {', '.join(allowed_stages)}"
            )
        _check_types(stage_config, f"train.stages.{stage}.")
        positive(f"train.stages.{stage}.steps", stage_config.steps)
        if stage_config.epochs is not None:
            positive(f"train.stages.{stage}.epochs", stage_config.epochs)
        positive(f"train.stages.{stage}.learning_rate", stage_config.learning_rate)
        for value in stage_config.decay_steps:
            positive(f"train.stages.{stage}.decay_steps", value)
        if stage_config.batch_size is not None:
            positive(f"train.stages.{stage}.batch_size", stage_config.batch_size)


def config_from_dict(values, source="<dict>"):
    """A validated ``Config`` from a nested dict (as read from YAML)."""
    config = Config()
    values = copy.deepcopy(values or {})
    stages = (
        (values.get("train") or {}).pop("stages", None)
        if isinstance(values.get("train"), dict)
        else None
    )
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


def kwargs_for(function, section, **extra):
    """The fields of config ``section`` that name parameters of ``function`` (a function or
    a class), as its keyword arguments, plus ``extra``: config keys are named after the
    arguments they become (``rpn.nms_iou`` is ``ProposalLayer(nms_iou=...)``)."""
    parameters = inspect.signature(function).parameters
    fields = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return {**{name: value for name, value in fields.items() if name in parameters}, **extra}
