"""`report.html`: the evaluation report as one self-contained page (plots and pictures inline as
data URIs, no script, nothing fetched), readable from `file://`.

It shows the numbers of `metrics.json` through the same tables as `report.md`
(`report.analysis_sections`), the plots `tf-frcnn eval` writes beside it, and a gallery of
pictures drawn by `tf_frcnn.visualize.draw_errors`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tf_frcnn.evaluation.label_errors import describe_kinds
from tf_frcnn.evaluation.report import LABEL_ERRORS_TITLE, write_text_atomic
from tf_frcnn.evaluation.report_tables import (
    ERROR_DESCRIPTIONS,
    LABEL_ERROR_HEADERS,
    METRIC_DESCRIPTIONS,
    analysis_sections,
    header_rows,
    headline,
    label_error_rows,
    metric_tables,
    verdict,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px 40px;
       color: #1d1d1f; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: 14px; max-width: 900px; }
.bar { display: inline-block; height: 10px; background: #d9534f; vertical-align: middle; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }
.gallery figure { margin: 0; } .gallery img { width: 100%; }
figcaption { font-size: 13px; color: #333; }
.header th { text-align: left; background: none; border: none; color: #555; padding-left: 0; }
.header td { border: none; font-family: ui-monospace, monospace; font-size: 13px; }
p.headline { font-size: 28px; font-weight: 600; margin: 12px 0 4px; }
ul.verdict { font-size: 16px; background: #fff8e6; border-left: 4px solid #f0ad4e;
             padding: 8px 12px 8px 28px; max-width: 1000px; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 10px; }
.thumbs figure { margin: 0; } .thumbs img { width: 100%; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 14px; margin-right: 4px;
          vertical-align: middle; border: 1px solid #888; }
"""


def data_uri(data: bytes, mime: str) -> str:
    """`data:` URI of `data` (base64)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_uri(image, quality: int = 85) -> str:
    """`data:` URI of an uint8 [H, W, 3] image as JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return data_uri(buffer.getvalue(), "image/jpeg")


def _text(value) -> str:
    return html.escape(str(value))


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], metric_ids=None, heat: bool = False
) -> str:
    """An HTML table; cells that look like numbers are right-aligned. `metric_ids`: the
    data-metric attribute of each row's last cell. `heat` (a confusion matrix): shade counts by
    value, green on the diagonal, red off it."""
    numbers = [float(cell) for row in rows for cell in row[1:] if _is_number(cell)]
    top = max(numbers, default=0.0) or 1.0
    parts = [
        "<table><thead><tr>",
        "".join(f"<th>{_text(h)}</th>" for h in headers),
        "</tr></thead><tbody>",
    ]
    for i, row in enumerate(rows):
        cells = [f"<th>{_text(row[0])}</th>"]
        for j, cell in enumerate(row[1:], start=1):
            attributes = ' class="num"' if _is_number(cell) else ""
            if metric_ids and j == len(row) - 1:
                attributes += f' data-metric="{_text(metric_ids[i])}"'
            if heat and _is_number(cell) and float(cell) > 0:
                colour = "92, 184, 92" if j - 1 == i else "217, 83, 79"
                attributes += (
                    f' style="background: rgba({colour}, {0.12 + 0.6 * float(cell) / top:.2f})"'
                )
            cells.append(f"<td{attributes}>{_text(cell)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _write_page(path: Path, title: str, body: str) -> Path:
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
    write_text_atomic(path, page)
    return path


def _anchor(title: str) -> str:
    """The section id of a title: "Score thresholds (maximum F1)" ->
    "score-thresholds-maximum-f1"."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _error_bars(metrics: Mapping) -> str:
    """Horizontal bars of the AP50 each error type costs."""
    errors = metrics.get("errors")
    if not errors:
        return ""
    gains = {kind: errors["delta_AP50"][kind] for kind in ERROR_DESCRIPTIONS}
    top = max((g for g in gains.values() if g is not None and math.isfinite(g)), default=0.0)
    rows = []
    for kind, gain in gains.items():
        width = 0 if not top or gain is None or not math.isfinite(gain) else 300 * gain / top
        rows.append(
            f'<tr><th>{_text(kind)}</th><td><span class="bar" '
            f'style="width: {width:.0f}px"></span></td></tr>'
        )
    return "<table><tbody>" + "".join(rows) + "</tbody></table>"


def label_error_thumbnail(image, entry: Mapping, size: int = 160):
    """uint8 [size, size, 3]: the region around one likely label error of an image (uint8
    [H, W, 3]), the detection's box in orange, the label's box (wrong or loose) in blue."""
    from PIL import Image, ImageDraw

    boxes = [entry["box"]] + ([entry["label_box"]] if "label_box" in entry else [])
    top, left = np.min(boxes, axis=0)[:2]
    bottom, right = np.max(boxes, axis=0)[2:]
    margin = 0.25 * max(bottom - top, right - left, 8.0)
    height, width = np.asarray(image).shape[:2]
    crop = [
        max(int(left - margin), 0),
        max(int(top - margin), 0),
        min(int(right + margin) + 1, width),
        min(int(bottom + margin) + 1, height),
    ]
    picture = Image.fromarray(np.asarray(image, np.uint8)).crop(crop)
    scale = size / max(picture.size)
    picture = picture.resize(
        (max(round(picture.width * scale), 1), max(round(picture.height * scale), 1))
    )
    draw = ImageDraw.Draw(picture)
    for box, colour in zip(boxes, ((255, 140, 0), (30, 110, 255))):
        y0, x0, y1, x1 = box
        draw.rectangle(
            [
                (x0 - crop[0]) * scale,
                (y0 - crop[1]) * scale,
                (x1 - crop[0]) * scale,
                (y1 - crop[1]) * scale,
            ],
            outline=colour,
            width=2,
        )
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    return np.asarray(canvas)


def _header(metrics: Mapping) -> str:
    """What was evaluated, the headline numbers and the verdict."""
    rows = "".join(
        f"<tr><th>{_text(field)}</th><td>{_text(value)}</td></tr>"
        for field, value in header_rows(metrics)
    )
    lines = verdict(metrics, metrics.get("label_errors"))
    items = "".join(f"<li>{_text(line)}</li>" for line in lines)
    return (
        f'<table class="header" id="run">{rows}</table>'
        f'<p class="headline" id="headline">{_text(headline(metrics))}</p>'
        '<p class="note">COCO AP: IoU 0.50:0.95; mAP50: COCO AP at IoU 0.5.</p>'
        + (f'<ul class="verdict" id="verdict">{items}</ul>' if items else "")
    )


LABEL_ERROR_ROWS = 50  # rows of the table; metrics.json lists them all


def _label_errors(label_errors: Mapping, thumbnails: Sequence[Mapping]) -> str:
    kinds = "".join(
        f"<li><b>{_text(kind)}</b> ({label_errors['counts'][kind]}): {_text(text)}</li>"
        for kind, text in describe_kinds(label_errors).items()
    )
    total = len(label_errors["issues"])
    content = (
        f'<p class="note">Detections with score >= {label_errors["score_threshold"]:g} that '
        "disagree with the labels in a way a labelling mistake explains (after ObjectLab, "
        "cleanlab's object-detection label-issue finder), most confident first. Look at these "
        "labels before blaming the model. Thumbnails: the detection in orange, the label's box "
        f"(wrong, loose) in blue.</p><ul>{kinds}</ul>"
    )
    if thumbnails:
        figures = "".join(
            f'<figure><img src="{jpeg_uri(t["image"])}" alt="{_text(t["caption"])}">'
            f"<figcaption>{_text(t['caption'])}</figcaption></figure>"
            for t in thumbnails
        )
        content += f'<div class="thumbs">{figures}</div>'
    content += _table(LABEL_ERROR_HEADERS, label_error_rows(label_errors, LABEL_ERROR_ROWS))
    if total > LABEL_ERROR_ROWS:
        content += f'<p class="note">{total - LABEL_ERROR_ROWS} more in metrics.json.</p>'
    return content


def _legend(colours: Mapping[str, tuple]) -> str:
    spans = [
        f'<span><i class="swatch" style="background: rgb{tuple(colour)}"></i>'
        f"{_text(name.replace('_', ' '))}</span>"
        for name, colour in colours.items()
    ]
    return '<p class="legend">' + "".join(spans) + "</p>"


def write_html_report(
    model_dir,
    metrics: Mapping,
    figures: Mapping[str, str],
    gallery: Sequence[Mapping] = (),
    legend: Mapping[str, tuple] | None = None,
    suffix: str = "",
    thumbnails: Sequence[Mapping] = (),
) -> Path:
    """Writes `model_dir/report{suffix}.html`.

    Args:
      metrics: as written to metrics.json (`Evaluator.result` and `Evaluator.analysis`).
      figures: {section title: PNG path}, embedded in that order.
      gallery: [{"group": e.g. "Worst images", "title": str, "caption": str, "image": uint8
        [H, W, 3]}], shown in groups in the order given.
      legend: {status: RGB colour} of the gallery's drawings.
      thumbnails: [{"caption": str, "image": uint8 [H, W, 3]}] of the likely label errors
        (`metrics["label_errors"]["issues"]`, in rank order), shown in their section.
    """
    sections = _metric_sections(metrics) + _analysis_sections(metrics)
    label_errors = metrics.get("label_errors")
    if label_errors:
        sections.append((LABEL_ERRORS_TITLE, _label_errors(label_errors, thumbnails)))
    if gallery:
        sections.append(("Gallery", _gallery(gallery, legend)))
    for title, path in figures.items():
        uri = data_uri(Path(path).read_bytes(), "image/png")
        sections.append((title, f'<figure><img src="{uri}" alt="{_text(title)}"></figure>'))

    nav = " ".join(f'<a href="#{_anchor(title)}">{_text(title)}</a>' for title, _ in sections)
    body = ['<h1 id="top">Evaluation report</h1>', _header(metrics), f"<nav>{nav}</nav>"]
    body += [
        f'<section id="{_anchor(title)}"><h2>{_text(title)}</h2>{content}</section>'
        for title, content in sections
    ]
    path = Path(model_dir) / f"report{suffix}.html"
    return _write_page(path, "Evaluation report", "\n".join(body))


def _metric_sections(metrics: Mapping) -> list[tuple[str, str]]:
    """[(title, HTML)] of the metric table with its descriptions, and the per-class table."""
    tables = metric_tables(metrics)
    descriptions = "".join(
        f"<li><code>{_text(k)}</code>: {_text(v)}</li>"
        for k, v in METRIC_DESCRIPTIONS.items()
        if k in metrics
    )
    table = _table(*tables[0], metric_ids=[row[0] for row in tables[0][1]])
    sections = [("Metrics", table + "<ul>" + descriptions + "</ul>")]
    if len(tables) > 1:
        sections.append(("Per class", _table(*tables[1])))
    return sections


def _analysis_sections(metrics: Mapping) -> list[tuple[str, str]]:
    """[(title, HTML)] of `analysis_sections`' tables (the error breakdown with its bars)."""
    sections = []
    for title, text, headers, rows in analysis_sections(metrics):
        content = f'<p class="note">{_text(text)}</p>'
        content += _table(headers, rows, heat=title == "Confusion matrix")
        if title == "Error breakdown":
            content += '<p class="note">AP50 gained by fixing each type:</p>' + _error_bars(metrics)
        sections.append((title, content))
    return sections


def _gallery(gallery: Sequence[Mapping], legend: Mapping[str, tuple] | None) -> str:
    """The gallery's HTML: its figures in groups, in the order given."""
    groups: dict[str, list[str]] = {}
    for entry in gallery:
        groups.setdefault(entry["group"], []).append(
            f'<figure><img src="{jpeg_uri(entry["image"])}" alt="{_text(entry["title"])}">'
            f"<figcaption><b>{_text(entry['title'])}</b>: {_text(entry['caption'])}"
            "</figcaption></figure>"
        )
    return (
        '<p class="note">Ground truth and the detections kept at the max-F1 '
        "thresholds, judged as in the error breakdown: each detection coloured by its "
        "type, objects no detection finds in the missed colour.</p>" + _legend(legend or {})
    ) + "".join(
        f'<h3>{_text(group)}</h3><div class="gallery">{"".join(items)}</div>'
        for group, items in groups.items()
    )


def write_prediction_index(directory, entries: Sequence[Mapping], model: str = "") -> Path:
    """Writes `directory/index.html`: each drawn prediction (a picture in `directory`) with its
    source image's path and its detections.

    Args:
      directory: where the pictures are and the page goes.
      entries: [{"picture": file name in `directory`, "source": the input image's path,
        "detections": [(class name, score), ...]}].
      model: the model's path, for the heading.
    """
    figures = []
    for entry in entries:
        found = ", ".join(f"{_text(name)} {score:.2f}" for name, score in entry["detections"])
        figures.append(
            f'<figure><img src="{_text(entry["picture"])}" alt="{_text(entry["source"])}">'
            f"<figcaption><b>{_text(entry['source'])}</b>: {len(entry['detections'])} "
            f"detections{': ' + found if found else ''}</figcaption></figure>"
        )
    body = (
        f"<h1>Predictions</h1><p>Model: <code>{_text(model)}</code></p>\n"
        f'<div class="gallery">{"".join(figures)}</div>'
    )
    return _write_page(Path(directory) / "index.html", "Predictions", body)
