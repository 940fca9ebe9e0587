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
