"""Configuration: defaults in code, YAML files override them.

This is the one edge where configuration enters: ``build_model`` and the training code read a
``Config``; layers only take explicit arguments. The dataclasses below hold every default (the
paper's values; tests/test_config.py pins those that layers also default to), and config keys
are named after the arguments they become (``kwargs_for``). Config imports only leaves (the
choice lists, the stage table). Unknown keys are an error that names the key.
"""

import contextlib
import copy
import dataclasses
import inspect
import os
import typing
from dataclasses import dataclass, field

import yaml

from tf_frcnn.choices import (
    BACKBONES,
    DATA_SOURCES,
    FILL_MODES,
    LR_SCHEDULES,
    OPTIMIZERS,
    SELECT_BY,
    STRATEGIES,
)
from tf_frcnn.stages import PRETRAIN, SCHEDULES


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


def _positive(default=None, factory=None):
    """A field whose value (each value, for a list) must be > 0 where it is set."""
    if factory is not None:
        return field(default_factory=factory, metadata={"positive": True})
    return field(default=default, metadata={"positive": True})


def _fraction(default=None, high=1.0):
    """A field whose value must lie in [0, ``high``] where it is set."""
    return field(default=default, metadata={"range": (0.0, high)})


@dataclass
class FPNConfig:
    """The feature pyramid (tf_frcnn.fpn, docs/fpn.md); ``model.fpn: null`` is the paper's
    single stride-16 map. Level l has stride 2**l."""

    min_level: int = _positive(2)  # finest level (P2: stride 4)
    max_level: int = _positive(6)  # the RPN's coarsest; P6 subsamples P5, RPN only
    channels: int = _positive(256)  # of every level (64 suits MobileNet at alpha 0.25)
    separable: bool = False  # separable 3x3 output convs
    roi_canonical_size: float = _positive(224.0)  # a ROI of this side pools from...
    roi_canonical_level: int = _positive(4)  # ...this level (FPN Eq. 1)


@dataclass
class ModelConfig:
    backbone: str = "vgg16"  # vgg16 | resnet50 | mobilenet | tiny
    weights: str | None = None  # None | "imagenet" | path to a weights file
    alpha: float = _positive(0.25)  # MobileNet width multiplier
    tiny_channels: list = field(default_factory=lambda: [16, 32, 64, 128])  # tiny: one per stage
    num_classes: int = _positive(20)
    class_names: list | None = None  # len == num_classes when given
    rpn_channels: int = _positive(512)  # 256 for small backbones
    anchor_base_size: int = _positive(16)
    # A list, or "auto": fitted to the training boxes when training starts
    # (tf_frcnn.data.resolve.resolve_anchors); the model dir's config.yaml keeps the result.
    anchor_scales: object = field(default_factory=lambda: [8, 16, 32])
    anchor_ratios: object = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Scales fitted for anchor_scales: auto; with model.fpn, sizes per level (each doubling per
    # level). None: 3, or 1 per level with model.fpn.
    num_anchor_scales: int | None = _positive()
    num_anchor_ratios: int = _positive(3)  # ratios fitted for anchor_ratios: auto
    pool_size: int | None = _positive()  # None: the backbone's (7 for VGG16)
    # Detector fc layers and their dropout; None: the backbone's (backbones.head_defaults).
    fc_units: list | None = _positive()
    dropout: float | None = _fraction()
    fpn: FPNConfig | None = None  # None: the paper's single stride-16 map


@dataclass
class RPNConfig:
    # an anchor at IoU > positive_iou with a box is positive, below negative_iou with every box
    # negative; batch_size anchors sampled per image, at most positive_fraction of them positive
    positive_iou: float = _fraction(0.7)
    negative_iou: float = _fraction(0.3)
    batch_size: int = _positive(256)
    positive_fraction: float = _fraction(0.5)
    ignore_cross_boundary: bool = True
    lambda_reg: float = 10.0
    # The box loss's smooth L1 switches from quadratic to linear at this |error| (the paper's
    # 1; torchvision's FPN RPN 1/9, the pyramid's default: PYRAMID_DEFAULTS).
    smooth_l1_beta: float = _positive(1.0)
    train_pre_nms: int = _positive(12000)
    train_post_nms: int = _positive(2000)
    test_pre_nms: int = _positive(6000)
    test_post_nms: int = _positive(300)
    nms_iou: float = _fraction(0.7)
    min_size: float = 16.0


@dataclass
class ROIConfig:
    num_rois: int = _positive(128)  # sampled per image
    fg_fraction: float = _fraction(0.25)  # foreground at most
    fg_iou: float = _fraction(0.5)  # foreground: IoU >= this
    # background: best IoU in [bg_iou_low, bg_iou_high)
    bg_iou_low: float = _fraction(0.1)
    bg_iou_high: float = _fraction(0.5)
    fill: str = "negatives"  # negatives | zeros | top_iou
    box_stds: list = _positive(factory=lambda: [0.1, 0.1, 0.2, 0.2])


@dataclass
class DetectionConfig:
    nms_iou: float = _fraction(0.3)
    score_threshold: float = _fraction(0.05)
    max_detections: int = _positive(100)
    # Precision of inference, evaluation and export: false (float32) | float16 | bfloat16
    # (tf_frcnn.precision). Independent of train.mixed_precision.
    mixed_precision: object = False


@dataclass
class AugmentConfig:
    """Training-time augmentation (tf_frcnn.data.augment); all off by default."""

    scales: list | None = _positive()  # multi-scale: shorter side drawn from these per image
    crop_probability: float = _fraction(0.0)  # chance of a random crop (zoom in) per image
    min_crop: float = _fraction(0.5)  # a crop keeps at least this fraction of each side
    min_visible: float = _fraction(0.5)  # a cropped box keeping less of its area is dropped
    brightness: float = _fraction(0.0)  # max brightness delta, fraction of 255
    contrast: float = _fraction(0.0)  # contrast factor drawn in [1 - c, 1 + c]
    saturation: float = _fraction(0.0)  # saturation factor drawn in [1 - s, 1 + s]
    hue: float = _fraction(0.0, high=0.5)  # max hue delta


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
    num_train: int = _positive(512)  # synthetic images per split
    num_eval: int = _positive(128)
    # Shorter side and cap on the longer side, pixels, or "auto": resolved from the training
    # boxes when training starts (tf_frcnn.data.resolve.resolve_sizes, the rule in
    # tf_frcnn.data.image_sizes); the model dir's config.yaml keeps the numbers.
    min_size: object = 600
    max_size: object = 1000
    pad_to: list | None = _positive()  # static [H, W] padding
    batch_size: int = _positive(1)
    flip: bool = True
    max_boxes: int = _positive(100)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class StageConfig:
    steps: int = _positive(1000)
    epochs: float | None = _positive()  # when given, replaces steps: passes over the train split
    learning_rate: float = _positive(1e-3)
    # constant | step (10x drops at decay_steps; none: constant) | cosine (tf_frcnn.training.lr)
    lr_schedule: str = "step"
    decay_steps: list = _positive(factory=list)  # steps at which lr drops 10x
    warmup_steps: int | None = _positive()  # linear warm-up over these steps, or...
    warmup_fraction: float | None = _fraction()  # ...over this fraction of the stage's steps
    final_lr_fraction: float = _fraction(0.05)  # cosine: the rate at the last step, x lr
    batch_size: int | None = _positive()  # None: data.batch_size


@dataclass
class EMAConfig:
    """An exponential moving average of the trained weights (tf_frcnn.training.ema), as
    Ultralytics' ModelEMA: decay_t = decay * (1 - exp(-updates / warmup))."""

    decay: float = _fraction(0.9999)
    warmup: float = _positive(2000.0)  # updates over which the decay ramps up (tau)


@dataclass
class TrainConfig:
    schedule: str = "alternating"  # alternating | joint
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: float | None = _positive()
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multiworker
    # false (float32) | float16 | bfloat16: Keras' mixed policy on the backbone and heads
    # (tf_frcnn.precision); true is read as float16. float16 also scales the loss.
    mixed_precision: object = False
    jit_compile: bool = False  # XLA-compile the training step of every stage
    checkpoint_every: int = _positive(200)  # steps between checkpoints
    deterministic: bool = False  # TF op determinism: bit-exact resume on CPU
    stages: dict = field(default_factory=dict)  # stage name -> StageConfig fields
    eval_every: int | None = _positive()  # steps between validations (needs data.val_split)
    val_images: int | None = _positive()  # validate on the first N images (None: all)
    patience: int | None = _positive()  # stop a stage after N validations without gain
    # A gain below this is no gain for patience (the best weights still follow any gain).
    min_delta: float = _fraction(0.0)
    # Detector stages' selection and stopping metric: fitness (0.9 AP + 0.1 mAP50) | mAP50 | AP
    select_by: str = "fitness"
    minutes: float | None = _positive()  # fit the whole schedule into this wall time
    # Under train.minutes, validations take at most this share of a stage's time: once they
    # are measured the interval grows to a multiple of eval_every (null: eval_every as given).
    validation_share: float | None = _fraction(0.1)
    # Under train.minutes the final stage trains to the deadline unless this is true.
    stop_final_stage: bool = False
    ema: EMAConfig | None = None  # weight averaging; true: the defaults
    log_every: int = _positive(50)  # steps between log lines (train --log-format lines)


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


def _optional_section(section, key):
    """The dataclass of an optional section field (``FPNConfig | None``), else None."""
    kind = next(f.type for f in dataclasses.fields(section) if f.name == key)
    return next((t for t in typing.get_args(kind) if dataclasses.is_dataclass(t)), None)


def _merge(section, values, prefix):
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (expected one of: {', '.join(sorted(names))})"
            )
        current = getattr(section, key)
        optional = _optional_section(section, key)
        if optional and isinstance(value, bool):
            # An optional section (train.ema) switched on with its defaults, or off.
            setattr(section, key, optional() if value else None)
            continue
        if current is None and isinstance(value, dict) and optional:
            # An optional section (model.fpn) set by a mapping: its defaults, then the values.
            current = optional()
            setattr(section, key, current)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix}{key}' must be a mapping")
            _merge(current, value, f"{prefix}{key}.")
        else:
            setattr(section, key, value)


def _stages(values):
    """{stage name: StageConfig} of the mapping ``train.stages``."""
    stages = {}
    for stage, settings in (values or {}).items():
        if not isinstance(settings, dict):
            raise ConfigError(f"config key 'train.stages.{stage}' must be a mapping")
        stages[stage] = StageConfig()
        _merge(stages[stage], settings, f"train.stages.{stage}.")
        # A config written back (the model dir's config.yaml) has both keys, one null.
        if settings.get("steps") is not None and settings.get("epochs") is not None:
            raise ConfigError(
                f"config keys 'train.stages.{stage}.steps' and '.epochs': give one of them"
            )
    return stages


def choices():
    """{config key: its allowed values} (``tf_frcnn.choices``, the stage table)."""
    return {
        "model.backbone": BACKBONES,
        "data.source": DATA_SOURCES,
        "roi.fill": FILL_MODES,
        "train.schedule": tuple(SCHEDULES),
        "train.optimizer": OPTIMIZERS,
        "train.strategy": STRATEGIES,
        "train.select_by": SELECT_BY,
    }


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive(key, value):
    for item in value if isinstance(value, list) else [value]:
        if not item > 0:
            raise ConfigError(f"config key '{key}' = {item} must be > 0")


def _check_fields(section, prefix):
    """Each value has its field's type (ints are fine where floats are expected; None only
    where the default is None) and lies in its field's range (``_positive``, ``_fraction``)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{key}.")
            continue
        # ``int | None`` is (int, NoneType); a plain annotation has no args.
        kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        if value is None:
            # "object" fields (a list or "auto", a name or a fraction) check their own values.
            if kind is not object and not typing.get_args(f.type):
                raise ConfigError(f"config key '{key}' must not be null")
            continue
        if kind is float and isinstance(value, str):
            # PyYAML reads 1e-3 (no dot) as a string.
            with contextlib.suppress(ValueError):
                value = float(value)
                setattr(section, f.name, value)
        accepted = (int, float) if kind is float else kind
        # A bool is an int to Python, but not a number in a config.
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind in (int, float)):
            raise ConfigError(f"config key '{key}' = {value!r} must be of type {kind.__name__}")
        if f.metadata.get("positive"):
            _check_positive(key, value)
        if "range" in f.metadata:
            low, high = f.metadata["range"]
            if not low <= value <= high:
                raise ConfigError(f"config key '{key}' = {value} is outside [{low}, {high}]")


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
    """The checks across fields, after ``_check_fields``' of each field on its own."""
    _check_fields(config, "")
    _check_choices(config)
    _check_model(config)
    _check_data(config)
    _check_train(config)


def _check_choices(config):
    for key, allowed in choices().items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' = {value!r} must be one of {', '.join(allowed)}")


def _check_model(config):
    """The model's, the RPN's, the ROI sampler's and detection's keys."""
    for key in ("anchor_scales", "anchor_ratios"):
        value = getattr(config.model, key)
        if value == "auto":
            continue
        if not isinstance(value, list) or not value or not all(map(_is_number, value)):
            raise ConfigError(
                f"config key 'model.{key}' = {value!r} must be a list of numbers or 'auto'"
            )
        _check_positive(f"model.{key}", value)
    for key in ("min_size", "max_size"):
        value = getattr(config.data, key)
        if value != "auto" and not (_is_number(value) and int(value) == value and value > 0):
            raise ConfigError(
                f"config key 'data.{key}' = {value!r} must be a positive int or 'auto'"
            )
    channels = config.model.tiny_channels
    if not 2 <= len(channels) <= 4 or not all(_is_number(c) and int(c) == c > 0 for c in channels):
        raise ConfigError(
            f"config key 'model.tiny_channels' = {list(channels)} must be 2 to 4 positive "
            "integers (one per stage)"
        )
    if not config.rpn.min_size >= 0:
        raise ConfigError(f"config key 'rpn.min_size' = {config.rpn.min_size} must be >= 0")
    if len(config.roi.box_stds) != 4:
        raise ConfigError("config key 'roi.box_stds' must have 4 values")
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
    config.detection.mixed_precision = _precision(
        "detection.mixed_precision", config.detection.mixed_precision
    )


def _check_data(config):
    if config.data.image_size < 16:
        raise ConfigError(f"config key 'data.image_size' = {config.data.image_size} must be >= 16")
    if config.data.pad_to is not None and len(config.data.pad_to) != 2:
        raise ConfigError("config key 'data.pad_to' must be [height, width]")
    val = config.data.val_split
    fraction = isinstance(val, float) and 0.0 < val < 1.0
    if val is not None and not isinstance(val, str) and not fraction:
        raise ConfigError(
            f"config key 'data.val_split' = {val!r} must be a split name or a fraction in (0, 1)"
        )
    aug = config.data.augment
    if aug.scales is not None and not aug.scales:
        raise ConfigError("config key 'data.augment.scales' must list at least one size")
    if aug.min_crop <= 0:
        raise ConfigError("config key 'data.augment.min_crop' must be > 0")
    if aug.scales and config.data.pad_to is not None and config.data.max_size != "auto":
        largest = min(max(aug.scales), config.data.max_size or max(aug.scales))
        if min(config.data.pad_to) < largest:
            raise ConfigError(
                f"config key 'data.pad_to' = {list(config.data.pad_to)} must "
                f"hold the largest of 'data.augment.scales' = {list(aug.scales)} "
                f"under data.max_size = {config.data.max_size}: use "
                f"data.pad_to >= [{largest}, {largest}]"
            )


def _check_train(config):
    config.train.mixed_precision = _precision("train.mixed_precision", config.train.mixed_precision)
    if config.train.jit_compile and config.train.strategy != "default":
        raise ConfigError(
            f"config key 'train.jit_compile' works with train.strategy: default "
            f"only, not {config.train.strategy!r}"
        )
    if config.train.eval_every is not None and config.data.val_split is None:
        raise ConfigError(
            "config key 'train.eval_every' needs data.val_split (the split to validate on)"
        )
    allowed_stages = [PRETRAIN] + [stage.name for stage in SCHEDULES[config.train.schedule]]
    for stage, stage_config in config.train.stages.items():
        if stage not in allowed_stages:
            raise ConfigError(
                f"config key 'train.stages.{stage}': the {config.train.schedule} "
                f"schedule has stages {', '.join(allowed_stages)}"
            )
        _check_fields(stage_config, f"train.stages.{stage}.")
        _check_lr_schedule(stage_config, f"train.stages.{stage}.")


def _check_lr_schedule(stage_config, prefix):
    kind = stage_config.lr_schedule
    if kind not in LR_SCHEDULES:
        raise ConfigError(
            f"config key '{prefix}lr_schedule' = {kind!r} must be one of {', '.join(LR_SCHEDULES)}"
        )
    if stage_config.decay_steps and kind != "step":
        raise ConfigError(f"config key '{prefix}decay_steps' needs lr_schedule: step, not {kind!r}")
    if stage_config.warmup_steps is not None and stage_config.warmup_fraction is not None:
        raise ConfigError(
            f"config keys '{prefix}warmup_steps' and '.warmup_fraction': give one of them"
        )


# With model.fpn, the values the keys below take unless the config gives them: one anchor scale
# per level, an RPN conv as wide as the levels ("fpn.channels"), the box loss weighed 1:1 (its
# Nreg is then the sampled anchors) with torchvision's smooth L1 (beta 1/9), torchvision's
# pre-NMS counts (per level on a pyramid), and no proposal dropped for its size but the empty
# ones (torchvision's 1e-3 px), so 20 px objects keep theirs. The single-level model keeps the
# paper's values of the dataclasses above.
PYRAMID_DEFAULTS = {
    ("model", "anchor_scales"): [8.0],
    ("model", "rpn_channels"): "fpn.channels",
    ("rpn", "lambda_reg"): 1.0,
    ("rpn", "smooth_l1_beta"): 1.0 / 9.0,
    ("rpn", "train_pre_nms"): 2000,
    ("rpn", "test_pre_nms"): 1000,
    ("rpn", "min_size"): 1e-3,
}


def apply_pyramid_defaults(config, given=()):
    """Give each ``PYRAMID_DEFAULTS`` key of ``config`` (which has ``model.fpn``) that is not
    in ``given`` ("section.key" names, the keys a file set) the pyramid's value, in place.
    ``config_from_dict`` calls it, so a file's explicit value, the paper's included, is kept;
    code that sets ``model.fpn`` on a built ``Config`` calls it itself."""
    for (section, key), value in PYRAMID_DEFAULTS.items():
        if f"{section}.{key}" not in given:
            value = config.model.fpn.channels if value == "fpn.channels" else copy.copy(value)
            setattr(getattr(config, section), key, value)
    return config


def config_from_dict(values, source="<dict>"):
    """A validated ``Config`` from a nested dict (as read from YAML)."""
    config = Config()
    values = copy.deepcopy(values or {})
    train = values.get("train")
    stages = train.pop("stages", None) if isinstance(train, dict) else None
    try:
        _merge(config, values, "")
        config.train.stages = _stages(stages)
        if config.model.fpn is not None:
            parts = {name: part for name, part in values.items() if isinstance(part, dict)}
            apply_pyramid_defaults(
                config, {f"{n}.{key}" for n, part in parts.items() for key in part}
            )
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
