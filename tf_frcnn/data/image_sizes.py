"""Image sizes from the data: what `data.min_size: auto` / `data.max_size: auto` resolve to.

The rule. "auto" keeps the paper's sizes (shorter side AUTO_MIN_SIZE = 600, longer at most
5/3 of it: 1000) unless, at the smallest shorter side training uses (min_size or the smallest
of data.augment.scales), over TINY_SHARE of the boxes are under two cells of the finest stride
in use (16 on one level, 2**min_level with model.fpn) while the images are natively larger:
then the images keep their native size (the median shorter side, at most MAX_NATIVE), and
augment.scales below it are raised to it (no view shrinks the median image; multi-scale is
given up rather than paid for with upscaled images). max_size "auto" is 5/3 of the resolved
min_size (rounded up), capped by data.pad_to. Upscaling beyond the native
size is left to `tf-frcnn analyze`'s advice (it costs compute).
"""

from __future__ import annotations

import numpy as np

from tf_frcnn.data.box_stats import layout_of, under_two_cells
from tf_frcnn.data.split_boxes import resized_shapes

AUTO_MIN_SIZE = 600  # the paper's shorter side
AUTO_LONGER = 5 / 3  # the paper's 1000 / 600
MAX_NATIVE = 1024  # a native shorter side kept by "auto" is capped here
TINY_SHARE = 0.1  # share of boxes under two cells that is too many


def round_up(value, multiple=32):
    """The next multiple, not counting float noise (600 * 32 / 20.000001 is 960)."""
    return int(np.ceil(value / multiple - 1e-3) * multiple)


def box_sides(split, min_size, max_size):
    """float [N]: sqrt(height * width) of every box of `split` after the resize, pixels."""
    resized = resized_shapes(split.image_shapes, min_size, max_size)[split.image_index]
    b = split.boxes.astype(np.float64)
    return np.sqrt((b[:, 2] - b[:, 0]) * resized[:, 0] * (b[:, 3] - b[:, 1]) * resized[:, 1])


def _max_size(data, min_size):
    if data.max_size != "auto":
        return int(data.max_size)
    longest = int(np.ceil(min_size * AUTO_LONGER - 1e-6))
    return min(longest, min(data.pad_to)) if data.pad_to else longest


def size_plan(config, split) -> dict:
    """The sizes `config` resolves to on `split` (module docstring): {"min_size", "max_size",
    "scales" (data.augment.scales), "auto" (a key was "auto"), "keep_native" (and
    "would_keep_native" with min_size "auto"), "native" (median
    shorter side), "finest_stride", "under_two_cells" (share at the smallest side used with
    the paper's sizes, and with the resolved ones)}."""
    d, finest = config.data, layout_of(config).finest
    base = AUTO_MIN_SIZE if d.min_size == "auto" else int(d.min_size)
    smallest = min([base, *(d.augment.scales or [])])
    before = under_two_cells(box_sides(split, smallest, _max_size(d, base)), finest) or 0.0
    native = int(np.median(np.min(split.image_shapes, axis=1)))
    target = min(native, MAX_NATIVE)
    would_keep = bool(before > TINY_SHARE and target > smallest)
    keep = d.min_size == "auto" and would_keep
    min_size = max(base, target) if keep else base
    scales = d.augment.scales
    if keep and scales:
        scales = sorted({max(int(s), target) for s in scales})
    max_size = _max_size(d, min_size)
    after = under_two_cells(box_sides(split, min([min_size, *(scales or [])]), max_size), finest)
    return {
        "min_size": min_size,
        "max_size": max_size,
        "scales": scales,
        "auto": "auto" in (d.min_size, d.max_size),
        "keep_native": bool(keep),
        "would_keep_native": would_keep,  # what min_size "auto" would do
        "native": native,
        "smallest_side": smallest,
        "finest_stride": finest,
        "under_two_cells": {"paper_sizes": before, "resolved": after or 0.0},
    }


def plan_text(config, plan) -> str:
    """One line for `train` and `analyze`: the sizes and why."""
    d = config.data
    share = plan["under_two_cells"]
    why = (
        f"{share['paper_sizes']:.0%} of the boxes would be under two cells of stride "
        f"{plan['finest_stride']} ({2 * plan['finest_stride']} px) at the smallest side "
        f"{plan['smallest_side']}: the images keep their native "
        f"size (median shorter side {plan['native']} px)"
        if plan["would_keep_native"]
        else f"{share['paper_sizes']:.0%} of the boxes under two cells of stride "
        f"{plan['finest_stride']} ({2 * plan['finest_stride']} px)"
    )
    scales = f", augment.scales {plan['scales']}" if plan["scales"] else ""
    return (
        f"image sizes (data.min_size {d.min_size!r}, max_size {d.max_size!r}): min_size "
        f"{plan['min_size']}, max_size {plan['max_size']}{scales} ({why}; after: "
        f"{share['resolved']:.0%} under two cells)"
    )


def apply_plan(config, plan):
    """Writes the plan's sizes into `config` (a copy the caller owns)."""
    config.data.min_size = plan["min_size"]
    config.data.max_size = plan["max_size"]
    config.data.augment.scales = plan["scales"]
    return config
