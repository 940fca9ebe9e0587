"""Turning a config's "auto" keys into numbers when training starts: the image sizes
(`image_sizes`) first, then the anchors fitted on boxes of those sizes (`box_stats`). A fresh
run resolves them on the training split and the model dir's config.yaml records the numbers; a
resumed run (or `eval` of a model dir) takes the recorded ones, so the network keeps the shapes
and sizes it was trained with.
"""

from __future__ import annotations

import copy
import os

from tf_frcnn.config import ConfigError
from tf_frcnn.data import box_stats, image_sizes
from tf_frcnn.data.split_boxes import read_split, views
from tf_frcnn.rundir import CONFIG_FILE, read_config

SIZE_KEYS = ("min_size", "max_size")
ANCHOR_KEYS = ("anchor_scales", "anchor_ratios")


def _recorded(config, model_dir, section, keys):
    """A copy of `config` with `keys` of `section` ("model" or "data") as the model dir's
    config.yaml recorded them."""

    recorded = getattr(read_config(model_dir), section)
    resolved = copy.deepcopy(config)
    for key in keys:
        if getattr(recorded, key) == "auto":
            raise ConfigError(
                f"{os.path.join(model_dir, CONFIG_FILE)}: {section}.{key} is 'auto', not "
                "the resolved numbers; train the model dir afresh"
            )
        setattr(getattr(resolved, section), key, copy.deepcopy(getattr(recorded, key)))
    if section == "data":
        resolved.data.augment.scales = recorded.augment.scales
    return resolved


def resolve_sizes(config, model_dir=None, log=None):
    """`config` with data.min_size / max_size "auto" replaced by numbers (and augment.scales
    adjusted, see `image_sizes`); a config without "auto" is returned as is.

    Args:
      model_dir: a trained or resumed run: take its config.yaml's sizes.
      log: callable taking one line (e.g. print), told the sizes and why.
    Returns:
      a copy of `config` (the input is not modified).
    """
    if "auto" not in (config.data.min_size, config.data.max_size):
        return config
    if model_dir is not None:
        return _recorded(config, model_dir, "data", SIZE_KEYS)
    plan = image_sizes.size_plan(config, read_split(config))
    if log:
        log(image_sizes.plan_text(config, plan))
    return image_sizes.apply_plan(copy.deepcopy(config), plan)


def fit_text(before, after, positive_iou):
    return (
        f"boxes with an anchor of IoU > {positive_iou:g} {before['coverage']:.2f} -> "
        f"{after['coverage']:.2f}, boxes whose best is a would-be negative "
        f"{before['below_negative']:.2f} -> {after['below_negative']:.2f} (class means)"
    )


def sides_text(anchors):
    sides = "/".join(f"{side:.4g}" for side in anchors["sides"])
    ratios = "/".join(f"{ratio:g}" for ratio in anchors["ratios"])
    where = "" if anchors["layout"].startswith("stride") else f" on {anchors['layout']}, doubling"
    return f"{sides} px{where} x {ratios}"


def resolve_anchors(config, model_dir=None, log=None):
    """`config` with "auto" anchors replaced by numbers, for building a model.

    A fresh run fits them on the training split (`box_stats.fit_config_anchors`, on each
    pyramid level's grid with model.fpn); a resumed run (`model_dir` given) takes the ones its
    config.yaml recorded. A config without "auto" is returned as is.

    Args:
      log: callable taking one line (e.g. print), told the anchors and their coverage.
    Returns:
      a copy of `config` (the input is not modified) with model.anchor_scales / anchor_ratios
      lists.
    Raises:
      ConfigError when the recorded config still says "auto" or the split has no boxes.
    """
    if "auto" not in (config.model.anchor_scales, config.model.anchor_ratios):
        return config
    if model_dir is not None:
        return _recorded(config, model_dir, "model", ANCHOR_KEYS)
    original = config
    split = read_split(config)
    if "auto" in (config.data.min_size, config.data.max_size):  # fitted at the resolved sizes
        config = image_sizes.apply_plan(copy.deepcopy(config), image_sizes.size_plan(config, split))
    instances, _ = views(split, config)
    if not len(instances.labels):
        raise ConfigError(
            f"model.anchor_scales/anchor_ratios 'auto': the training split "
            f"{split.split!r} has no boxes to fit anchors to"
        )
    fitted = box_stats.fit_config_anchors(config, instances)
    before = box_stats.anchor_set_summary(config, instances, *box_stats.configured_anchors(config))
    after = box_stats.anchor_set_summary(config, instances, fitted.scales, fitted.ratios)
    resolved = copy.deepcopy(original)
    resolved.model.anchor_scales = fitted.scales
    resolved.model.anchor_ratios = fitted.ratios
    if log:
        log(
            f"anchors fitted to {len(split.labels)} training boxes: scales {fitted.scales} x "
            f"ratios {fitted.ratios} ({sides_text(after)}); before the fit "
            f"({sides_text(before)}) -> after: "
            f"{fit_text(before, after, config.rpn.positive_iou)}"
        )
    return resolved


def resolve_config(config, model_dir=None, log=None):
    """The "auto" image sizes, then the "auto" anchors fitted at those sizes, as numbers
    (both read back from ``model_dir``'s config.yaml when it has them)."""
    config = resolve_sizes(config, model_dir=model_dir, log=log)
    return resolve_anchors(config, model_dir=model_dir, log=log)
