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
    "ECCV 2020), counted over ALL detections the model returns ({scored}), not at the max-F1 "
    "thresholds of the confusion matrix. VOC all-point mAP at IoU 0.5 now {ap50} (the headline's "
    "mAP50 is COCO's 101-point one); 'AP50 if fixed' is the mAP gained by fixing all errors of "
    "that type alone (TIDE's oracle).",
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
    makers = (
        ("AP50_by_size", _size_sections),
        ("errors", _error_sections),
        ("thresholds", _threshold_sections),
        ("confusion_matrix", _confusion_sections),
    )
    return [section for key, make in makers if metrics.get(key) for section in make(metrics)]


def _section(title, headers, rows, **values):
    return (title, SECTION_NOTES[title].format(**values), headers, rows)


def _size_sections(metrics):
    sizes = metrics["AP50_by_size"]
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
    headers = ["bin", "side (px)", "objects", "AP50", "COCO AP .50:.95"]
    return [_section("AP50 by object size", headers, rows)]


def _error_sections(metrics):
    errors = metrics["errors"]
    rows = [
        [
            kind,
            _cell(errors["counts"][kind]),
            _gain(errors["delta_AP50"][kind]),
            ERROR_DESCRIPTIONS[kind],
        ]
        for kind in ERROR_DESCRIPTIONS
    ]
    threshold = (metrics.get("run") or {}).get("score_threshold")
    breakdown = _section(
        "Error breakdown",
        ["type", "count (all detections)", "AP50 if fixed", "meaning"],
        rows,
        ap50=_cell(errors["AP50"]),
        scored="score >= detection.score_threshold"
        + (f" = {threshold:g}" if threshold is not None else ""),
    )
    rows = [
        [str(entry["name"]), _cell(entry["AP50"])]
        + [
            f"{entry['counts'][kind]} ({_gain(entry['delta_AP50'][kind])})"
            for kind in ERROR_DESCRIPTIONS
        ]
        for entry in errors["per_class"].values()
    ]
    per_class = _section("Errors per class", ["class", "AP50"] + list(ERROR_DESCRIPTIONS), rows)
    return [breakdown, per_class]


def _threshold_sections(metrics):
    columns = ("threshold", "precision", "recall", "f1")
    rows = [
        [str(entry["name"])] + [_cell(entry[column]) for column in columns]
        for entry in metrics["thresholds"].values()
    ]
    headers = ["class", "threshold", "precision", "recall", "F1"]
    return [_section("Score thresholds (maximum F1)", headers, rows)]


def _confusion_sections(metrics):
    confusion = metrics["confusion_matrix"]
    names = [str(name) for name in confusion["classes"]]
    rows = [
        [name] + [_cell(count) for count in row] for name, row in zip(names, confusion["matrix"])
    ]
    headers = ["true \\ detected (max-F1 thresholds)"] + names
    return [_section("Confusion matrix", headers, rows, threshold=confusion["default_threshold"])]


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


def header_rows(metrics: Mapping) -> list[tuple[str, str]]:
    """The report's header: (field, value) for split, images, weights (with the selected stage
    and step when known) and config, from the keys `tf-frcnn eval` records (`"split"`,
    `"num_images"`, `"run"`); absent fields are left out."""
    run = metrics.get("run") or {}
    rows = []
    if "split" in metrics:
        rows.append(("split", str(metrics["split"])))
    if "num_images" in metrics:
        rows.append(("images", str(metrics["num_images"])))
    weights = run.get("weights") or metrics.get("weights")
    if weights:
        best = run.get("best") or {}
        if best.get("stage") is not None:
            chosen = f"stage {best['stage']}, step {best.get('step')}"
            shown = [
                f"{name} {best[name]:.3f}"
                for name in ("fitness", "mAP50", "AP")
                if isinstance(best.get(name), (int, float))
            ]
            if shown:
                chosen += f", validation {', '.join(shown)}"
            if isinstance(best.get("images"), int):
                chosen += f" on {best['images']} images"
            weights = f"{weights} ({chosen})"
        rows.append(("weights", str(weights)))
    for key in ("config", "model_dir"):
        if run.get(key):
            rows.append((key.replace("_", " "), str(run[key])))
    return rows


def headline(metrics: Mapping) -> str:
    """One line: COCO AP (IoU 0.50:0.95) and mAP50 (COCO AP at IoU 0.5)."""
    ap, ap50 = (_cell(metrics.get(key, float("nan"))) for key in ("AP", "AP50"))
    return f"COCO AP {ap} · mAP50 {ap50}"


def verdict(metrics: Mapping, label_errors: Mapping | None = None) -> list[str]:
    """At most three sentences on where the model fails, from the error analysis: the error type
    that costs most AP50, the weakest class and its costliest error, then the probable label
    errors (when any) or else the size bin with the lowest AP50."""
    errors = metrics.get("errors")
    lines = []
    if errors:
        gains = {k: v for k, v in errors["delta_AP50"].items() if v is not None and v == v}
        if gains and max(gains.values()) > 0:
            kind = max(gains, key=gains.get)
            lines.append(
                f"Most AP50 is lost to {kind} errors ({errors['counts'][kind]}, "
                f"{ERROR_DESCRIPTIONS[kind]}): fixing them would add {_gain(gains[kind])}."
            )
        classes = [e for e in errors["per_class"].values() if e["AP50"] == e["AP50"]]
        if classes:
            weakest = min(classes, key=lambda e: e["AP50"])
            costs = {k: v for k, v in weakest["delta_AP50"].items() if v == v}
            worst = max(costs, key=costs.get) if costs else None
            lines.append(
                f"Weakest class: {weakest['name']} (AP50 {_cell(weakest['AP50'])})"
                + (f", mostly {worst} errors." if worst and costs[worst] > 0 else ".")
            )
    found = (label_errors or {}).get("counts") or {}
    if sum(found.values()):
        parts = ", ".join(f"{n} {kind}" for kind, n in found.items() if n)
        lines.append(
            f"{sum(found.values())} confident detections disagree with the labels ({parts}; "
            f"score >= {label_errors['score_threshold']:g}): check these labels below."
        )
    elif metrics.get("AP50_by_size"):
        bins = [e for e in metrics["AP50_by_size"]["terciles"] if e["AP50"] == e["AP50"]]
        if bins:
            low = min(bins, key=lambda e: e["AP50"])
            lines.append(
                f"Hardest objects: the {low['name']} (side {_side(low['low'])} - "
                f"{_side(low['high'])} px), AP50 {_cell(low['AP50'])}."
            )
    return lines[:3]


def label_error_rows(label_errors: Mapping, limit: int | None = None) -> list[list[str]]:
    """Rows of the label-error table: rank, kind, image, detection (class and score), label,
    IoU; the first `limit` issues (all when None)."""
    rows = []
    for rank, entry in enumerate(label_errors["issues"][:limit], start=1):
        label = entry.get("label_name", "-")
        detection = f"{entry['class_name']} {entry['score']:.2f}"
        row = [entry["kind"], str(entry["image_id"]), detection, label, f"{entry['iou']:.2f}"]
        rows.append([str(rank), *row])
    return rows


LABEL_ERROR_HEADERS = ["#", "kind", "image", "detection (score)", "label", "IoU"]
