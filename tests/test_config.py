import glob
import os

import pytest

from tf_frcnn import ConfigError, load_config
from tf_frcnn.config import Config, config_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_the_papers():
    config = Config()
    assert (config.rpn.positive_iou, config.rpn.negative_iou) == (0.7, 0.3)
    assert (config.rpn.batch_size, config.rpn.positive_fraction) == (256, 0.5)
    assert config.rpn.lambda_reg == 10.0
    assert (config.rpn.train_pre_nms, config.rpn.train_post_nms) == (12000, 2000)
    assert (config.rpn.test_pre_nms, config.rpn.test_post_nms) == (6000, 300)
    assert config.rpn.nms_iou == 0.7 and config.rpn.ignore_cross_boundary
    assert (config.roi.num_rois, config.roi.fg_fraction, config.roi.fg_iou) == (128, 0.25, 0.5)
    assert (config.roi.bg_iou_low, config.roi.bg_iou_high, config.roi.fill) == (
        0.1,
        0.5,
        "negatives",
    )
    assert (
        config.detection.nms_iou,
        config.detection.score_threshold,
        config.detection.max_detections,
    ) == (0.3, 0.05, 100)
    assert (
        config.model.anchor_base_size,
        config.model.anchor_scales,
        config.model.anchor_ratios,
    ) == (16, [8, 16, 32], [0.5, 1.0, 2.0])
    assert (config.data.min_size, config.data.max_size) == (600, 1000)
    assert (config.train.momentum, config.train.weight_decay) == (0.9, 5e-4)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.model.num_classes > 0


def test_paper_config_schedule():
    config = load_config(os.path.join(ROOT, "configs", "voc07_vgg16.yaml"))
    stages = config.train.stages
    assert [stages[s].steps for s in ("rpn1", "detector2", "rpn3", "detector4")] == [
        80000,
        40000,
        80000,
        40000,
    ]
    assert stages["rpn1"].decay_steps == [60000] and stages["rpn1"].learning_rate == 1e-3
    assert (stages["rpn1"].batch_size, stages["detector2"].batch_size) == (1, 2)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"model": {"bogus": 1}}, "model.bogus"),
        ({"nonsense": {}}, "nonsense"),
        ({"train": {"stages": {"rpn1": {"stepz": 3}}}}, "train.stages.rpn1.stepz"),
        ({"roi": {"fg_fraction": 1.5}}, "roi.fg_fraction"),
        ({"rpn": {"nms_iou": -0.1}}, "rpn.nms_iou"),
        ({"data": {"min_size": -5}}, "data.min_size"),
        ({"roi": {"fill": "ones"}}, "roi.fill"),
        ({"model": {"num_classes": 2, "class_names": ["a"]}}, "model.class_names"),
    ],
)
def test_bad_configs_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(values)


def test_overrides_merge_and_do_not_mutate_input():
    values = {"train": {"stages": {"rpn1": {"steps": 5}}}, "rpn": {"min_size": 4}}
    config = config_from_dict(values)
    assert config.train.stages["rpn1"].steps == 5 and config.rpn.min_size == 4
    assert config.rpn.batch_size == 256
    assert "stages" in values["train"]


def test_round_trip_through_yaml(tmp_path):
    import yaml

    config = load_config(os.path.join(ROOT, "configs", "smoke.yaml"))
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "values, key",
    [
        ({"data": {"batch_size": "two"}}, "data.batch_size"),
        ({"data": {"source": "imagenet"}}, "data.source"),
        ({"model": {"backbone": "vgg19"}}, "model.backbone"),
        ({"model": {"anchor_base_size": -16}}, "model.anchor_base_size"),
        ({"rpn": {"min_size": -1}}, "rpn.min_size"),
        ({"rpn": {"negative_iou": 0.8}}, "rpn.negative_iou"),
        ({"train": {"stages": {"rpn99": {"steps": 3}}}}, "train.stages.rpn99"),
        (
            {"train": {"stages": {"rpn1": {"learning_rate": float("nan")}}}},
            "train.stages.rpn1.learning_rate",
        ),
        ({"model": {"num_classes": None}}, "model.num_classes"),
    ],
)
def test_wrong_types_choices_and_orders_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(values)


def test_exponent_without_dot_is_a_float():
    config = config_from_dict({"train": {"stages": {"rpn1": {"learning_rate": "1e-3"}}}})
    assert config.train.stages["rpn1"].learning_rate == 1e-3


def test_tiny_channels_are_checked_by_key():
    from tf_frcnn.config import ConfigError, config_from_dict

    assert config_from_dict({"model": {"tiny_channels": [16, 32, 96]}}).model.tiny_channels == [
        16,
        32,
        96,
    ]
    for bad in ([16], [16, 32, 64, 128, 256], [16, -1], [16, 2.5]):
        with pytest.raises(ConfigError, match="model.tiny_channels"):
            config_from_dict({"model": {"tiny_channels": bad}})


def test_choice_lists_name_what_the_modules_implement():
    from tf_frcnn import choices
    from tf_frcnn.training.loop import STRATEGIES
    from tf_frcnn.training.optimizers import OPTIMIZERS

    assert choices.OPTIMIZERS == tuple(OPTIMIZERS)
    assert choices.STRATEGIES == tuple(STRATEGIES)


def test_config_defaults_are_the_layers_own():
    """The config holds the defaults; the layers (owned elsewhere) keep the same ones for
    direct use: they must not drift apart."""
    import dataclasses
    import inspect

    from tf_frcnn.anchors import AnchorGenerator
    from tf_frcnn.backbones import build_backbone
    from tf_frcnn.config import kwargs_for
    from tf_frcnn.head import postprocess_detections
    from tf_frcnn.proposals import ProposalLayer
    from tf_frcnn.roi import sample_rois
    from tf_frcnn.rpn import RPNHead, anchor_targets, rpn_loss

    config = config_from_dict({})
    pairs = [
        (build_backbone, config.model, {"alpha": "alpha", "tiny_channels": "tiny_channels"}),
        (RPNHead, config.model, {"channels": "rpn_channels"}),
        (
            AnchorGenerator,
            config.model,
            {f: f"anchor_{f}" for f in ("base_size", "scales", "ratios")},
        ),
    ]
    for function, section, names in pairs:
        parameters = inspect.signature(function).parameters
        for argument, key in names.items():
            default = parameters[argument].default
            value = getattr(section, key)
            assert (list(default) if isinstance(default, tuple) else default) == value, key
    for function, section in [
        (anchor_targets, config.rpn),
        (rpn_loss, config.rpn),
        (ProposalLayer, config.rpn),
        (sample_rois, config.roi),
        (postprocess_detections, config.detection),
    ]:
        parameters = inspect.signature(function).parameters
        args = kwargs_for(function, section)
        assert args, function
        for name, value in args.items():
            default = parameters[name].default
            assert (list(default) if isinstance(default, tuple) else default) == value, name
    assert dataclasses.is_dataclass(config.rpn)
