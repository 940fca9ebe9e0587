"""The report's tables: what each metric means, the metrics and analysis tables as cells, and
the plain-text table `tf-frcnn eval` prints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    alignment = [":---"] + ["---:"] * (len(headers) - 1)  # names left, numbers right
    lines = ["| " + " | ".join(cells) + " |" for cells in [headers, alignment] + rows]
    return "\n".join(lines)
