"""Reporting evaluation results: a text table, `metrics.json`, PNG plots and a Markdown report.

Plots need matplotlib, imported only when a plot is drawn. They are drawn on matplotlib's Agg canvas
directly (no pyplot), so they work without a display and leave the caller's pyplot state alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# What each summary metric means, for the report's legend.
METRIC_DESCRIPTIONS = {
    "AP": "COCO AP averaged over IoU 0.50:0.05:0.95, up to 100 detections per image",
    "AP50": "COCO AP at IoU 0.50",
    "AP75": "COCO AP at IoU 0.75",
    "APs": "COCO AP for small objects (area < 32^2 px)",
    "APm": "COCO AP for medium objects (32^2 to 96^2 px)",
    "APl": "COCO AP for large objects (area > 96^2 px)",
    "AR1": "COCO average recall with 1 detection per image",
    "AR10": "COCO average recall with 10 detections per image",
    "AR100": "COCO average recall with 100 detections per image",
    "mAP_voc07": "VOC2007 11-point mAP at IoU 0.5, difficult objects excluded",
    "mAP_voc": "VOC2010+ all-point mAP at IoU 0.5, difficult objects excluded",
}


def class_name(class_names: Sequence[str] | Mapping[int, str] | None, label: int) -> str:
    """Name of a 1-based label: `class_names[label - 1]` for a sequence, `class_names[label]` for a
    mapping; the label itself as text when there is no name."""
    label = int(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, class_names.get(str(label), label)))
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return str(label)


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):.3f}"
    return str(value)


def metric_tables(metrics: Mapping) -> list[tuple[list[str], list[list[str]]]]:
    """The summary table (every scalar metric, in the dict's order) and, when present, the
    per-class one."""
    summary = [
        [str(key), _cell(value)]
        for key, value in metrics.items()
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ]
    tables = [(["metric", "value"], summary)]
    per_class = metrics.get("per_class")
    if per_class:
        columns = [key for key in next(iter(per_class.values())) if key != "name"]
        rows = [
            [str(entry.get("name", label))]
            + [_cell(entry.get(column, float("nan"))) for column in columns]
            for label, entry in per_class.items()
        ]
        tables.append((["class"] + columns, rows))
    return tables


# What each error type of `errors.error_analysis` is, for the report's legend.
ERROR_DESCRIPTIONS = {
    "classification": "on an object (IoU >= 0.5) of another class",
    "localisation": "on an object of its class, IoU 0.1 to 0.5",
    "both": "wrong class and poor box (IoU 0.1 to 0.5 with another class's object)",
    "duplicate": "a second detection of an object already found",
    "background": "overlaps no object (IoU <= 0.1)",
    "missed": "an object no detection finds or comes close to",
}


def _side(area: float) -> str:
    return "inf" if math.isinf(area) else f"{math.sqrt(area):.1f}"


def _gain(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"+{max(float(value), 0.0):.3f}"


# The explanation under each analysis table; {fields} are filled in from the metrics.
SECTION_NOTES = {
    "AP50 by object size": "Bins by the square root of the box area in original-image pixels: "
    "thirds of this set's objects, then COCO's small / medium / large. AP50: VOC all-point AP at "
    "IoU 0.5 with objects outside the bin ignored; COCO AP: pycocotools' APs/APm/APl.",
    "Error breakdown": "Every false positive and missed object typed as in TIDE (Bolya et al., "
    "ECCV 2020). AP50 now {ap50}; 'AP50 if fixed' is the mAP gained by fixing all errors of that "
    "type alone (TIDE's oracle).",
    "Errors per class": "Count of each error type (AP50 gained by fixing it); false positives "
    "count in their detected class, missed objects in their own.",
    "Score thresholds (maximum F1)": "Per class, the score threshold where F1 of the "
    "precision-recall curve (IoU 0.5) peaks; `tf-frcnn predict --thresholds metrics.json` "
    "applies them.",
    "Confusion matrix": "Rows: true class, columns: detected class; detections at the max-F1 "
    "thresholds (score {threshold:g} for a class without one), matched greedily by IoU >= 0.5 "
    "whatever the class. Background row: detections on no object; background column: objects "
    "no detection matches.",
}


def analysis_sections(metrics: Mapping) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """The error-analysis tables of the reports, from the keys `Evaluator.analysis` adds to the
    metrics: [(title, one-line explanation, headers, rows of cells)], in report order. Sections
    whose key is absent are left out. report.md and report.html both render exactly these."""
    sections = []

    def add(title, headers, rows, **values):
        sections.append((title, SECTION_NOTES[title].format(**values), headers, rows))

    sizes = metrics.get("AP50_by_size")
    if sizes:
        coco_ap = {
            "small": metrics.get("APs"),
            "medium": metrics.get("APm"),
            "large": metrics.get("APl"),
        }

        def size_row(name, entry, coco):
            bounds = f"{_side(entry['low'])} - {_side(entry['high'])}"
            return [name, bounds, _cell(entry["num_gt"]), _cell(entry["AP50"]), coco]

        rows = [size_row(f"{e['name']} (this set)", e, "") for e in sizes["terciles"]]
        rows += [size_row(f"COCO {e['name']}", e, _cell(coco_ap[e["name"]])) for e in sizes["coco"]]
        add("AP50 by object size", ["bin", "side (px)", "objects", "AP50", "COCO AP .50:.95"], rows)
    errors = metrics.get("errors")
    if errors:
        rows = [
            [
                kind,
                _cell(errors["counts"][kind]),
                _gain(errors["delta_AP50"][kind]),
                ERROR_DESCRIPTIONS[kind],
            ]
            for kind in ERROR_DESCRIPTIONS
        ]
        add(
            "Error breakdown",
            ["type", "count", "AP50 if fixed", "meaning"],
            rows,
            ap50=_cell(errors["AP50"]),
        )
        rows = [
            [str(entry["name"]), _cell(entry["AP50"])]
            + [
                f"{entry['counts'][kind]} ({_gain(entry['delta_AP50'][kind])})"
                for kind in ERROR_DESCRIPTIONS
            ]
            for entry in errors["per_class"].values()
        ]
        add("Errors per class", ["class", "AP50"] + list(ERROR_DESCRIPTIONS), rows)
    thresholds = metrics.get("thresholds")
    if thresholds:
        columns = ("threshold", "precision", "recall", "f1")
        rows = [
            [str(entry["name"])] + [_cell(entry[column]) for column in columns]
            for entry in thresholds.values()
        ]
        add(
            "Score thresholds (maximum F1)",
            ["class", "threshold", "precision", "recall", "F1"],
            rows,
        )
    confusion = metrics.get("confusion_matrix")
    if confusion:
        names = [str(name) for name in confusion["classes"]]
        rows = [
            [name] + [_cell(count) for count in row]
            for name, row in zip(names, confusion["matrix"])
        ]
        add(
            "Confusion matrix",
            ["true \\ detected"] + names,
            rows,
            threshold=confusion["default_threshold"],
        )
    return sections


def format_table(metrics: Mapping) -> str:
    """Plain-text tables of `metrics` (as returned by `Evaluator.result`): one row per scalar
    metric, then one row per class if "per_class" is present. Numbers have 3 decimals; NaN shows
    as "n/a"."""
    blocks = []
    for headers, rows in metric_tables(metrics):
        widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

        def line(cells, widths=widths):
            first = cells[0].ljust(widths[0])
            rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
            return "  ".join([first] + rest).rstrip()

        blocks.append(
            "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
        )
    return "\n\n".join(blocks)


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    alignment = [":---"] + ["---:"] * (len(headers) - 1)  # names left, numbers right
    lines = ["| " + " | ".join(cells) + " |" for cells in [headers, alignment] + rows]
    return "\n".join(lines)


def _json_ready(value):
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """`training.state.atomic_write_text` (readers never see a partial file), creating the
    parent directories first."""
    from tf_frcnn.training.state import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_metrics_json(metrics: Mapping, path) -> Path:
    """Writes `metrics` as JSON to `path` atomically. NumPy values become plain numbers and lists,
    keys become strings, and NaN/inf become null (strict JSON has no NaN). Returns the path."""
    path = Path(path)
    write_text_atomic(path, json.dumps(_json_ready(metrics), indent=2, allow_nan=False) + "\n")
    return path


def _new_figure(width: float, height: float):
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
      path: the PNG to write.
      thresholds: optional {label: {"threshold", "precision", "recall"}} (the max-F1 points of
        `thresholds.max_f1_thresholds`), marked on each curve.

    Returns:
      The path. Classes without ground truth are left out; one with ground truth but no detection
      appears in the legend only.
    """
    figure = _new_figure(9, 6)
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
                f"{point['threshold']:.2f}",
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
    """One panel per stage of `history` ({stage: points}), each drawn by `draw(axes, points)`;
    `empty` says what is missing when there is no stage."""
    stages = list(history.items())
    columns = min(max(len(stages), 1), 2)
    rows = max(math.ceil(len(stages) / columns), 1)
    figure = _new_figure(6 * columns, 3.5 * rows)
    if not stages:
        figure.add_subplot().text(0.5, 0.5, empty, ha="center", va="center")
    for i, (stage, points) in enumerate(stages):
        axes = figure.add_subplot(rows, columns, i + 1)
        draw(axes, points)
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
      path: the PNG to write.

    Returns:
      The path.
    """

    def draw(axes, points):
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
RECALL_CURVE_IOUS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def plot_rpn_recall(
    groundtruths: list[dict], proposals: list[dict], path, num_proposals=(100, 300, 1000)
) -> Path:
    """Draws RPN recall (`recall.rpn_recall`) into a PNG: against the number of proposals at IoU
    0.5 and 0.7, and against the IoU for `num_proposals` (the Faster R-CNN paper's Fig. 4).

    Args:
      groundtruths, proposals: per-image records as for `rpn_recall`, absolute boxes.
      path: the PNG to write.

    Returns:
      The path.
    """
    from tf_frcnn.evaluation.recall import recall_key, rpn_recall

    counts = sorted(set(RECALL_CURVE_PROPOSALS) | set(num_proposals))
    ious = sorted(set(RECALL_CURVE_IOUS) | {0.7})
    recall = rpn_recall(groundtruths, proposals, counts, ious)
    figure = _new_figure(12, 4)
    by_count = figure.add_subplot(1, 2, 1)
    for iou, style in ((0.5, "o-"), (0.7, "s--")):
        by_count.plot(
            counts, [recall[recall_key(n, iou)] for n in counts], style, label=f"IoU {iou:g}"
        )
    by_count.set_xscale("log")
    # Plain tick labels: the log axis' default 10^k labels go through mathtext, slow to lay out.
    by_count.set_xticks(counts, [str(n) for n in counts], fontsize="small")
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


def plot_validation_curves(history: Mapping[str, Sequence[Mapping]], path) -> Path:
    """Draws the validation metrics recorded during training into a PNG, one panel per stage.

    Args:
      history: {stage: [{"step": int, metric: float, ...}, ...]}, e.g. the rows of
        logs/{stage}.val.jsonl; every key other than "step" is a line.
      path: the PNG to write.

    Returns:
      The path.
    """

    def draw(axes, rows):
        keys = [key for key in dict.fromkeys(k for row in rows for k in row) if key != "step"]
        for key in keys:
            points = [
                (row["step"], row[key])
                for row in rows
                if isinstance(row.get(key), (int, float)) and row.get("step") is not None
            ]
            axes.plot([p[0] for p in points], [p[1] for p in points], "o-", label=key)
        axes.legend(fontsize="small")

    stages = {stage: rows for stage, rows in history.items() if rows}
    return _plot_per_stage(
        stages, path, "Validation during training", "no validation history", draw
    )


def write_report(
    model_dir, metrics: Mapping, images: Mapping[str, str | os.PathLike], suffix: str = ""
) -> Path:
    """Writes `model_dir/report{suffix}.md`: the metrics tables, what they mean, and the PNGs.

    Args:
      model_dir: directory the report goes into.
      metrics: as returned by `Evaluator.result`.
      images: {section title: PNG path}, e.g. {"Precision-recall curves": ".../pr_curves.png"};
        linked relative to `model_dir`.

    Returns:
      The report's path.
    """
    model_dir = Path(model_dir)
    tables = metric_tables(metrics)
    parts = ["# Evaluation report", ""]
    if "num_images" in metrics:
        parts += [f"Evaluated on {metrics['num_images']} images.", ""]
    parts += ["## Metrics", "", _markdown_table(*tables[0]), ""]
    described = [key for key in metrics if key in METRIC_DESCRIPTIONS]
    recalls = [key for key in metrics if str(key).startswith("recall@")]
    if described or recalls:
        parts += [f"- `{key}`: {METRIC_DESCRIPTIONS[key]}" for key in described]
        if recalls:
            parts.append(
                "- `recall@N`: fraction of objects (difficult excluded) that one of the top-N RPN "
                "proposals overlaps with IoU >= 0.5; `recall@N_iouT`: the same at IoU >= T"
            )
        parts.append("")
    if len(tables) > 1:
        parts += ["## Per class", "", _markdown_table(*tables[1]), ""]
    for title, text, headers, rows in analysis_sections(metrics):
        parts += [f"## {title}", "", text, "", _markdown_table(headers, rows), ""]
    for title, image in images.items():
        relative = Path(os.path.relpath(Path(image).resolve(), model_dir.resolve())).as_posix()
        parts += [f"## {title}", "", f"![{title}]({relative})", ""]
    path = model_dir / f"report{suffix}.md"
    write_text_atomic(path, "\n".join(parts))
    return path
