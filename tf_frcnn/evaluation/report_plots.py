"""The report's PNG plots: precision-recall curves, training loss, RPN recall, validation curves.

matplotlib is imported only when a plot is drawn; plots are drawn on its Agg canvas directly (no
pyplot), so they work without a display and leave the caller's pyplot state alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tf_frcnn.evaluation.recall import RECALL_PROPOSALS, recall_key, rpn_recall
from tf_frcnn.evaluation.report_tables import class_name


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_pr_curves(voc_result: Mapping, class_names, path, thresholds=None) -> Path:
    """Draws one precision-recall curve per class into a PNG.

    Args:
      voc_result: the dict `voc_metrics` (or `Evaluator.voc_result`) returns.
      class_names: names of labels 1..C, a sequence (`class_names[label - 1]`), a mapping
        {label: name}, or None for the labels themselves.
      thresholds: optional {label: {"threshold", "precision", "recall"}} (the max-F1 points of
        `thresholds.max_f1_thresholds`), marked on each curve.

    Returns:
      The path. Classes without ground truth are left out; one with ground truth but no detection
      appears in the legend only.
    """
    figure = new_figure(9, 6)
    axes = figure.add_subplot()
    colors = _colors(len(voc_result["precision"]))
    for color, label in zip(colors, voc_result["precision"]):
        if not voc_result["num_gt"][label]:
            continue
        name = class_name(class_names, label)
        ap, ap07 = voc_result["per_class_AP"][label], voc_result["per_class_AP_voc07"][label]
        axes.plot(
            voc_result["recall"][label],
            voc_result["precision"][label],
            color=color,
            label=f"{name}: AP {ap:.3f}, AP07 {ap07:.3f}",
        )
        point = (thresholds or {}).get(label)
        if point and not math.isnan(point["threshold"]):
            axes.plot(point["recall"], point["precision"], "o", color=color)
            axes.annotate(
                f"score {point['threshold']:.2f}",
                (point["recall"], point["precision"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="x-small",
                color=color,
            )
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    iou = voc_result.get("iou_threshold", 0.5)
    axes.set_title(
        f"Precision-recall per class (IoU {iou:g}): mAP {voc_result['mAP_voc']:.3f}, "
        f"VOC07 mAP {voc_result['mAP_voc07']:.3f}"
    )
    axes.grid(True, alpha=0.3)
    if thresholds:
        axes.plot([], [], "o", color="gray", label="max-F1 point (its score threshold)")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    else:
        axes.text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    return _save(figure, path)


def _colors(count: int):
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def smooth(values: Sequence[float], weight: float | None = None) -> np.ndarray:
    """Exponential moving average of `values` [T], debiased as TensorBoard's is (the first
    values are not pulled towards 0). `weight` defaults to 1 - 25 / T, within [0, 0.98]: about
    the same smoothness whatever the length."""
    values = np.asarray(values, np.float64).reshape(-1)
    if weight is None:
        weight = float(np.clip(1.0 - 25.0 / max(values.size, 1), 0.0, 0.98))
    smoothed, last = np.empty_like(values), 0.0
    for t, value in enumerate(values):
        last = weight * last + (1.0 - weight) * value
        smoothed[t] = last / (1.0 - weight ** (t + 1))
    return smoothed


def _plot_per_stage(history: Mapping, path, title: str, empty: str, draw) -> Path:
    """One panel per stage of `history` ({stage: points}), each drawn by
    `draw(axes, points, stage)`; `empty` says what is missing when there is no stage."""
    stages = list(history.items())
    columns = min(max(len(stages), 1), 2)
    rows = max(math.ceil(len(stages) / columns), 1)
    figure = new_figure(6 * columns, 3.5 * rows)
    if not stages:
        figure.add_subplot().text(0.5, 0.5, empty, ha="center", va="center")
    for i, (stage, points) in enumerate(stages):
        axes = figure.add_subplot(rows, columns, i + 1)
        draw(axes, points, stage)
        axes.set_title(str(stage))
        axes.set_xlabel("step")
        axes.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_loss_curves(history: Mapping[str, Sequence], path) -> Path:
    """Draws the training loss of each stage into a PNG, one panel per stage (their scales
    differ): the raw losses faint, their moving average (`smooth`) over them.

    Args:
      history: {stage name: [(step, loss), ...]} in the order the stages ran, e.g. the four stages
        of the alternating training.
    """

    def draw(axes, points, _stage):
        steps = [float(step) for step, _ in points]
        losses = [float(loss) for _, loss in points]
        if steps:
            axes.plot(
                steps,
                losses,
                color="tab:blue",
                alpha=0.25,
                linewidth=0.8,
                label="raw",
                marker="." if len(steps) < 30 else None,
            )
            axes.plot(steps, smooth(losses), color="tab:blue", linewidth=1.6, label="smoothed")
            # A fixed corner: "best" tests every position against thousands of points.
            axes.legend(fontsize="small", loc="upper right")
        else:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
        axes.set_ylabel("loss")

    return _plot_per_stage(history, path, "Training loss per stage", "no training history", draw)


# N of the recall-against-proposals curve, and IoU values of the recall-against-IoU curve.
RECALL_CURVE_PROPOSALS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000)
RPN_TICKS = (1, 2, 5, 10, 20, 50, 100, 300, 1000)
RECALL_CURVE_IOUS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def plot_rpn_recall(
    groundtruths: list[dict], proposals: list[dict], path, num_proposals=RECALL_PROPOSALS
) -> Path:
    """Draws RPN recall (`recall.rpn_recall`) into a PNG: against the number of proposals at IoU
    0.5 and 0.7, and against the IoU for `num_proposals` (the Faster R-CNN paper's Fig. 4).

    Args:
      groundtruths, proposals: per-image records as for `rpn_recall`, absolute boxes.
    """

    counts = sorted(set(RECALL_CURVE_PROPOSALS) | set(num_proposals))
    ious = sorted(set(RECALL_CURVE_IOUS) | {0.7})
    recall = rpn_recall(groundtruths, proposals, counts, ious)
    figure = new_figure(12, 4)
    by_count = figure.add_subplot(1, 2, 1)
    for iou, style in ((0.5, "o-"), (0.7, "s--")):
        by_count.plot(
            counts, [recall[recall_key(n, iou)] for n in counts], style, label=f"IoU {iou:g}"
        )
    by_count.set_xscale("log")
    # Plain tick labels (the log axis' 10^k labels go through mathtext, slow to lay out), at
    # least 0.3 decades apart so that neighbours such as 200 and 300 never run together.
    by_count.set_xticks(RPN_TICKS, [str(n) for n in RPN_TICKS], fontsize="small")
    by_count.minorticks_off()
    by_count.set_xlabel("number of proposals")
    by_count.set_ylabel("recall")
    by_count.set_title("RPN recall against the number of proposals")
    by_iou = figure.add_subplot(1, 2, 2)
    for n in num_proposals:
        by_iou.plot(ious, [recall[recall_key(n, iou)] for iou in ious], label=f"{n} proposals")
    by_iou.set_xlabel("IoU")
    by_iou.set_title("RPN recall against IoU (paper Fig. 4)")
    for axes in (by_count, by_iou):
        axes.set_ylim(0.0, 1.02)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.subplots_adjust(wspace=0.25)
    return _save(figure, path)


NOT_PLOTTED = ("step", "images")


def plot_validation_curves(
    history: Mapping[str, Sequence[Mapping]], path, selected: Mapping | None = None
) -> Path:
    """Draws the validation metrics recorded during training into a PNG, one panel per stage.

    Args:
      history: {stage: [{"step": int, metric: float, ...}, ...]}, e.g. the rows of
        logs/{stage}.val.jsonl; every key other than "step" and "images" is a line.
      selected: {"stage", "step", ...} of the weights `eval` uses (state.json's "best"), marked
        with a dashed line and labelled on its stage's panel.
    """

    def draw(axes, rows, stage):
        # "images" counts the validation images: not a metric.
        keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in NOT_PLOTTED]
        for key in keys:
            points = [
                (row["step"], row[key])
                for row in rows
                if isinstance(row.get(key), (int, float)) and row.get("step") is not None
            ]
            axes.plot([p[0] for p in points], [p[1] for p in points], "o-", label=key)
        if selected and selected.get("stage") == stage and selected.get("step") is not None:
            axes.axvline(
                selected["step"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"selected weights (step {selected['step']})",
            )
        axes.legend(fontsize="small")

    stages = {stage: rows for stage, rows in history.items() if rows}
    return _plot_per_stage(
        stages, path, "Validation during training", "no validation history", draw
    )
