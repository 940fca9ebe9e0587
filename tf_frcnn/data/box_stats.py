"""Statistics of a split's boxes after the resize, and how an anchor layout covers them.

Sizes are in pixels of the resized image: box side sqrt(height * width) and aspect ratio
height / width as percentiles per class; anchor coverage (`anchor_fit`) on the layout the model
uses (one stride-16 map, or each pyramid level's own grid with model.fpn); "under two cells":
side < 2 * the finest stride in use (16 on one level, 2**min_level on a pyramid), too small for
any grid in use to place a well overlapping anchor; the level of each box's best anchor (on a
pyramid); same-class overlap: each box's highest IoU with another box of its class in its
image (0 when none).
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.anchors import PYRAMID_SCALES, level_scales, pyramid_levels
from tf_frcnn.backbones import STRIDE
from tf_frcnn.config import FPNConfig, ModelConfig
from tf_frcnn.data import anchor_fit

PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
OVERLAP_PERCENTILE = 99  # same-class overlap percentile the NMS threshold must exceed
NMS_RANGE = (0.3, 0.7)


def layout_of(config, fpn=None) -> anchor_fit.Layout:
    """The anchor levels of `config`'s model (`fpn` given: of that pyramid; False: one level)."""
    fpn = config.model.fpn if fpn is None else fpn
    if fpn:
        return anchor_fit.Layout.levels(pyramid_levels(fpn))
    return anchor_fit.Layout.single(STRIDE, config.model.anchor_base_size)


def other_layout(config) -> anchor_fit.Layout:
    """The layout to compare with: one stride-16 map for a pyramid, a default pyramid (P2-P6)
    for one map."""
    return layout_of(config, False if config.model.fpn else FPNConfig())


def configured_anchors(config, layout=None):
    """(scales, ratios) a model on `layout` (default the config's) would use now: the config's
    lists, or for "auto" the layout's defaults (the paper's 8/16/32, the pyramid's 8), which
    the fit is compared with. A list on the other layout than the config's: its default."""
    layout = layout or layout_of(config)
    m, defaults = config.model, ModelConfig()
    ratios = defaults.anchor_ratios if m.anchor_ratios == "auto" else m.anchor_ratios
    own = layout.pyramid == bool(m.fpn)
    if m.anchor_scales == "auto" or not own:
        scales = PYRAMID_SCALES if layout.pyramid else defaults.anchor_scales
    else:
        scales = level_scales(m.anchor_scales, m.fpn)
    return [float(s) for s in scales], [float(r) for r in ratios]


def num_fitted_scales(config, layout):
    """model.num_anchor_scales, or its default: 3 on one level, 1 per level on a pyramid (also
    for the layout compared with, when it is not the config's)."""
    own = layout.pyramid == bool(config.model.fpn)
    if config.model.num_anchor_scales is not None and own:
        return config.model.num_anchor_scales
    return 1 if layout.pyramid else 3


def fit_config_anchors(config, boxes, layout=None, num_scales=None) -> anchor_fit.AnchorFit:
    """`anchor_fit.fit_anchors` with the config's settings on `layout` (default the config's):
    the keys that are "auto" are fitted (both when neither is: `tf-frcnn analyze
    --fit-anchors` on a config with lists, or a comparison layout), the other is kept.
    num_scales: scales to fit (default `num_fitted_scales`)."""
    m = config.model
    layout = layout or layout_of(config)
    auto_scales, auto_ratios = m.anchor_scales == "auto", m.anchor_ratios == "auto"
    if (not auto_scales and not auto_ratios) or layout.pyramid != bool(m.fpn):
        auto_scales = auto_ratios = True
    scales, ratios = configured_anchors(config, layout)
    return anchor_fit.fit_anchors(
        boxes,
        num_scales=num_scales or num_fitted_scales(config, layout),
        num_ratios=m.num_anchor_ratios,
        iou_thresholds=(config.rpn.positive_iou, config.rpn.negative_iou),
        inside_only=config.rpn.ignore_cross_boundary,
        start=(scales, ratios),
        scales=None if auto_scales else scales,
        ratios=None if auto_ratios else ratios,
        layout=layout,
    )


def best_iou(config, boxes, scales, ratios, layout=None):
    """(best IoU float [N], level int [N] of that best anchor) of each box on `layout`."""
    layout = layout or layout_of(config)
    table = anchor_fit.level_best_iou(
        boxes, layout, scales, ratios, config.rpn.ignore_cross_boundary
    ).max(axis=2)
    return table.max(axis=1), table.argmax(axis=1)


def anchor_set_summary(config, boxes, scales, ratios, best=None, layout=None):
    """How an anchor set serves `boxes`, as class means (classes weigh equally; see
    `anchor_fit`): {"layout", "scales", "ratios", "sides" px (on the finest level),
    "sides_all_levels" px,
    "coverage" (share with best IoU > rpn.positive_iou), "below_negative" (share <
    rpn.negative_iou), "score" (the fit's objective), "coverage_all_boxes" (box-weighted)}.

    best: the boxes' best IoUs with this set, when already computed.
    """
    rpn, layout = config.rpn, layout or layout_of(config)
    best = best_iou(config, boxes, scales, ratios, layout)[0] if best is None else best
    per_class = [
        anchor_fit.coverage(best[boxes.labels == label], rpn.positive_iou, rpn.negative_iou)
        for label in np.unique(boxes.labels)
    ]

    def mean(key):
        return float(np.mean([entry[key] for entry in per_class])) if per_class else float("nan")

    coverage, below = mean("positive"), mean("forced_below_negative")
    base = layout.base_sizes[int(np.argmin(layout.strides))]
    return {
        "layout": layout.name,
        "scales": [float(s) for s in scales],
        "ratios": [float(r) for r in ratios],
        "sides": [base * float(s) for s in scales],
        "sides_all_levels": sorted(b * float(s) for b in layout.base_sizes for s in scales),
        "coverage": coverage,
        "below_negative": below,
        "score": (coverage + 1.0 - below) / 2.0,
        "coverage_all_boxes": float(np.mean(best > rpn.positive_iou)) if len(best) else np.nan,
    }


def _pairwise_iou(boxes):
    """IoU [n, n] of boxes [n, 4] [ymin, xmin, ymax, xmax]. NumPy, not keras'
    `compute_iou`: this runs once per image, where an eager op per call would dominate."""
    low = np.maximum(boxes[:, np.newaxis, :2], boxes[np.newaxis, :, :2])
    high = np.minimum(boxes[:, np.newaxis, 2:], boxes[np.newaxis, :, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    return inter / np.maximum(area[:, np.newaxis] + area[np.newaxis] - inter, 1e-12)


def same_class_overlap(split):
    """float [N]: each box's highest IoU with another box of its class in its image (0 if
    none), computed on the image's pixel boxes (the resize scales both axes alike)."""
    overlap = np.zeros(len(split.labels))
    shape = split.image_shapes[split.image_index].astype(np.float64)
    pixels = split.boxes * np.concatenate([shape, shape], axis=1)
    order = np.argsort(split.image_index, kind="stable")
    starts = np.flatnonzero(np.diff(split.image_index[order], prepend=-1))
    for members in np.split(order, starts[1:]):
        if len(members) < 2:
            continue
        iou = _pairwise_iou(pixels[members])
        labels = split.labels[members]
        same = labels[:, np.newaxis] == labels[np.newaxis, :]
        np.fill_diagonal(same, False)
        overlap[members] = np.max(np.where(same, iou, 0.0), axis=1)
    return overlap


def nms_advice(overlap, configured):
    """The detection NMS threshold the same-class overlap implies: two true objects overlapping
    by u both survive NMS only if u <= threshold, so the smallest multiple of 0.05 above the
    99th percentile same-class overlap, within NMS_RANGE (0.3 is the paper's).

    Args:
      overlap: float [N], see `same_class_overlap`.
      configured: detection.nms_iou.
    Returns:
      {"configured", "recommended", "overlap_p99", "share_above_configured"}.
    """
    overlap = np.asarray(overlap, np.float64)
    q = float(np.percentile(overlap, OVERLAP_PERCENTILE)) if overlap.size else 0.0
    above = np.floor(q * 20 + 1e-9) / 20 + 0.05
    recommended = float(round(min(max(above, NMS_RANGE[0]), NMS_RANGE[1]), 2))
    return {
        "configured": float(configured),
        "recommended": recommended,
        f"overlap_p{OVERLAP_PERCENTILE}": q,
        "share_above_configured": float(np.mean(overlap > configured)) if overlap.size else 0.0,
    }


def percentiles(values):
    """{"p0", "p1", ... "p100"} of `values` (PERCENTILES), None for no values."""
    if len(values) == 0:
        return None
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def level_shares(levels, layout):
    """{level name: share of the boxes whose best anchor lies on it}, None for no boxes."""
    if len(levels) == 0:
        return None
    counts = np.bincount(levels, minlength=len(layout.strides)) / len(levels)
    return {name: float(share) for name, share in zip(layout.level_names, counts)}


def under_two_cells(sides, stride):
    """Share of box sides under two cells of `stride` (None for no boxes)."""
    return float(np.mean(np.asarray(sides) < 2 * stride)) if len(sides) else None
