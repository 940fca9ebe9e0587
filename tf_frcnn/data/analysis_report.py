"""Showing a dataset analysis (`tf_frcnn.data.analysis.Analysis`): the terminal table,
analysis.json and PNG histograms (box sides and aspect ratios per class with the anchors
marked, and the best anchor IoU per class).

Plots are drawn on matplotlib's Agg canvas without pyplot (`report_plots.new_figure`), so they
need no display and leave the caller's pyplot state alone.
"""

from __future__ import annotations

import math
import os

import numpy as np

from tf_frcnn.evaluation.report import write_metrics_json
from tf_frcnn.evaluation.report_plots import new_figure

MAX_PANELS = 12  # "all" and the classes with the most boxes
PLOTS = ("box_sides.png", "aspect_ratios.png", "best_anchor_iou.png")


def _number(value, digits=0):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _share(value):
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _spread(percentiles, digits):
    if percentiles is None:
        return "-"
    return "/".join(_number(percentiles[key], digits) for key in ("p5", "p50", "p95"))


def _header(s):
    resize, reader = s["resize"], s["reader"]
    return [
        f"split '{s['split']}' ({s['source']}): {s['images']} images, {s['boxes']} boxes, "
        f"{s['images_without_boxes']} images without boxes, "
        f"{s['excluded_difficult_or_crowd']} difficult/crowd objects left out (as in training)",
        f"reader: {reader['dropped_boxes']} boxes dropped (inverted, zero-area or outside), "
        f"{reader['clipped_boxes']} clipped to the image, {reader['skipped_images']} images "
        "skipped",
        f"resize: shorter side {'/'.join(str(v) for v in resize['shorter_sides'])}, longer at "
        f"most {resize['max_size']}; sizes below in pixels of the resized image",
        *([s["sizes"]["text"]] if s["sizes"]["auto"] else []),
        "",
    ]


def _class_table(s):
    """The per-class rows, aligned, and the legend."""
    fitted = "fitted" in s["anchors"]
    pos, neg = s["positive_iou"], s["negative_iou"]
    levels = next(iter(s["classes"].values())).get("best_level")
    headers = ["class", "boxes", "images", "side p5/50/95", "h/w p5/50/95", "<2 cells"]
    headers += [f">{pos:g}", f"{neg:g}-{pos:g}", f"<{neg:g}"]
    headers += [f"fit >{pos:g}", f"fit <{neg:g}"] if fitted else []
    headers += list(levels) if levels else []
    headers.append("overlap p99")
    rows = [_class_row(name, entry, fitted) for name, entry in s["classes"].items()]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in [headers] + rows
    ]
    level_text = (
        f"; {'/'.join(levels)}: share of the boxes whose best {'fitted' if fitted else ''} "
        "anchor lies on that level"
        if levels
        else ""
    )
    lines.append(
        f"(>{pos:g}: boxes with a positive anchor by IoU; {neg:g}-{pos:g}: only the "
        f"forced best anchor; <{neg:g}: the forced best would be a negative; "
        f"<2 cells: side under {2 * s['anchors']['stride']} px, two cells of the finest "
        f"stride in use{level_text})"
    )
    return lines


def _class_row(name, entry, fitted):
    coverage = entry["coverage"]
    row = [
        name,
        str(entry["boxes"]),
        str(entry["images"]),
        _spread(entry["side"], 0),
        _spread(entry["aspect_ratio"], 2),
        _share(entry["under_two_cells"]),
        _share(coverage["positive"]),
        _share(coverage["forced_best"]),
        _share(coverage["forced_below_negative"]),
    ]
    if fitted:
        fit = entry["coverage_fitted"]
        row += [_share(fit["positive"]), _share(fit["forced_below_negative"])]
    levels = entry.get("best_level")
    row += [_share(share) for share in levels.values()] if levels else []
    overlap = entry["same_class_overlap"]
    row.append(_number(overlap["p99"], 2) if overlap else "-")
    return row


_SET_LABELS = {
    "configured": "configured",
    "fitted": "fitted",
    "fitted_two_per_level": "fitted 2 sizes/level",
}


def _anchor_lines(s):
    pos, neg = s["positive_iou"], s["negative_iou"]
    lines = []
    for key, label in _SET_LABELS.items():
        if key in s["anchors"]:
            a = s["anchors"][key]
            sides = "/".join(f"{side:.4g}" for side in a["sides"])
            where = "" if a["layout"].startswith("stride") else f" on {a['layout']}, doubling"
            lines.append(
                f"anchors {label}: scales {a['scales']} x ratios {a['ratios']} "
                f"({sides} px{where}): >{pos:g} {a['coverage']:.3f}, <{neg:g} "
                f"{a['below_negative']:.3f}, fit objective {a['score']:.3f} (class "
                f"means); >{pos:g} {a['coverage_all_boxes']:.3f} of all boxes"
            )
    return lines


def _layout_lines(s):
    """Coverage with and without the pyramid: what the pyramid buys (or costs)."""
    layouts, pos = s["layouts"], s["positive_iou"]
    lines = [f"pyramid vs one map (boxes with an anchor of IoU > {pos:g}, class means):"]
    for key in ("single", "pyramid"):
        layout = layouts[key]
        sets = ", ".join(
            f"{label} {layout[name]['coverage']:.3f} "
            f"({'/'.join(f'{side:.4g}' for side in layout[name]['sides'])} px)"
            for name, label in _SET_LABELS.items()
            if name in layout
        )
        model = "  <- the model" if layouts["model"] == key else ""
        lines.append(
            f"  {layout['name']:<10} under two cells ({2 * layout['finest_stride']} px) "
            f"{_share(layout['under_two_cells'])}; anchors {sets}{model}"
        )
    return lines


def format_analysis(summary) -> str:
    """The terminal report of an analysis summary: counts, one row per class, the anchors, the
    pyramid comparison, NMS and the recommendations."""
    s = summary
    lines = _header(s) + _class_table(s) + [""] + _anchor_lines(s) + _layout_lines(s)
    nms = s["nms"]
    lines.append(
        f"detection NMS: configured {nms['configured']:g}, implied "
        f"{nms['recommended']:g} (99th percentile same-class overlap "
        f"{nms['overlap_p99']:.2f}; {nms['share_above_configured']:.1%} of the boxes "
        "overlap one of their class above the configured value)"
    )
    lines.append("")
    if s["recommendations"]:
        lines.append("recommendations:")
        for item in s["recommendations"]:
            lines.append(f"  {item['key']}: {item['value']}  ({item['reason']})")
    else:
        lines.append("recommendations: none, the configuration fits the data")
    lines.append(f"analysed in {s['seconds']:.1f} s")
    return "\n".join(lines)


def _panels(analysis):
    """ "all" and the classes with the most boxes; just the class when there is one."""
    names = [name for name in analysis.sides if name != "all"]
    if len(names) == 1:
        return names
    names.sort(key=lambda name: -len(analysis.sides[name]))
    return ["all"] + names[: MAX_PANELS - 1]


def _grid_figure(count):
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure = new_figure(3.6 * columns, 2.8 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _histogram(axes, values, edges, title, ratio_labels=False):
    """A log-x histogram with ticks at the powers of two (1/4, 1/2, 1, 2 ... for ratios)."""
    from matplotlib.ticker import NullFormatter

    axes.hist(values, bins=edges, color="tab:blue", alpha=0.75)
    axes.set_xscale("log")
    powers = range(math.floor(math.log2(edges[0])), math.ceil(math.log2(edges[-1])) + 1)
    powers = [p for p in powers if edges[0] <= 2.0**p <= edges[-1]]
    labels = [f"1/{2**-p:g}" if ratio_labels and p < 0 else f"{2.0**p:g}" for p in powers]
    axes.set_xticks([2.0**p for p in powers], labels)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_title(title, fontsize="medium")
    axes.tick_params(labelsize="small")


def _mark(axes, values, color, style, label):
    for index, value in enumerate(values):
        axes.axvline(
            value, color=color, linestyle=style, linewidth=1.3, label=label if index == 0 else None
        )


def _log_edges(arrays, low_floor):
    values = (
        np.concatenate([a for a in arrays if len(a)]) if any(len(a) for a in arrays) else np.ones(1)
    )
    low = max(float(values.min()) / 1.2, low_floor)
    high = max(float(values.max()) * 1.2, low * 2)
    return np.geomspace(low, high, 40)


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def _plot_with_anchors(analysis, path, key, noun, xlabel, title, *, floor, extra=(), shade=None):
    """Log histograms of the boxes' `key` ("sides" or "ratios") per panel, the anchor sets'
    `key` marked (configured dashed red, fitted green) and, with `shade` ((high, label)), the
    range below `high` shaded; `extra` values widen the x range."""
    anchors = analysis.summary["anchors"]
    # Sides: every level's on a pyramid.
    key_of = "sides_all_levels" if key == "sides" else key
    marks = {name: anchors[name][key_of] for name in ("configured", "fitted") if name in anchors}
    values = getattr(analysis, key)
    edges = _log_edges([values["all"], np.asarray(sum(marks.values(), list(extra)))], floor)
    panels = _panels(analysis)
    figure, axes_list = _grid_figure(len(panels))
    for axes, name in zip(axes_list, panels):
        title_of = f"{name} ({analysis.summary['classes'][name]['boxes']} boxes)"
        _histogram(axes, values[name], edges, title_of, ratio_labels=key == "ratios")
        if shade:
            axes.axvspan(edges[0], shade[0], color="tab:orange", alpha=0.12, label=shade[1])
        if "fitted" in marks:  # first, so a configured line on the same value shows
            _mark(axes, marks["fitted"], "tab:green", "-", f"fitted {noun}")
        _mark(axes, marks["configured"], "tab:red", "--", f"configured {noun}")
        axes.set_xlabel(xlabel, fontsize="small")
    axes_list[0].legend(fontsize="x-small")
    figure.suptitle(title)
    return _save(figure, path)


def plot_box_sides(analysis, path):
    """Box sides (sqrt(h * w), resized pixels) per class with the anchor sides, the two-cell
    limit shaded."""
    stride = analysis.summary["anchors"]["stride"]
    return _plot_with_anchors(
        analysis,
        path,
        "sides",
        "anchors",
        "box side sqrt(h*w), px",
        "Box sides after the resize, with the anchor sides",
        floor=1.0,
        extra=[1.5 * stride],
        shade=(2 * stride, f"< {2 * stride} px (2 cells)"),
    )


def plot_aspect_ratios(analysis, path):
    """Box aspect ratios (height / width) per class with the anchor ratios."""
    return _plot_with_anchors(
        analysis,
        path,
        "ratios",
        "ratios",
        "aspect ratio h/w",
        "Box aspect ratios, with the anchor ratios",
        floor=1e-2,
    )


def plot_best_iou(analysis, path):
    """Histogram of each box's best anchor IoU per class, configured vs fitted anchors, with the
    RPN's negative and positive thresholds."""
    panels = _panels(analysis)
    figure, axes_list = _grid_figure(len(panels))
    edges = np.linspace(0.0, 1.0, 41)
    summary = analysis.summary
    for axes, name in zip(axes_list, panels):
        axes.hist(
            analysis.best_iou[name], bins=edges, color="tab:red", alpha=0.5, label="configured"
        )
        if analysis.best_iou_fitted is not None:
            fitted = analysis.best_iou_fitted[name]
            axes.hist(fitted, bins=edges, color="tab:green", alpha=0.5, label="fitted")
        for threshold in (summary["negative_iou"], summary["positive_iou"]):
            axes.axvline(threshold, color="black", linestyle=":", linewidth=1)
        axes.set_title(f"{name} ({len(analysis.best_iou[name])} box views)", fontsize="medium")
        axes.set_xlabel("best anchor IoU", fontsize="small")
        axes.tick_params(labelsize="small")
    axes_list[0].legend(fontsize="x-small")
    figure.suptitle("Best anchor IoU of each box on its image's grid")
    return _save(figure, path)


def write_analysis(analysis, out_dir) -> list:
    """Writes analysis.json and the PNGs into `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [str(write_metrics_json(analysis.summary, os.path.join(out_dir, "analysis.json")))]
    for name, plot in zip(PLOTS, (plot_box_sides, plot_aspect_ratios, plot_best_iou)):
        paths.append(plot(analysis, os.path.join(out_dir, name)))
    return paths
