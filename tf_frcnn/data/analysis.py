"""What a dataset looks like to the detector: box statistics after the resize, anchor coverage,
same-class overlap, and the settings they imply (`tf-frcnn analyze`, `anchor_scales: auto`).

Reading. The training split goes through the readers training uses (`inputs.source`): same
class names, same dropped objects (VOC difficult, COCO crowd), same resize rule
(`pipeline.resize_image`). The on-disk readers' examples are taken as indexed
(`records.captured_examples`), so no pixel is decoded; synthetic and TFDS records are decoded.
Every box counts once per shorter side (data.min_size and data.augment.scales), and with
data.flip also mirrored for the anchor coverage (the grid offset differs). The random crop is
not modelled; a fractional data.val_split reads the whole training split.

Statistics, in pixels of the resized image: box side sqrt(height * width) and aspect ratio
height / width as percentiles per class; anchor coverage (`anchor_fit`); "under two cells":
side < 2 * stride, too small for the grid to place a well overlapping anchor; same-class
overlap: each box's highest IoU with another box of its class in its image (0 when none).

Recommendations (each with the numbers behind it):
- anchors: the fitted set when it raises the fit's objective by at least FIT_GAIN; without a
  fit, a hint to run one when the class-mean coverage is below LOW_COVERAGE.
- data.min_size / max_size: when over TINY_SHARE of the boxes are under two cells, scaled so
  the 10th-percentile side reaches 2 * stride; when that side exceeds 16 cells, scaled so it
  is 8 cells (faster, objects stay large). Rounded up to a multiple of 32.
- rpn.min_size: at most half the 1st-percentile shorter box side (smaller proposals are dropped).
- detection.nms_iou: two true objects overlapping by u both survive NMS only if u <= threshold;
  the advice is the smallest multiple of 0.05 above the 99th percentile same-class overlap,
  within NMS_RANGE (0.3 is the paper's), recommended when the configured value is below it.
- data.max_boxes: the most objects in an image, when some image has more (training keeps the
  first max_boxes).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings

import numpy as np

from tf_frcnn.backbones import STRIDE, feature_size
from tf_frcnn.config import ConfigError, ModelConfig
from tf_frcnn.data import anchor_fit
from tf_frcnn.data.records import BoxRepairWarning, DataWarning, captured_examples, check_images

PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
FIT_GAIN = 0.02  # gain in the fit's objective that makes the fit a recommendation
LOW_COVERAGE = 0.8  # below this, a configured set without a fit gets a hint
TINY_SHARE = 0.1  # share of boxes under two cells that asks for larger images
OVERLAP_PERCENTILE = 99  # same-class overlap percentile the NMS threshold must exceed
NMS_RANGE = (0.3, 0.7)


@dataclasses.dataclass
class SplitBoxes:
    """The objects of one split as training keeps them, before the resize.

    image_shapes: int [I, 2] (height, width) of each image file.
    boxes: float32 [N, 4] normalised [ymin, xmin, ymax, xmax]; labels: int [N] 1-based;
    image_index: int [N], the image each box belongs to.
    """

    source: str
    split: str
    class_names: list
    image_shapes: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    excluded: int  # difficult / crowd objects, dropped as training drops them
    reader: dict  # what the reader repaired or skipped, from its warnings


@dataclasses.dataclass
class Analysis:
    """`summary` is what analysis.json holds; the arrays feed the histograms."""

    summary: dict
    sides: dict  # class name ("all" too) -> float [n] box sides, resized px
    ratios: dict  # class name -> float [n] height / width
    best_iou: dict  # class name -> float [n] best IoU, configured anchors
    best_iou_fitted: dict | None  # the same for the fitted anchors, when fitted


def resized_shapes(shapes, min_size, max_size):
    """(height, width) int [I, 2] after `pipeline.resize_image`, from the sizes alone.

    The same float32 arithmetic as `resize_image` (which needs the pixels), so the sizes agree
    exactly; tests pin the two together.
    """
    shapes = np.asarray(shapes, np.float32).reshape(-1, 2)
    scale = np.float32(min_size) / np.minimum(shapes[:, 0], shapes[:, 1])
    if max_size is not None:
        scale = np.minimum(scale, np.float32(max_size) / np.maximum(shapes[:, 0], shapes[:, 1]))
    return np.maximum(np.round(shapes * scale[:, np.newaxis]).astype(np.int64), 1)


def _from_examples(examples):
    sizes = check_images(
        [example.image_path for example in examples], strict=False, source="analysis"
    )
    for example, size in zip(examples, sizes):
        if size is not None:
            keep = ~(example.difficult | example.iscrowd)
            yield size, example.boxes[keep], example.labels[keep], int(np.sum(~keep))


def _from_records(records):
    import tensorflow as tf

    def sizes_and_objects(record):
        keep = ~(record["difficult"] | record["iscrowd"])
        return (
            tf.shape(record["image"])[:2],
            tf.boolean_mask(record["boxes"], keep),
            tf.boolean_mask(record["labels"], keep),
            tf.reduce_sum(tf.cast(~keep, tf.int32)),
        )

    stream = records.map(sizes_and_objects, num_parallel_calls=tf.data.AUTOTUNE)
    return (tuple(item) for item in stream.as_numpy_iterator())


def read_split(config, split=None) -> SplitBoxes:
    """The boxes of `split` (default data.train_split) as training reads them.

    Raises:
      DataError (from the reader) naming the file or class; ConfigError for a source that has
      no boxes to read.
    """
    from tf_frcnn.training import inputs

    split = split or config.data.train_split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        with captured_examples() as captured:
            records, names = inputs.source(config, split)
        items = _from_examples(captured[-1]) if captured else _from_records(records)
        shapes, boxes, labels, index, excluded = [], [], [], [], 0
        for number, (size, image_boxes, image_labels, dropped) in enumerate(items):
            shapes.append(size)
            boxes.append(np.asarray(image_boxes, np.float32).reshape(-1, 4))
            labels.append(np.asarray(image_labels, np.int64).reshape(-1))
            index.append(np.full(len(labels[-1]), number))
            excluded += int(dropped)
    repairs = [w.message for w in caught if isinstance(w.message, BoxRepairWarning)]
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    for other in (w for w in caught if not issubclass(w.category, DataWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if not shapes:
        raise ConfigError(f"data.source {config.data.source!r}, split {split!r}: no images")
    reader = {
        "dropped_boxes": sum(r.dropped for r in repairs),
        "clipped_boxes": sum(r.clipped for r in repairs),
        "skipped_images": sum("skipping" in message for message in messages),
        "warnings": messages,
    }
    return SplitBoxes(
        config.data.source,
        split,
        list(names),
        np.asarray(shapes, np.int64),
        np.concatenate(boxes),
        np.concatenate(labels),
        np.concatenate(index),
        excluded,
        reader,
    )


def resize_sides(config) -> list:
    """The shorter sides training and evaluation resize to (see the module docstring)."""
    scales = config.data.augment.scales or []
    return sorted({int(config.data.min_size), *(int(side) for side in scales)})


def views(split: SplitBoxes, config, *, flip=None):
    """Every box in every view of its image (each resize side; mirrored too when `flip`,
    default data.flip).

    Returns:
      (anchor_fit.ResizedBoxes of M box views, mirrored bool [M]).
    """
    flip = config.data.flip if flip is None else flip
    parts, mirrored = [], []
    for side in resize_sides(config):
        resized = resized_shapes(split.image_shapes, side, config.data.max_size)
        shape = resized[split.image_index].astype(np.float32)
        boxes = split.boxes * np.concatenate([shape, shape], axis=1)
        cells = feature_size(config.model.backbone, resized)[split.image_index]
        ymin, xmin, ymax, xmax = boxes.T
        flipped = np.stack([ymin, shape[:, 1] - xmax, ymax, shape[:, 1] - xmin], axis=1)
        for view, is_mirrored in ((boxes, False), (flipped, True))[: 2 if flip else 1]:
            parts.append(anchor_fit.ResizedBoxes(view, shape, cells, split.labels))
            mirrored.append(np.full(len(split.labels), is_mirrored))
    joined = anchor_fit.ResizedBoxes(
        *(
            np.concatenate([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(anchor_fit.ResizedBoxes)
        )
    )
    return joined, np.concatenate(mirrored)


def _pairwise_iou(boxes):
    """IoU [n, n] of boxes [n, 4] [ymin, xmin, ymax, xmax]. NumPy, not keras'
    `compute_iou`: this runs once per image, where an eager op per call would dominate."""
    low = np.maximum(boxes[:, np.newaxis, :2], boxes[np.newaxis, :, :2])
    high = np.minimum(boxes[:, np.newaxis, 2:], boxes[np.newaxis, :, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    return inter / np.maximum(area[:, np.newaxis] + area[np.newaxis] - inter, 1e-12)


def same_class_overlap(split: SplitBoxes):
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
    """The detection NMS threshold the same-class overlap implies (module docstring's rule).

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


def _percentiles(values):
    if len(values) == 0:
        return None
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def _configured_anchors(config):
    """The anchors a model would use now: the config's lists, or for "auto" the defaults
    (the paper's), which the fit is compared with."""
    defaults = ModelConfig()
    m = config.model
    scales = defaults.anchor_scales if m.anchor_scales == "auto" else m.anchor_scales
    ratios = defaults.anchor_ratios if m.anchor_ratios == "auto" else m.anchor_ratios
    return [float(s) for s in scales], [float(r) for r in ratios]


def fit_config_anchors(config, boxes: anchor_fit.ResizedBoxes) -> anchor_fit.AnchorFit:
    """`anchor_fit.fit_anchors` with the config's settings: the keys that are "auto" are
    fitted (both when neither is: `tf-frcnn analyze --fit-anchors` on a config with lists),
    the other is kept."""
    m = config.model
    auto_scales, auto_ratios = m.anchor_scales == "auto", m.anchor_ratios == "auto"
    if not auto_scales and not auto_ratios:
        auto_scales = auto_ratios = True
    scales, ratios = _configured_anchors(config)
    return anchor_fit.fit_anchors(
        boxes,
        base_size=m.anchor_base_size,
        num_scales=m.num_anchor_scales,
        num_ratios=m.num_anchor_ratios,
        stride=STRIDE,
        iou_thresholds=(config.rpn.positive_iou, config.rpn.negative_iou),
        inside_only=config.rpn.ignore_cross_boundary,
        start=(scales, ratios),
        scales=None if auto_scales else scales,
        ratios=None if auto_ratios else ratios,
    )


def _best_iou(config, boxes, scales, ratios):
    heights, widths = anchor_fit.anchor_shapes(config.model.anchor_base_size, scales, ratios)
    table = anchor_fit.best_anchor_iou(
        boxes, heights, widths, STRIDE, config.rpn.ignore_cross_boundary
    )
    return table.max(axis=1)


def anchor_set_summary(config, boxes, scales, ratios, best=None):
    """How an anchor set serves `boxes`, as class means (classes weigh equally; see
    `anchor_fit`): {"scales", "ratios", "sides" px, "coverage" (share with best IoU >
    rpn.positive_iou), "below_negative" (share < rpn.negative_iou), "score" (the fit's
    objective), "coverage_all_boxes" (box-weighted)}.

    best: the boxes' best IoUs with this set, when already computed.
    """
    rpn = config.rpn
    best = _best_iou(config, boxes, scales, ratios) if best is None else best
    per_class = [
        anchor_fit.coverage(best[boxes.labels == label], rpn.positive_iou, rpn.negative_iou)
        for label in np.unique(boxes.labels)
    ]

    def mean(key):
        return float(np.mean([entry[key] for entry in per_class])) if per_class else float("nan")

    coverage, below = mean("positive"), mean("forced_below_negative")
    return {
        "scales": [float(s) for s in scales],
        "ratios": [float(r) for r in ratios],
        "sides": [config.model.anchor_base_size * float(s) for s in scales],
        "coverage": coverage,
        "below_negative": below,
        "score": (coverage + 1.0 - below) / 2.0,
        "coverage_all_boxes": float(np.mean(best > rpn.positive_iou))
        if len(best)
        else float("nan"),
    }


def analyze(config, split=None, fit=False) -> Analysis:
    """Analyses the training split (or `split`) of `config`; fits anchors when `fit` or when
    model.anchor_scales / anchor_ratios is "auto". See the module docstring."""
    start = time.perf_counter()
    split_boxes = read_split(config, split)
    m, rpn = config.model, config.rpn
    fit = fit or m.anchor_scales == "auto" or m.anchor_ratios == "auto"
    names = split_boxes.class_names
    instances, mirrored = views(split_boxes, config)
    upright = ~mirrored
    b = instances.boxes[upright].astype(np.float64)
    heights, widths = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    sides, ratios = np.sqrt(heights * widths), heights / np.maximum(widths, 1e-9)
    shorter = np.minimum(heights, widths)
    upright_labels = instances.labels[upright]

    scales, anchor_ratios = _configured_anchors(config)
    best = _best_iou(config, instances, scales, anchor_ratios)
    fitted = fit_config_anchors(config, instances) if fit and len(instances.labels) else None
    best_fitted = _best_iou(config, instances, fitted.scales, fitted.ratios) if fitted else None
    overlap = same_class_overlap(split_boxes)
    nms = nms_advice(overlap, config.detection.nms_iou)

    def members(labels, label):
        return np.ones(len(labels), bool) if label is None else labels == label

    per_class, sides_of, ratios_of, best_of, fitted_of = {}, {}, {}, {}, {}
    groups = [(name, label) for label, name in enumerate(names, start=1)] + [("all", None)]
    for name, label in groups:
        box_mask = members(split_boxes.labels, label)
        view_mask = members(instances.labels, label)
        sides_of[name] = sides[members(upright_labels, label)]
        ratios_of[name] = ratios[members(upright_labels, label)]
        best_of[name] = best[view_mask]
        entry = {
            "boxes": int(np.sum(box_mask)),
            "images": int(len(np.unique(split_boxes.image_index[box_mask]))),
            "side": _percentiles(sides_of[name]),
            "aspect_ratio": _percentiles(ratios_of[name]),
            "under_two_cells": (
                float(np.mean(sides_of[name] < 2 * STRIDE)) if len(sides_of[name]) else None
            ),
            "coverage": anchor_fit.coverage(best_of[name], rpn.positive_iou, rpn.negative_iou),
            "same_class_overlap": _percentiles(overlap[box_mask]),
        }
        if fitted:
            fitted_of[name] = best_fitted[view_mask]
            entry["coverage_fitted"] = anchor_fit.coverage(
                fitted_of[name], rpn.positive_iou, rpn.negative_iou
            )
        per_class[name] = entry

    counts = np.bincount(split_boxes.image_index, minlength=len(split_boxes.image_shapes))
    anchors = {
        "base_size": m.anchor_base_size,
        "stride": STRIDE,
        "configured": anchor_set_summary(config, instances, scales, anchor_ratios, best),
    }
    if fitted:
        anchors["fitted"] = anchor_set_summary(
            config, instances, fitted.scales, fitted.ratios, best_fitted
        )
    summary = {
        "source": split_boxes.source,
        "split": split_boxes.split,
        "resize": {
            "min_size": config.data.min_size,
            "max_size": config.data.max_size,
            "shorter_sides": resize_sides(config),
            "flip_views": bool(config.data.flip),
        },
        "images": int(len(split_boxes.image_shapes)),
        "images_without_boxes": int(np.sum(counts == 0)),
        "boxes": int(len(split_boxes.labels)),
        "excluded_difficult_or_crowd": split_boxes.excluded,
        "images_over_max_boxes": int(np.sum(counts > config.data.max_boxes)),
        "max_boxes_in_an_image": int(counts.max()) if counts.size else 0,
        "reader": split_boxes.reader,
        "positive_iou": rpn.positive_iou,
        "negative_iou": rpn.negative_iou,
        "anchors": anchors,
        "nms": nms,
        "classes": per_class,
    }
    summary["recommendations"] = recommendations(config, summary, sides, shorter)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return Analysis(summary, sides_of, ratios_of, best_of, fitted_of if fitted else None)


def _round_up(value, multiple=32):
    """The next multiple, not counting float noise (600 * 32 / 20.000001 is 960)."""
    return int(np.ceil(value / multiple - 1e-3) * multiple)


def recommendations(config, summary, sides, shorter_sides) -> list:
    """[{"key", "value", "reason"}] from an analysis summary (module docstring's rules).

    sides, shorter_sides: float [N] sqrt(height * width) and min(height, width) of every box
    after the resize.
    """
    out = []

    def advise(key, value, reason):
        out.append({"key": key, "value": value, "reason": reason})

    anchors, d = summary["anchors"], config.data
    configured = anchors["configured"]
    if "fitted" in anchors:
        fitted = anchors["fitted"]
        if (
            fitted["score"] >= configured["score"] + FIT_GAIN
            or config.model.anchor_scales == "auto"
            or config.model.anchor_ratios == "auto"
        ):
            fit_text = _fit_text(configured, fitted, summary["positive_iou"])
            advise(
                "model.anchor_scales",
                fitted["scales"],
                f"{_sides_text(configured)} -> fitted: {fit_text}",
            )
            advise(
                "model.anchor_ratios",
                fitted["ratios"],
                "fitted with the scales (or set both to auto)",
            )
    elif configured["coverage"] < LOW_COVERAGE:
        advise(
            "model.anchor_scales",
            "auto",
            f"only {configured['coverage']:.2f} of the boxes (class mean) "
            f"have an anchor with IoU > {summary['positive_iou']}; run with "
            "--fit-anchors to see a fitted set",
        )
    if len(sides):
        side_p10 = float(np.percentile(sides, 10))
        tiny = summary["classes"]["all"]["under_two_cells"]
        factor = None
        if tiny > TINY_SHARE and side_p10 > 0:
            factor = 2 * STRIDE / side_p10
            reason = (
                f"{tiny:.0%} of the boxes are under two feature cells ({2 * STRIDE} px) "
                f"after the resize (10th percentile side {side_p10:.0f} px); larger "
                "images give them anchors that overlap"
            )
        elif side_p10 > 16 * STRIDE:
            factor = 8 * STRIDE / side_p10
            reason = (
                f"objects are large (10th percentile side {side_p10:.0f} px after the "
                f"resize): smaller images train faster and keep them above "
                f"{8 * STRIDE} px"
            )
        if factor is not None:
            advise("data.min_size", _round_up(d.min_size * factor), reason)
            advise("data.max_size", _round_up(d.max_size * factor), "scaled with data.min_size")
        if len(shorter_sides):
            limit = float(np.floor(np.percentile(shorter_sides, 1) / 2 + 1e-3))
            if config.rpn.min_size > limit:
                advise(
                    "rpn.min_size",
                    limit,
                    f"proposals under {config.rpn.min_size:g} px are dropped "
                    f"but 1% of the boxes have a side under {2 * limit + 2:.0f} px",
                )
    nms = summary["nms"]
    if nms["configured"] < nms["recommended"]:
        advise(
            "detection.nms_iou",
            nms["recommended"],
            f"{nms['share_above_configured']:.1%} of the boxes overlap "
            f"another of their class by IoU > {nms['configured']:g} and can be "
            f"suppressed; the 99th percentile overlap is "
            f"{nms[f'overlap_p{OVERLAP_PERCENTILE}']:.2f}",
        )
    if summary["images_over_max_boxes"]:
        advise(
            "data.max_boxes",
            summary["max_boxes_in_an_image"],
            f"{summary['images_over_max_boxes']} images have more objects "
            f"than data.max_boxes = {d.max_boxes}; training keeps the first ones",
        )
    return out


def _fit_text(before, after, positive_iou):
    return (
        f"boxes with an anchor of IoU > {positive_iou:g} {before['coverage']:.2f} -> "
        f"{after['coverage']:.2f}, boxes whose best is a would-be negative "
        f"{before['below_negative']:.2f} -> {after['below_negative']:.2f} (class means)"
    )


def _sides_text(anchors):
    sides = "/".join(f"{side:.4g}" for side in anchors["sides"])
    ratios = "/".join(f"{ratio:g}" for ratio in anchors["ratios"])
    return f"{sides} px x {ratios}"


def resolve_anchors(config, model_dir=None, log=None):
    """`config` with "auto" anchors replaced by numbers, for building a model.

    A fresh run fits them on the training split (`fit_config_anchors`); a resumed run
    (`model_dir` given) takes the ones its config.yaml recorded, so the network keeps the
    shapes it was trained with. A config without "auto" is returned as is.

    Args:
      log: callable taking one line (e.g. print), told the anchors and their coverage.
    Returns:
      a copy of `config` (the input is not modified) with model.anchor_scales / anchor_ratios
      lists.
    Raises:
      ConfigError when the recorded config still says "auto" or the split has no boxes.
    """
    m = config.model
    if m.anchor_scales != "auto" and m.anchor_ratios != "auto":
        return config
    resolved = copy.deepcopy(config)
    if model_dir is not None:
        from tf_frcnn.training.state import CONFIG_FILE, read_config

        recorded = read_config(model_dir).model
        for key in ("anchor_scales", "anchor_ratios"):
            if getattr(recorded, key) == "auto":
                raise ConfigError(
                    f"{os.path.join(model_dir, CONFIG_FILE)}: model.{key} is "
                    "'auto', not the fitted numbers; train the model dir afresh"
                )
            setattr(resolved.model, key, list(getattr(recorded, key)))
        return resolved
    split = read_split(config)
    instances, _ = views(split, config)
    if not len(instances.labels):
        raise ConfigError(
            f"model.anchor_scales/anchor_ratios 'auto': the training split "
            f"{split.split!r} has no boxes to fit anchors to"
        )
    fitted = fit_config_anchors(config, instances)
    before = anchor_set_summary(config, instances, *_configured_anchors(config))
    after = anchor_set_summary(config, instances, fitted.scales, fitted.ratios)
    resolved.model.anchor_scales = fitted.scales
    resolved.model.anchor_ratios = fitted.ratios
    if log:
        log(
            f"anchors fitted to {len(split.labels)} training boxes: scales {fitted.scales} x "
            f"ratios {fitted.ratios} ({_sides_text(after)}); before the fit "
            f"({_sides_text(before)}) -> after: "
            f"{_fit_text(before, after, config.rpn.positive_iou)}"
        )
    return resolved
