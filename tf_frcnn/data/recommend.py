"""The settings an analysis summary (`tf_frcnn.data.analysis.analyze`) implies, each with the
numbers behind it:

- anchors: the fitted set when it raises the fit's objective by at least FIT_GAIN; without a
  fit, a hint to run one when the class-mean coverage is below LOW_COVERAGE.
- model.num_anchor_scales: 2 on a pyramid fitted with one size per level (the default), when
  two sizes per level (about 2**0.5 apart) raise the objective by FIT_GAIN: with sizes an
  octave apart, only boxes within about 0.84-1.2x of an anchor's size can reach IoU > 0.7.
- model.fpn: on one stride-16 map, when over TINY_SHARE of the boxes are under two of its cells
  and a pyramid (P2-P6) covers them better by FIT_GAIN: the finer levels serve small boxes
  without upscaling the images, so no larger images are advised then.
- data.min_size: auto: when "auto" would keep the images' native size (`image_sizes`).
- data.min_size / max_size: when over TINY_SHARE of the boxes are under two cells of the finest
  stride in use and no pyramid is advised, scaled so the 10th-percentile side reaches two of
  those cells; when that side exceeds 16 stride-16 cells, scaled so it is 8 (faster, objects
  stay large). Rounded up to a multiple of 32.
- rpn.min_size: at most half the 1st-percentile shorter box side (smaller proposals are dropped).
- detection.nms_iou: `box_stats.nms_advice`, when the configured value is below it.
- data.max_boxes: the most objects in an image, when some image has more (training keeps the
  first max_boxes).
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.backbones import STRIDE
from tf_frcnn.data.image_sizes import TINY_SHARE, round_up
from tf_frcnn.data.resolve import fit_text, sides_text

FIT_GAIN = 0.02  # gain in the fit's objective (or coverage) that makes a change a recommendation
LOW_COVERAGE = 0.8  # below this, a configured set without a fit gets a hint


def _item(key, value, reason):
    return {"key": key, "value": value, "reason": reason}


def _anchor_advice(config, summary):
    anchors, m = summary["anchors"], config.model
    configured = anchors["configured"]
    if "fitted" in anchors:
        fitted = anchors["fitted"]
        auto = "auto" in (m.anchor_scales, m.anchor_ratios)
        if not auto and fitted["score"] < configured["score"] + FIT_GAIN:
            return []
        fit = fit_text(configured, fitted, summary["positive_iou"])
        reason = f"{sides_text(configured)} -> fitted: {fit}"
        return [
            _item("model.anchor_scales", fitted["scales"], reason),
            _item("model.anchor_ratios", fitted["ratios"], "fitted with the scales (or auto)"),
        ]
    if configured["coverage"] >= LOW_COVERAGE:
        return []
    return [
        _item(
            "model.anchor_scales",
            "auto",
            f"only {configured['coverage']:.2f} of the boxes (class mean) have an anchor with "
            f"IoU > {summary['positive_iou']}; run with --fit-anchors to see a fitted set",
        )
    ]


def _sizes_per_level_advice(config, summary):
    """[model.num_anchor_scales: 2] when two sizes per pyramid level gain FIT_GAIN."""
    anchors = summary["anchors"]
    two, one = anchors.get("fitted_two_per_level"), anchors.get("fitted")
    if two is None or two["score"] < one["score"] + FIT_GAIN:
        return []
    reason = (
        f"two sizes per level ({sides_text(two)}) instead of one ({sides_text(one)}): "
        f"{fit_text(one, two, summary['positive_iou'])}; twice the RPN's anchors"
    )
    return [_item("model.num_anchor_scales", 2, reason)]


def _best_coverage(layout):
    return max(layout[key]["coverage"] for key in ("configured", "fitted") if key in layout)


def _fpn_advice(config, summary):
    """[model.fpn] when a pyramid would cover the small boxes (module docstring)."""
    if config.model.fpn:
        return []
    single, pyramid = summary["layouts"]["single"], summary["layouts"]["pyramid"]
    tiny, gain = single["under_two_cells"], _best_coverage(pyramid) - _best_coverage(single)
    if tiny is None or tiny <= TINY_SHARE or gain < FIT_GAIN:
        return []
    return [
        _item(
            "model.fpn",
            {"min_level": 2, "max_level": 6},
            f"{tiny:.0%} of the boxes are under two stride-16 cells (32 px); on "
            f"{pyramid['name']} (finest stride {pyramid['finest_stride']}) "
            f"{pyramid['under_two_cells']:.0%} are, and the best anchor coverage (IoU > "
            f"{summary['positive_iou']:g}, class mean) is {_best_coverage(pyramid):.2f} vs "
            f"{_best_coverage(single):.2f}: finer levels instead of larger images",
        )
    ]


def _size_advice(config, summary, sides):
    """data.min_size: auto, larger or smaller images (module docstring)."""
    d, plan = config.data, summary["sizes"]
    if plan["would_keep_native"] and not plan["auto"]:
        reason = (
            f"{plan['under_two_cells']['paper_sizes']:.0%} of the boxes are under two cells of "
            f"stride {plan['finest_stride']} at the shorter side {plan['smallest_side']}, where "
            f"the images are natively {plan['native']} px (median shorter side): 'auto' keeps "
            "that size (with data.max_size: auto too, else max_size caps it)"
        )
        return [_item("data.min_size", "auto", reason)]
    if not len(sides) or any(item["key"] == "model.fpn" for item in summary["recommendations"]):
        return []
    finest, side_p10 = plan["finest_stride"], float(np.percentile(sides, 10))
    tiny = summary["classes"]["all"]["under_two_cells"]
    if tiny > TINY_SHARE and side_p10 > 0:
        factor = 2 * finest / side_p10
        reason = (
            f"{tiny:.0%} of the boxes are under two cells of stride {finest} ({2 * finest} px) "
            f"after the resize (10th percentile side {side_p10:.0f} px); larger images give "
            f"them anchors that overlap, at {factor**2:.1f}x the compute"
        )
    elif side_p10 > 16 * STRIDE:
        factor = 8 * STRIDE / side_p10
        reason = (
            f"objects are large (10th percentile side {side_p10:.0f} px after the resize): "
            f"smaller images train faster and keep them above {8 * STRIDE} px"
        )
    else:
        return []
    return [
        _item("data.min_size", round_up(int(d.min_size) * factor), reason),
        _item("data.max_size", round_up(int(d.max_size) * factor), "scaled with data.min_size"),
    ]


def _other_advice(config, summary, shorter_sides):
    """rpn.min_size, detection.nms_iou and data.max_boxes."""
    out = []
    if len(shorter_sides):
        limit = float(np.floor(np.percentile(shorter_sides, 1) / 2 + 1e-3))
        if config.rpn.min_size > limit:
            reason = (
                f"proposals under {config.rpn.min_size:g} px are dropped but 1% of the "
                f"boxes have a side under {2 * limit + 2:.0f} px"
            )
            out.append(_item("rpn.min_size", limit, reason))
    nms = summary["nms"]
    if nms["configured"] < nms["recommended"]:
        reason = (
            f"{nms['share_above_configured']:.1%} of the boxes overlap another of their class "
            f"by IoU > {nms['configured']:g} and can be suppressed; the 99th percentile "
            f"overlap is {nms['overlap_p99']:.2f}"
        )
        out.append(_item("detection.nms_iou", nms["recommended"], reason))
    if summary["images_over_max_boxes"]:
        reason = (
            f"{summary['images_over_max_boxes']} images have more objects than "
            f"data.max_boxes = {config.data.max_boxes}; training keeps the first ones"
        )
        out.append(_item("data.max_boxes", summary["max_boxes_in_an_image"], reason))
    return out


def recommendations(config, summary, sides, shorter_sides) -> list:
    """[{"key", "value", "reason"}] from an analysis summary (module docstring's rules).

    sides, shorter_sides: float [N] sqrt(height * width) and min(height, width) of every box
    after the resize.
    """
    summary = {**summary, "recommendations": []}
    summary["recommendations"] += _anchor_advice(config, summary)
    summary["recommendations"] += _sizes_per_level_advice(config, summary)
    summary["recommendations"] += _fpn_advice(config, summary)
    summary["recommendations"] += _size_advice(config, summary, sides)
    return summary["recommendations"] + _other_advice(config, summary, shorter_sides)
