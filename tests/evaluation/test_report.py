"""Reporting: the text table, metrics.json, the PNG plots and report.md."""

import html
import json
import math

import pytest

from tf_frcnn.evaluation import (
    Evaluator,
    format_table,
    plot_loss_curves,
    plot_pr_curves,
    write_metrics_json,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated():
    """Class 1 ("cat") is found once: AP 1. Class 2 ("dog") has two objects and, in score order, a
    hit, a false positive (box c on the wrong image) and a hit: AP07 28/33, so mAP_voc07 =
    (1 + 28/33) / 2 = 0.924. Proposals cover a and c but not b: recall 2/3. Class 3 ("owl") has no
    ground truth."""
    a, b, c = [0, 0, 40, 40], [0, 50, 40, 90], [100, 100, 180, 150]
    gts = [
        {"image_id": "1", "boxes": [a, b], "labels": [1, 2], "height": 200, "width": 200},
        {"image_id": "2", "boxes": [c], "labels": [2], "height": 200, "width": 200},
    ]
    dets = [
        {"image_id": "1", "boxes": [a, b, c], "scores": [0.9, 0.6, 0.7], "classes": [1, 2, 2]},
        {"image_id": "2", "boxes": [c], "scores": [0.8], "classes": [2]},
    ]
    proposals = [{"image_id": "1", "boxes": [a, c]}, {"image_id": "2", "boxes": [c]}]
    evaluator = Evaluator(num_classes=3, class_names={1: "cat", 2: "dog", 3: "owl"})
    evaluator.update(gts, dets, proposals)
    return evaluator


def is_png(path):
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_format_table_lists_metrics_and_classes(evaluated):
    table = format_table(evaluated.result())
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert any(line.split() == ["mAP_voc07", "0.924"] for line in lines)
    assert any(line.split()[:2] == ["recall@300", "0.667"] for line in lines)
    assert any(
        line.split()[:2] == ["owl", "0"] and "n/a" in line for line in lines
    )  # no ground truth


def test_metrics_json_is_valid_strict_json(evaluated, tmp_path):
    metrics = evaluated.result()
    assert math.isnan(metrics["APs"])
    path = write_metrics_json(metrics, tmp_path / "model" / "metrics.json")
    loaded = json.loads(
        path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON")
    )
    for key in ("AP", "AP50", "AP75", "mAP_voc07", "recall@300"):
        assert isinstance(loaded[key], float)
    assert loaded["APs"] is None
    assert loaded["per_class"]["2"]["name"] == "dog"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_plots_write_png_files(evaluated, tmp_path):
    pr_path = plot_pr_curves(
        evaluated.voc_result(), evaluated.class_names, tmp_path / "pr_curves.png"
    )
    history = {
        "1_rpn": [(0, 1.2), (10, 0.8), (20, 0.5)],
        "2_fast_rcnn": [(0, 2.0), (10, 1.1)],
        "3_rpn_finetune": [(0, 0.4), (10, 0.35)],
        "4_fast_rcnn_finetune": [],
    }
    loss_path = plot_loss_curves(history, tmp_path / "loss_curves.png")
    assert is_png(pr_path) and is_png(loss_path)
    assert is_png(plot_loss_curves({}, tmp_path / "empty.png"))


def test_write_report_embeds_the_table_and_images(evaluated, tmp_path):
    plots = tmp_path / "plots"
    images = {
        "Precision-recall curves": plot_pr_curves(evaluated.voc_result(), None, plots / "pr.png")
    }
    path = write_report(tmp_path, evaluated.result(), images)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert "![Precision-recall curves](plots/pr.png)" in text
    assert "| mAP_voc07 | 0.924 |" in text
    assert "| dog |" in text


def test_markdown_and_html_show_the_same_analysis(evaluated, tmp_path):
    """report.md and report.html render the same tables from the metrics (error breakdown,
    thresholds, confusion matrix, AP by size); the page embeds its images and fetches nothing."""
    import numpy as np

    from tf_frcnn.evaluation.html_report import write_html_report
    from tf_frcnn.evaluation.report import analysis_sections

    metrics = {**evaluated.result(), **evaluated.analysis()}
    # dog: TP (0.8), FP on the other image (0.7, background), TP (0.6): F1 peaks at 0.6.
    assert metrics["thresholds"][2]["threshold"] == pytest.approx(0.6)
    assert metrics["errors"]["counts"]["background"] == 1
    sections = analysis_sections(metrics)
    assert [title for title, *_ in sections] == [
        "AP50 by object size",
        "Error breakdown",
        "Errors per class",
        "Score thresholds (maximum F1)",
        "Confusion matrix",
    ]
    figure = plot_pr_curves(
        evaluated.voc_result(), evaluated.class_names, tmp_path / "pr.png", metrics["thresholds"]
    )
    markdown = write_report(tmp_path, metrics, {"PR": figure}).read_text()
    page = write_html_report(
        tmp_path,
        metrics,
        {"PR": figure},
        [
            {
                "group": "Most errors",
                "title": "1",
                "caption": "1 error",
                "image": np.zeros((64, 96, 3), np.uint8),
            }
        ],
        {"background": (255, 0, 0)},
    ).read_text()
    for _, _, _headers, rows in sections:
        for row in rows:
            assert "| " + " | ".join(row) + " |" in markdown
            for cell in row:
                assert f">{html.escape(cell)}<" in page or not cell
    assert f'data-metric="AP">{metrics["AP"]:.3f}<' in page
    assert page.count("data:image/png;base64,") == 1 and page.count("data:image/jpeg;base64,") == 1
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_header_headline_and_verdict(evaluated, tmp_path):
    """The header names what was evaluated; the headline is COCO AP and mAP50; the verdict names
    the costliest error type (the dog false positive on image 2: background) and the weakest class
    (dog, AP50 below cat's 1), then the label errors the finder lists."""
    from tf_frcnn.evaluation.html_report import write_html_report
    from tf_frcnn.evaluation.label_errors import find_label_errors
    from tf_frcnn.evaluation.report_tables import header_rows, headline, verdict

    metrics = {**evaluated.result(), **evaluated.analysis(), "split": "test"}
    metrics["run"] = {
        "weights": "best",
        "best": {"stage": "detector4", "step": 400, "mAP50": 0.75},
        "config": "runs/x/config.yaml",
        "score_threshold": 0.05,
    }
    # Box c on image 1 (dog, 0.7) overlaps nothing there: below 0.8 it is no evidence, at 0.6 a
    # probable missing label.
    metrics["label_errors"] = find_label_errors(
        evaluated.groundtruths,
        evaluated.operating_point({}, 0.0),
        3,
        evaluated.class_names,
        score_threshold=0.6,
    )
    assert metrics["label_errors"]["counts"] == {"missing": 1, "wrong": 0, "loose": 0}
    assert header_rows(metrics) == [
        ("split", "test"),
        ("images", "2"),
        ("weights", "best (stage detector4, step 400, validation mAP50 0.750)"),
        ("config", "runs/x/config.yaml"),
    ]
    selected = {"stage": "detector4", "step": 400, "mAP50": 0.75, "AP": 0.5, "images": 44}
    selected["fitness"] = 0.9 * 0.5 + 0.1 * 0.75
    run = {**metrics["run"], "best": selected}
    assert header_rows({**metrics, "run": run})[2] == (
        "weights",
        "best (stage detector4, step 400, validation fitness 0.525, mAP50 0.750, AP 0.500 "
        "on 44 images)",
    )
    assert headline(metrics) == f"COCO AP {metrics['AP']:.3f} · mAP50 {metrics['AP50']:.3f}"
    lines = verdict(metrics, metrics["label_errors"])
    assert len(lines) == 3
    assert lines[0].startswith("Most AP50 is lost to background errors (1,")
    assert lines[1].startswith("Weakest class: dog")
    assert lines[2].startswith("1 confident detections disagree with the labels (1 missing")
    markdown = write_report(tmp_path, metrics, {}).read_text()
    assert "**" + headline(metrics) + "**" in markdown
    assert (
        "count (all detections)" in markdown
        and "score >= detection.score_threshold = 0.05" in markdown
    )
    assert "true \\ detected (max-F1 thresholds)" in markdown
    assert "## Likely label errors" in markdown and "| 1 | missing | 1 | dog 0.70 | - |" in markdown
    page = write_html_report(tmp_path, metrics, {}).read_text()
    assert 'id="likely-label-errors"' in page and 'id="verdict"' in page
    assert "stage detector4, step 400" in page
    saved = json.loads(write_metrics_json(metrics, tmp_path / "metrics.json").read_text())
    assert saved["label_errors"]["issues"][0]["kind"] == "missing"
    assert saved["label_errors"]["issues"][0]["box"] == [100, 100, 180, 150]


def test_rpn_recall_tick_labels_do_not_overlap(evaluated, tmp_path):
    """The tick labels of the proposals axis, laid out by matplotlib, leave a gap between
    neighbours (200 and 300 used to print as "200300")."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401

    from tf_frcnn.evaluation import report_plots

    captured = {}
    save = report_plots._save
    report_plots._save = lambda figure, path: captured.setdefault("figure", figure) and path
    try:
        report_plots.plot_rpn_recall(
            evaluated.groundtruths, evaluated.proposals, tmp_path / "r.png"
        )
    finally:
        report_plots._save = save
    figure = captured["figure"]
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    labels = [t for t in axes.get_xticklabels() if t.get_text()]
    assert "300" in [t.get_text() for t in labels] and "200" not in [t.get_text() for t in labels]
    extents = sorted((t.get_window_extent(renderer) for t in labels), key=lambda e: e.x0)
    assert all(a.x1 < b.x0 for a, b in zip(extents, extents[1:]))


def test_validation_curves_mark_the_selected_step(tmp_path):
    from tf_frcnn.evaluation import report_plots

    captured = {}
    save = report_plots._save
    report_plots._save = lambda figure, path: captured.setdefault("figure", figure) and path
    try:
        report_plots.plot_validation_curves(
            {"rpn1": [{"step": 4, "recall@300": 0.4}], "detector4": [{"step": 4, "mAP50": 0.1}]},
            tmp_path / "v.png",
            selected={"stage": "detector4", "step": 4, "mAP50": 0.1},
        )
    finally:
        report_plots._save = save
    legends = [[t.get_text() for t in a.get_legend().get_texts()] for a in captured["figure"].axes]
    assert legends == [["recall@300"], ["mAP50", "selected weights (step 4)"]]
