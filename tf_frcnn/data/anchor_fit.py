"""Anchors against ground-truth boxes: the best IoU each box gets from the anchors laid on its
image's grid, and a fit of scales x ratios that gives the boxes well-overlapping anchors.

Best anchor IoU (exact). The anchors are those `AnchorGenerator` lays on the feature map of the
resized image (`backbones.feature_size`): centres ((i + 0.5) * stride, (j + 0.5) * stride), at
each the shapes of `anchors.base_anchors`; with `ignore_cross_boundary` an anchor reaching
outside the image is never labelled, so it is left out. Along each axis the overlap only shrinks
as the centre moves away from the box centre, and the allowed centres are a range of rows times
a range of columns, so the best anchor of a shape sits at the allowed row and column nearest the
box centre: closed form per axis. Padding adds cells beyond the grid, which can only matter for
a box at the bottom/right edge when cross-boundary anchors are allowed.

On a feature pyramid (`Layout` with pyramid=True) level l (stride 2**l) carries the anchors of
`AnchorGenerator(base_size=2**l, scales, ratios, stride=2**l)` on its own ceil(H / 2**l) x
ceil(W / 2**l) grid, and a box's best anchor is the best over the levels (labels by IoU over all
levels, FPN Sec. 4.1): the closed form above per level, then the maximum.

Buckets (as `rpn.anchor_targets` labels them): best IoU > positive_iou: a positive anchor by
IoU; [negative_iou, positive_iou]: only the forced-best anchor is positive; < negative_iou: the
forced positive would otherwise be a negative.

The fit. Candidate scales 2^(j/8) and ratios 2^(j/4) (the paper's 8/16/32 and 0.5/1/2 among
them) over the range the boxes need; the best IoU of every box with every candidate shape is
computed once, then a coordinate search changes one scale or ratio at a time while that raises
the objective. Starts: three sets of quantiles of the boxes' log sides and ratios, and the
configured anchors; the best result is kept. Deterministic: the boxes are sorted first.

The objective, per box: 1 when its best IoU is > positive_iou, 1/2 when at least negative_iou
(its forced-best positive is not a would-be negative), else 0; averaged per class, then over
classes (they weigh equally, as in mAP); ties broken by the mean best IoU. Coverage alone would
give up objects too small for any anchor on the grid to exceed positive_iou and leave them
forced positives below negative_iou.

On a pyramid a candidate scale s is the set of sizes s * 2**l, doubling per level, so the fit
chooses the smallest size (s times the finest stride) and the ratios; num_scales is the number
of sizes per level.

Boxes: absolute pixel [ymin, xmin, ymax, xmax] of the resized image.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from tf_frcnn.anchors import base_anchors
from tf_frcnn.matcher import NEGATIVE_IOU, POSITIVE_IOU

# At most this many box instances enter the fit (a fixed-seed sample of larger sets); the
# candidate table holds instances x ~800 float32 values.
MAX_FIT_BOXES = 20000
# The quantile starts: set members at evenly spaced quantiles over the middle 60%, 100% and
# 140% of the range (100%: the quantiles (2j + 1) / 2n; above 100% the outer members sit at the
# extremes' side, clipped to the data).
START_SPREADS = (0.6, 1.0, 1.4)
_CHUNK = 2048


@dataclasses.dataclass
class ResizedBoxes:
    """Ground-truth boxes as the RPN sees them, one row per box instance (a box in one view of
    its image: one resize side, flipped or not).

    boxes: float [N, 4] absolute [ymin, xmin, ymax, xmax] in the resized image.
    image_shapes: float [N, 2] (height, width) of that resized image (before padding).
    cells: int [N, 2] feature-map (rows, columns) of that image.
    labels: int [N] 1-based class.
    """

    boxes: np.ndarray
    image_shapes: np.ndarray
    cells: np.ndarray
    labels: np.ndarray

    def take(self, index) -> ResizedBoxes:
        return ResizedBoxes(
            self.boxes[index], self.image_shapes[index], self.cells[index], self.labels[index]
        )


@dataclasses.dataclass
class AnchorFit:
    """A fitted anchor set: scales (anchor side / base_size) and ratios (height / width),
    ascending, with what it reaches on the boxes it was fitted to (class means)."""

    scales: list
    ratios: list
    score: float  # the objective (module docstring)
    coverage: float  # share of boxes with best IoU > positive_iou
    mean_iou: float  # mean best IoU


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the anchors lie: levels of `strides` with anchor side base_size * scale.

    Single level (pyramid False): the backbone's map, `ResizedBoxes.cells`. Pyramid: level i
    has its own ceil(side / strides[i]) grid and base_sizes[i] = strides[i].
    """

    strides: tuple
    base_sizes: tuple
    pyramid: bool = False

    @classmethod
    def single(cls, stride=16, base_size=16):
        return cls((stride,), (base_size,))

    @classmethod
    def levels(cls, strides):
        return cls(tuple(strides), tuple(strides), True)

    @property
    def finest(self):
        return min(self.strides)

    @property
    def level_names(self):
        """["P2", ..., "P6"], or ["stride 16"] for a single level."""
        if not self.pyramid:
            return [f"stride {self.strides[0]}"]
        return [f"P{int(np.log2(stride))}" for stride in self.strides]

    @property
    def name(self):
        names = self.level_names
        return names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"

    def cells(self, boxes: ResizedBoxes, level):
        """int [N, 2] (rows, columns) of level `level`'s grid for each box's image."""
        if not self.pyramid:
            return boxes.cells
        return np.ceil(boxes.image_shapes / self.strides[level] - 1e-9).astype(np.int64)


def anchor_shapes(base_size, scales, ratios):
    """(heights, widths) float64 [k] of the anchors, in `base_anchors` order (ratio-major)."""
    cell = base_anchors(base_size, scales, ratios).astype(np.float64)
    return cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]


def _axis_overlap(low, high, length, cells, extent, stride, inside_only):
    """Overlap along one axis of each box [low, high] with the nearest allowed anchor centre.

    low, high, length: [n]; cells: int [n]; extent: anchor lengths [k].
    Returns (overlap float64 [n, k], allowed bool [n, k]: some centre is allowed).
    """
    half = extent[np.newaxis, :] / 2.0
    shape = (len(low), len(extent))
    first = np.zeros(shape)
    last = np.broadcast_to((cells - 1.0)[:, np.newaxis], shape)
    if inside_only:
        first = np.maximum(first, np.ceil(half / stride - 0.5))
        last = np.minimum(last, np.floor((length[:, np.newaxis] - half) / stride - 0.5))
    allowed = first <= last
    nearest = np.round((low + high)[:, np.newaxis] / (2.0 * stride) - 0.5)
    nearest = np.minimum(np.maximum(nearest, first), last)
    centre = (nearest + 0.5) * stride
    overlap = np.minimum(high[:, np.newaxis], centre + half) - np.maximum(
        low[:, np.newaxis], centre - half
    )
    return np.maximum(overlap, 0.0), allowed


def best_anchor_iou(boxes: ResizedBoxes, heights, widths, stride=16, inside_only=True, cells=None):
    """Best IoU of every box with the anchors of each shape on its image's grid (see the module
    docstring for why this is exact).

    Args:
      boxes: N box instances.
      heights, widths: float [k] anchor shapes (see `anchor_shapes`).
      stride: pixels per feature cell.
      inside_only: leave out anchors that cross the image boundary (rpn.ignore_cross_boundary).
      cells: int [N, 2] grid (rows, columns) of each box's image; default `boxes.cells`.
    Returns:
      float32 [N, k]; 0 where no anchor of the shape fits inside the image.
    """
    heights = np.asarray(heights, np.float64)
    widths = np.asarray(widths, np.float64)
    out = np.zeros((len(boxes.labels), len(heights)), np.float32)
    grid = boxes.cells if cells is None else cells
    for start in range(0, len(out), _CHUNK):
        part = slice(start, start + _CHUNK)
        b = boxes.boxes[part].astype(np.float64)
        shape = boxes.image_shapes[part].astype(np.float64)
        cells = grid[part].astype(np.float64)
        dy, ok_y = _axis_overlap(
            b[:, 0], b[:, 2], shape[:, 0], cells[:, 0], heights, stride, inside_only
        )
        dx, ok_x = _axis_overlap(
            b[:, 1], b[:, 3], shape[:, 1], cells[:, 1], widths, stride, inside_only
        )
        inter = dy * dx
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, np.newaxis]
        iou = inter / np.maximum(area + (heights * widths)[np.newaxis] - inter, 1e-12)
        out[part] = np.where(ok_y & ok_x, iou, 0.0)
    return out


def _level_ious(boxes: ResizedBoxes, layout: Layout, scales, ratios, inside_only):
    """float32 [N, k] per level of `layout`, in turn: the best IoU of every box with each anchor
    shape (`anchor_shapes` order) on that level's grid."""
    for level, (stride, base_size) in enumerate(zip(layout.strides, layout.base_sizes)):
        heights, widths = anchor_shapes(base_size, scales, ratios)
        cells = layout.cells(boxes, level)
        yield best_anchor_iou(boxes, heights, widths, stride, inside_only, cells)


def level_best_iou(boxes: ResizedBoxes, layout: Layout, scales, ratios, inside_only=True):
    """float32 [N, levels, k]: `_level_ious` stacked."""
    return np.stack(list(_level_ious(boxes, layout, scales, ratios, inside_only)), axis=1)


def layout_best_iou(boxes: ResizedBoxes, layout: Layout, scales, ratios, inside_only=True):
    """float32 [N, k]: the best IoU over the levels of `layout`, without holding them all."""
    return functools.reduce(np.maximum, _level_ious(boxes, layout, scales, ratios, inside_only))


def coverage(best_iou, positive_iou=POSITIVE_IOU, negative_iou=NEGATIVE_IOU) -> dict:
    """How boxes fare with their best anchor (see the module docstring's buckets).

    Args:
      best_iou: float [N], each box's best anchor IoU.
    Returns:
      {"positive": share > positive_iou, "forced_best": share in [negative_iou, positive_iou],
       "forced_below_negative": share < negative_iou, "mean_best_iou"}; NaNs for no boxes.
    """
    best = np.asarray(best_iou, np.float64)
    if best.size == 0:
        return dict.fromkeys(
            ("positive", "forced_best", "forced_below_negative", "mean_best_iou"), float("nan")
        )
    positive = float(np.mean(best > positive_iou))
    below = float(np.mean(best < negative_iou))
    return {
        "positive": positive,
        "forced_best": 1.0 - positive - below,
        "forced_below_negative": below,
        "mean_best_iou": float(np.mean(best)),
    }


def _geometric_grid(low, high, steps_per_octave):
    """2^(j / steps_per_octave) from just below `low` to just above `high`, 4 significant
    digits (so the printed anchors are the ones evaluated)."""
    first = int(np.floor(np.log2(low) * steps_per_octave))
    last = int(np.ceil(np.log2(high) * steps_per_octave))
    values = 2.0 ** (np.arange(first, last + 1) / steps_per_octave)
    return np.unique([float(f"{value:.4g}") for value in values])


def _snap(values, grid, count):
    """`count` distinct grid indices nearest to `values` (log distance), ascending."""
    chosen = []
    for value in sorted(values)[:count]:
        order = np.argsort(np.abs(np.log(grid) - np.log(value)), kind="stable")
        chosen.append(int(next(index for index in order if index not in chosen)))
    return sorted(chosen)


def _better(score, current):
    """Strictly better (objective, mean IoU); the margins absorb summation-order rounding, so
    the search cannot cycle between sets that score the same."""
    if score[0] > current[0] + 1e-12:
        return True
    return abs(score[0] - current[0]) <= 1e-12 and score[1] > current[1] + 1e-9


class _Objective:
    """Scores anchor sets on a table of best IoUs [N, ratios, scales] (see the module
    docstring): the class-balanced objective first, the class-balanced mean IoU for ties."""

    def __init__(self, table, labels, positive_iou, negative_iou):
        """labels: int [N], sorted (`_canonical` sorts by label first)."""
        self.table = table
        _, self.starts, counts = np.unique(labels, return_index=True, return_counts=True)
        self.counts = counts.astype(np.float64)[:, np.newaxis]
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou

    def class_mean(self, values):
        """Mean over classes of the per-class mean of `values` [N, c]: [c]."""
        return np.mean(np.add.reduceat(values, self.starts, axis=0) / self.counts, axis=0)

    def score(self, best):
        """(objective [c], mean IoU [c]) for candidate columns of best IoUs [N, c]."""
        # Integer counts per class, so equal counts give bit-equal objectives.
        points = (best > self.positive_iou).astype(np.int64) + (best >= self.negative_iou)
        return self.class_mean(points) / 2.0, self.class_mean(best)

    def best_of(self, ratio_index, scale_index):
        chosen = self.table[:, ratio_index][:, :, scale_index]
        return chosen.reshape(len(chosen), -1).max(axis=1).astype(np.float64)

    def __call__(self, ratio_index, scale_index):
        value, mean_iou = self.score(self.best_of(ratio_index, scale_index)[:, np.newaxis])
        return float(value[0]), float(mean_iou[0])

    def improve_slot(self, ratio_index, scale_index, axis, slot, current, fixed_axis):
        """The best replacement of set member `slot` on `axis` ("scale" or "ratio"): returns
        (index lists, score), or None when no candidate beats `current`."""
        if axis in fixed_axis:
            return None
        members = list(scale_index if axis == "scale" else ratio_index)
        others = members[:slot] + members[slot + 1 :]
        if axis == "scale":
            rest = self.best_of(ratio_index, others) if others else np.zeros(len(self.table))
            candidates = self.table[:, ratio_index, :].max(axis=1)  # [N, scales]
        else:
            rest = self.best_of(others, scale_index) if others else np.zeros(len(self.table))
            candidates = self.table[:, :, scale_index].max(axis=2)  # [N, ratios]
        best = np.maximum(rest[:, np.newaxis], candidates.astype(np.float64))
        value, mean_iou = self.score(best)
        order = np.lexsort((-mean_iou, -value))  # best first; ties: lowest index
        for index in order:
            if index in others:
                continue
            score = (float(value[index]), float(mean_iou[index]))
            if index == members[slot] or not _better(score, current):
                return None
            members[slot] = int(index)
            members.sort()
            if axis == "scale":
                return (ratio_index, members), score
            return (members, scale_index), score
        return None


def _canonical(boxes: ResizedBoxes) -> ResizedBoxes:
    """The instances in a fixed order (by label, box, image shape), then at most
    MAX_FIT_BOXES of them by a fixed-seed sample: the fit depends on the set only."""
    keys = np.column_stack([boxes.labels, boxes.boxes, boxes.image_shapes, boxes.cells])
    order = np.lexsort(keys.T[::-1])
    boxes = boxes.take(order)
    if len(order) > MAX_FIT_BOXES:
        sample = np.sort(np.random.default_rng(0).choice(len(order), MAX_FIT_BOXES, replace=False))
        boxes = boxes.take(sample)
    return boxes


def fit_anchors(
    boxes: ResizedBoxes,
    *,
    num_scales=3,
    num_ratios=3,
    iou_thresholds=(POSITIVE_IOU, NEGATIVE_IOU),
    inside_only=True,
    start=None,
    scales=None,
    ratios=None,
    layout=None,
) -> AnchorFit:
    """Scales x ratios that maximise the objective on `boxes` (see the module docstring).

    Args:
      boxes: the box instances to cover (absolute [ymin, xmin, ymax, xmax] of resized images).
      num_scales, num_ratios: set size, k = num_scales * num_ratios.
      inside_only: see `best_anchor_iou`.
      iou_thresholds: (rpn.positive_iou, rpn.negative_iou).
      start: optional (scales, ratios) tried as a second starting point (the configured set).
      scales, ratios: keep these fixed and fit only the other (None: fit both).
      layout: the anchor levels (`Layout`, anchor side = base size * scale); default
        `Layout.single()`. On a pyramid num_scales counts sizes per level.
    Returns:
      AnchorFit with ascending scales and ratios.
    Raises:
      ValueError when there are no boxes to fit.
    """
    if len(boxes.labels) == 0:
        raise ValueError("no boxes to fit anchors to")
    layout = layout or Layout.single()
    base_size = layout.base_sizes[int(np.argmin(layout.strides))]
    boxes = _canonical(boxes)
    side, ratio = _sides_and_ratios(boxes)
    scale_grid, ratio_grid = _candidate_grids(boxes, side, ratio, base_size, scales, ratios)
    fixed = {"scale"} if scales is not None else set()
    fixed |= {"ratio"} if ratios is not None else set()
    num_scales = len(scale_grid) if scales is not None else min(num_scales, len(scale_grid))
    num_ratios = len(ratio_grid) if ratios is not None else min(num_ratios, len(ratio_grid))

    table = layout_best_iou(boxes, layout, scale_grid, ratio_grid, inside_only).reshape(
        len(boxes.labels), len(ratio_grid), len(scale_grid)
    )
    positive_iou, negative_iou = iou_thresholds
    objective = _Objective(table, boxes.labels, positive_iou, negative_iou)
    starts = [
        (
            _snap(_quantiles(ratio, num_ratios, spread), ratio_grid, num_ratios),
            _snap(_quantiles(side / base_size, num_scales, spread), scale_grid, num_scales),
        )
        for spread in START_SPREADS
    ]
    if start is not None and len(start[0]) >= num_scales and len(start[1]) >= num_ratios:
        starts.append(
            (_snap(start[1], ratio_grid, num_ratios), _snap(start[0], scale_grid, num_scales))
        )
    # A fixed axis has as many members as grid values, so every start snaps to all of them.
    score, ratio_index, scale_index = _search(objective, starts, (num_scales, num_ratios), fixed)
    best = objective.best_of(ratio_index, scale_index)[:, np.newaxis]
    return AnchorFit(
        scales=[float(scale_grid[i]) for i in scale_index],
        ratios=[float(ratio_grid[i]) for i in ratio_index],
        score=score[0],
        coverage=float(objective.class_mean(best > positive_iou)[0]),
        mean_iou=score[1],
    )


def _sides_and_ratios(boxes):
    """float64 [N] sqrt(height * width) and height / width of the boxes."""
    b = boxes.boxes.astype(np.float64)
    height = np.maximum(b[:, 2] - b[:, 0], 1e-3)
    width = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    return np.sqrt(height * width), height / width


def _candidate_grids(boxes, side, ratio, base_size, scales, ratios):
    """(scale grid, ratio grid): the fixed values, or geometric grids over the boxes' range."""
    longest = float(np.max(boxes.image_shapes))
    scale_grid = (
        np.asarray(sorted(scales), np.float64)
        if scales is not None
        else _geometric_grid(
            max(np.percentile(side, 0.5) / 1.25, 4.0) / base_size,
            min(np.percentile(side, 99.5) * 1.25, 2 * longest) / base_size,
            8,
        )
    )
    ratio_grid = (
        np.asarray(sorted(ratios), np.float64)
        if ratios is not None
        else _geometric_grid(
            max(np.percentile(ratio, 0.5) / 1.19, 1 / 16),
            min(np.percentile(ratio, 99.5) * 1.19, 16.0),
            4,
        )
    )
    return scale_grid, ratio_grid


def _quantiles(values, count, spread):
    """`count` quantiles of log `values`, evenly spaced over the middle `spread`."""
    levels = 0.5 + spread * (np.arange(count) - (count - 1) / 2) / max(count, 1)
    return np.exp(np.percentile(np.log(values), 100 * np.clip(levels, 0.0, 1.0)))


def _search(objective, starts, counts, fixed):
    """The coordinate search from each start; returns the best (score, ratio index, scale
    index). counts: (num_scales, num_ratios)."""
    results = []
    for ratio_index, scale_index in starts:
        score = objective(ratio_index, scale_index)
        improved = True
        while improved:
            improved = False
            for axis, count in zip(("scale", "ratio"), counts):
                for slot in range(count):
                    step = objective.improve_slot(
                        ratio_index, scale_index, axis, slot, score, fixed
                    )
                    if step is not None:
                        (ratio_index, scale_index), score = step
                        improved = True
        results.append((score, ratio_index, scale_index))
    chosen = results[0]
    for result in results[1:]:
        if _better(result[0], chosen[0]):
            chosen = result
    return chosen
