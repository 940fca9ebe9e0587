"""Writing evaluation results: `metrics.json` (atomically) and the Markdown report.

The tables are in `report_tables`, the plots in `report_plots`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tf_frcnn.evaluation.label_errors import describe_kinds
from tf_frcnn.evaluation.report_tables import (
    LABEL_ERROR_HEADERS,
    METRIC_DESCRIPTIONS,
    analysis_sections,
    header_rows,
    headline,
    label_error_rows,
    markdown_table,
    metric_tables,
    verdict,
)
from tf_frcnn.rundir import atomic_write_text

LABEL_ERRORS_TITLE = "Likely label errors"


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
    """`rundir.atomic_write_text` (readers never see a partial file), creating the parent
    directories first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_metrics_json(metrics: Mapping, path) -> Path:
    """Writes `metrics` as JSON to `path` atomically. NumPy values become plain numbers and lists,
    keys become strings, and NaN/inf become null (strict JSON has no NaN). Returns the path."""
    path = Path(path)
    write_text_atomic(path, json.dumps(_json_ready(metrics), indent=2, allow_nan=False) + "\n")
    return path


def write_report(
    model_dir, metrics: Mapping, images: Mapping[str, str | os.PathLike], suffix: str = ""
) -> Path:
    """Writes `model_dir/report{suffix}.md`: the metrics tables, what they mean, and the PNGs.

    Args:
      metrics: as returned by `Evaluator.result`.
      images: {section title: PNG path}, e.g. {"Precision-recall curves": ".../pr_curves.png"};
        linked relative to `model_dir`.
    """
    model_dir = Path(model_dir)
    tables = metric_tables(metrics)
    parts = ["# Evaluation report", ""]
    parts += [f"- {field}: `{value}`" for field, value in header_rows(metrics)] + [""]
    parts += [f"**{headline(metrics)}**", ""]
    label_errors = metrics.get("label_errors")
    parts += [f"- {line}" for line in verdict(metrics, label_errors)] + [""]
    parts += ["## Metrics", "", markdown_table(*tables[0]), ""]
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
        parts += ["## Per class", "", markdown_table(*tables[1]), ""]
    for title, text, headers, rows in analysis_sections(metrics):
        parts += [f"## {title}", "", text, "", markdown_table(headers, rows), ""]
    if label_errors:
        parts += [f"## {LABEL_ERRORS_TITLE}", ""]
        parts += [f"- {kind}: {text}" for kind, text in describe_kinds(label_errors).items()]
        parts += ["", markdown_table(LABEL_ERROR_HEADERS, label_error_rows(label_errors)), ""]
    for title, image in images.items():
        relative = Path(os.path.relpath(Path(image).resolve(), model_dir.resolve())).as_posix()
        parts += [f"## {title}", "", f"![{title}]({relative})", ""]
    path = model_dir / f"report{suffix}.md"
    write_text_atomic(path, "\n".join(parts))
    return path
