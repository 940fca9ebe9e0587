"""Reporting evaluation results: a text table, `metrics.json`, PNG plots and a Markdown report.

Plots need matplotlib, imported only when a plot is drawn. They are drawn on matplotlib's Agg canvas
directly (no pyplot), so they work without a display and leave the caller's pyplot state alone.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
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


def _tables(metrics: Mapping) -> list[tuple[list[str], list[list[str]]]]:
    """The summary table (every scalar metric, in the dict's order) and, when present, the per-class one."""
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
            [str(entry.get("name", label))] + [_cell(entry.get(column, float("nan"))) for column in columns]
            for label, entry in per_class.items()
        ]
        tables.append((["class"] + columns, rows))
    return tables


def format_table(metrics: Mapping) -> str:
    """Plain-text tables of `metrics` (as returned by `Evaluator.result`): one row per scalar metric,
    then one row per class if "per_class" is present. Numbers have 3 decimals; NaN shows as "n/a"."""
    blocks = []
    for headers, rows in _tables(metrics):
        widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

        def line(cells):
            first = cells[0].ljust(widths[0])
            rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
            return "  ".join([first] + rest).rstrip()

        blocks.append("\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]))
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


def _write_atomic(path: Path, text: str) -> None:
    """Writes a temporary file beside `path`, then renames it: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_metrics_json(metrics: Mapping, path) -> Path:
    """Writes `metrics` as JSON to `path` atomically. NumPy values become plain numbers and lists,
    keys become strings, and NaN/inf become null (strict JSON has no NaN). Returns the path."""
    path = Path(path)
    _write_atomic(path, json.dumps(_json_ready(metrics), indent=2, allow_nan=False) + "\n")
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


def plot_pr_curves(voc_result: Mapping, class_names, path) -> Path:
    """Draws one precision-recall curve per class into a PNG.

    Args:
      voc_result: the dict `voc_metrics` (or `Evaluator.voc_result`) returns.
      class_names: names of labels 1..C, a sequence (`class_names[label - 1]`), a mapping
        {label: name}, or None for the labels themselves.
      path: the PNG to write.

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
            voc_result["recall"][label], voc_result["precision"][label], color=color,
            label=f"{name}: AP {ap:.3f}, AP07 {ap07:.3f}",
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


def plot_loss_curves(history: Mapping[str, Sequence], path) -> Path:
    """Draws the training loss of each stage into a PNG, one panel per stage (their scales differ).

    Args:
      history: {stage name: [(step, loss), ...]} in the order the stages ran, e.g. the four stages
        of the alternating training.
      path: the PNG to write.

    Returns:
      The path.
    """
    stages = list(history.items())
    columns = min(max(len(stages), 1), 2)
    rows = max(math.ceil(len(stages) / columns), 1)
    figure = _new_figure(6 * columns, 3.5 * rows)
    if not stages:
        figure.add_subplot().text(0.5, 0.5, "no training history", ha="center", va="center")
    for i, (stage, points) in enumerate(stages):
        axes = figure.add_subplot(rows, columns, i + 1)
        steps = [float(step) for step, _ in points]
        losses = [float(loss) for _, loss in points]
        if steps:
            axes.plot(steps, losses, marker="." if len(steps) < 30 else None)
        else:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(str(stage))
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(True, alpha=0.3)
    figure.suptitle("Training loss per stage")
    figure.tight_layout()
    return _save(figure, path)


def write_report(model_dir, metrics: Mapping, images: Mapping[str, str | os.PathLike],
                 suffix: str = "") -> Path:
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
    tables = _tables(metrics)
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
    for title, image in images.items():
        relative = Path(os.path.relpath(Path(image).resolve(), model_dir.resolve())).as_posix()
        parts += [f"## {title}", "", f"![{title}]({relative})", ""]
    path = model_dir / f"report{suffix}.md"
    _write_atomic(path, "\n".join(parts))
    return path
