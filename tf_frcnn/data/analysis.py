"""What a dataset looks like to the detector (`tf-frcnn analyze`): box statistics after the
resize, anchor coverage on the model's layout and on the other one (one stride-16 map vs the
pyramid P2-P6), same-class overlap, and the settings they imply.

The jobs live apart: reading the split (`split_boxes`), statistics and coverage (`box_stats`),
the image sizes "auto" resolves to (`image_sizes`), the recommendations (`recommend`), and the
resolution of "auto" keys at `train` (`resolve`). This module composes them.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np

from tf_frcnn.data import anchor_fit, box_stats, image_sizes
from tf_frcnn.data.box_stats import nms_advice, same_class_overlap
from tf_frcnn.data.recommend import recommendations
from tf_frcnn.data.split_boxes import read_split, resize_sides, views

TWO_PER_LEVEL = "fitted_two_per_level"  # the pyramid's fit with model.num_anchor_scales 2


@dataclasses.dataclass
class Analysis:
    """`summary` is what analysis.json holds; the arrays feed the histograms."""

    summary: dict
    sides: dict  # class name ("all" too) -> float [n] box sides, resized px
    ratios: dict  # class name -> float [n] height / width
    best_iou: dict  # class name -> float [n] best IoU, configured anchors
    best_iou_fitted: dict | None  # the same for the fitted anchors, when fitted


@dataclasses.dataclass
class _AnchorSet:
    """One anchor set on one layout: its summary and each box view's best IoU and level."""

    summary: dict
    best: np.ndarray
    level: np.ndarray


def _anchor_set(config, instances, layout, scales, ratios):
    best, level = box_stats.best_iou(config, instances, scales, ratios, layout)
    summary = box_stats.anchor_set_summary(config, instances, scales, ratios, best, layout)
    return _AnchorSet(summary, best, level)


def _layout_sets(config, instances, layout, fit):
    """{"configured": _AnchorSet, "fitted": _AnchorSet (when `fit`)} on `layout`."""
    sets = {
        "configured": _anchor_set(
            config, instances, layout, *box_stats.configured_anchors(config, layout)
        )
    }
    if fit and len(instances.labels):
        fitted = box_stats.fit_config_anchors(config, instances, layout)
        sets["fitted"] = _anchor_set(config, instances, layout, fitted.scales, fitted.ratios)
        if len(fitted.scales) == 1 and layout.pyramid and config.model.num_anchor_scales is None:
            # One size per level leaves most of each octave without an anchor of IoU > 0.7.
            two = box_stats.fit_config_anchors(config, instances, layout, num_scales=2)
            sets[TWO_PER_LEVEL] = _anchor_set(config, instances, layout, two.scales, two.ratios)
    return sets


def _layout_summary(layout, sets, sides):
    return {
        "name": layout.name,
        "finest_stride": layout.finest,
        "under_two_cells": box_stats.under_two_cells(sides, layout.finest),
        **{key: anchor_set.summary for key, anchor_set in sets.items()},
    }


def _layouts(config, instances, sides, sets, fit):
    """{"single": ..., "pyramid": ... (`_layout_summary`), "model": the one the model uses}:
    the model's layout with its anchor `sets`, and the other one for comparison."""
    layout, other = box_stats.layout_of(config), box_stats.other_layout(config)
    own, theirs = ("pyramid", "single") if layout.pyramid else ("single", "pyramid")
    return {
        own: _layout_summary(layout, sets, sides),
        theirs: _layout_summary(other, _layout_sets(config, instances, other, fit), sides),
        "model": own,
    }


def _class_entry(config, layout, mask, view_mask, upright, sets):
    """The per-class row: counts, sides, ratios, coverage (and per level on a pyramid)."""
    rpn, sides, ratios = config.rpn, upright["sides"][mask], upright["ratios"][mask]
    entry = {
        "side": box_stats.percentiles(sides),
        "aspect_ratio": box_stats.percentiles(ratios),
        "under_two_cells": box_stats.under_two_cells(sides, layout.finest),
    }
    for key, name in (("configured", "coverage"), ("fitted", "coverage_fitted")):
        if key in sets:
            best = sets[key].best[view_mask]
            entry[name] = anchor_fit.coverage(best, rpn.positive_iou, rpn.negative_iou)
    if layout.pyramid:
        used = sets.get("fitted", sets["configured"])
        entry["best_level"] = box_stats.level_shares(used.level[view_mask], layout)
    return entry


def _upright(instances, mirrored):
    """Sides, ratios, shorter sides and labels of the unmirrored views."""
    b = instances.boxes[~mirrored].astype(np.float64)
    heights, widths = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return {
        "sides": np.sqrt(heights * widths),
        "ratios": heights / np.maximum(widths, 1e-9),
        "shorter": np.minimum(heights, widths),
        "labels": instances.labels[~mirrored],
    }


def _classes(config, split, instances, layout, upright, sets, overlap):
    """({class name or "all": entry}, {name: (upright mask, view mask)})."""
    groups = [(name, label) for label, name in enumerate(split.class_names, start=1)]
    per_class, masks = {}, {}
    for name, label in groups + [("all", None)]:
        box_mask = np.ones(len(split.labels), bool) if label is None else split.labels == label
        mask = upright["labels"] == label if label else np.ones(len(upright["labels"]), bool)
        view = instances.labels == label if label else np.ones(len(instances.labels), bool)
        per_class[name] = {
            "boxes": int(np.sum(box_mask)),
            "images": int(len(np.unique(split.image_index[box_mask]))),
            **_class_entry(config, layout, mask, view, upright, sets),
            "same_class_overlap": box_stats.percentiles(overlap[box_mask]),
        }
        masks[name] = (mask, view)
    return per_class, masks


def _summary(config, split, plan, layouts, per_class, nms):
    counts = np.bincount(split.image_index, minlength=len(split.image_shapes))
    return {
        "source": split.source,
        "split": split.split,
        "resize": {
            "min_size": config.data.min_size,
            "max_size": config.data.max_size,
            "shorter_sides": resize_sides(config),
            "flip_views": bool(config.data.flip),
        },
        "sizes": plan,
        "images": int(len(split.image_shapes)),
        "images_without_boxes": int(np.sum(counts == 0)),
        "boxes": int(len(split.labels)),
        "excluded_difficult_or_crowd": split.excluded,
        "images_over_max_boxes": int(np.sum(counts > config.data.max_boxes)),
        "max_boxes_in_an_image": int(counts.max()) if counts.size else 0,
        "reader": split.reader,
        "positive_iou": config.rpn.positive_iou,
        "negative_iou": config.rpn.negative_iou,
        "layouts": layouts,
        "nms": nms,
        "classes": per_class,
    }


def analyze(config, split=None, fit=False) -> Analysis:
    """Analyses the training split (or `split`) of `config`: sizes "auto" resolved first,
    anchors fitted when `fit` or when model.anchor_scales / anchor_ratios is "auto", on the
    config's layout and on the other (pyramid vs one map) for comparison."""
    start = time.perf_counter()
    split_boxes = read_split(config, split)
    plan = image_sizes.size_plan(config, split_boxes)
    plan["text"] = image_sizes.plan_text(config, plan)
    config = image_sizes.apply_plan(copy.deepcopy(config), plan)
    fit = fit or "auto" in (config.model.anchor_scales, config.model.anchor_ratios)
    instances, mirrored = views(split_boxes, config)
    upright = _upright(instances, mirrored)
    layout = box_stats.layout_of(config)
    sets = _layout_sets(config, instances, layout, fit)
    layouts = _layouts(config, instances, upright["sides"], sets, fit)
    overlap = same_class_overlap(split_boxes)
    nms = nms_advice(overlap, config.detection.nms_iou)
    per_class, masks = _classes(config, split_boxes, instances, layout, upright, sets, overlap)
    summary = _summary(config, split_boxes, plan, layouts, per_class, nms)
    summary["anchors"] = {
        "base_size": layout.base_sizes[0],
        "stride": layout.finest,
        "layout": layout.name,
        **{key: anchor_set.summary for key, anchor_set in sets.items()},
    }
    summary["recommendations"] = recommendations(
        config, summary, upright["sides"], upright["shorter"]
    )
    summary["seconds"] = round(time.perf_counter() - start, 2)
    fitted = "fitted" in sets
    return Analysis(
        summary,
        {name: upright["sides"][mask] for name, (mask, _) in masks.items()},
        {name: upright["ratios"][mask] for name, (mask, _) in masks.items()},
        {name: sets["configured"].best[view] for name, (_, view) in masks.items()},
        {name: sets["fitted"].best[view] for name, (_, view) in masks.items()} if fitted else None,
    )
