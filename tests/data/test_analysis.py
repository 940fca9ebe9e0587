"""Dataset analysis and fitted anchors: exact best-anchor IoUs, the fit, NMS advice, `auto`
anchors through training, and `tf-frcnn analyze`."""

import contextlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tf_frcnn import boxes as box_ops
from tf_frcnn.anchors import AnchorGenerator
from tf_frcnn.backbones import feature_size
from tf_frcnn.config import Config, ConfigError, config_from_dict, load_config
from tf_frcnn.data import analysis, anchor_fit, box_stats, resize_image, resolve, split_boxes
from tf_frcnn.data.analysis_report import PLOTS, format_analysis
from tf_frcnn.model import build_model
from tf_frcnn_cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")
PAPER = ([8.0, 16.0, 32.0], [0.5, 1.0, 2.0])


def split_of(image_shapes, boxes_per_image, labels_per_image, names=("a", "b")):
    """A SplitBoxes from absolute [ymin, xmin, ymax, xmax] boxes per image."""
    boxes, labels, index = [], [], []
    for number, ((height, width), image_boxes, image_labels) in enumerate(
        zip(image_shapes, boxes_per_image, labels_per_image)
    ):
        image_boxes = np.asarray(image_boxes, np.float32).reshape(-1, 4)
        boxes.append(image_boxes / np.float32([height, width, height, width]))
        labels.append(np.asarray(image_labels, np.int64).reshape(-1))
        index.append(np.full(len(image_boxes), number))
    return split_boxes.SplitBoxes(
        "hand",
        "train",
        list(names),
        np.asarray(image_shapes),
        np.concatenate(boxes),
        np.concatenate(labels),
        np.concatenate(index),
        0,
        {},
    )


def grid_squares(side=40, images=12, per_image=6, size=600, jitter=2.0, seed=0):
    """Squares of `side` px centred (to within `jitter` px) on stride-16 cell centres."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(images):
        cells = rng.choice(np.arange(3, size // 16 - 3), size=(per_image, 2))
        centres = (cells + 0.5) * 16 + rng.uniform(-jitter, jitter, (per_image, 2))
        boxes.append(np.concatenate([centres - side / 2, centres + side / 2], axis=1))
    return split_of([(size, size)] * images, boxes, [[1] * per_image] * images, names=("a",))


def mixed_boxes(count=300, seed=0):
    """Boxes of many sizes and shapes in 500x375 images, two classes."""
    rng = np.random.default_rng(seed)
    shapes, boxes, labels = [], [], []
    for _ in range(count // 3):
        height, width = 375, 500
        side = np.exp(rng.uniform(np.log(20), np.log(300), 3))
        ratio = np.exp(rng.uniform(-1.0, 1.0, 3))
        h = np.minimum(side * np.sqrt(ratio), height - 2)
        w = np.minimum(side / np.sqrt(ratio), width - 2)
        y = rng.uniform(0, height - h)
        x = rng.uniform(0, width - w)
        shapes.append((height, width))
        boxes.append(np.stack([y, x, y + h, x + w], axis=1))
        labels.append(rng.integers(1, 3, 3))
    return split_of(shapes, boxes, labels)


def config(**model):
    values = {"model": {"backbone": "vgg16", **model}, "data": {"min_size": 600, "max_size": 1000}}
    return config_from_dict(values)


def test_best_anchor_iou_is_the_max_over_the_anchor_generators_grid():
    rng = np.random.default_rng(3)
    scales, ratios = (1.5, 4.0, 9.0), (0.5, 1.0, 2.3)
    heights, widths = anchor_fit.anchor_shapes(16, scales, ratios)
    for trial in range(6):
        height, width = (int(v) for v in rng.integers(40, 300, 2))
        low = rng.uniform(0, [height - 2, width - 2], (7, 2))
        high = np.minimum(low + rng.uniform(1, 200, (7, 2)), [height, width])
        boxes = np.concatenate([low, high], axis=1)[:, [0, 1, 2, 3]].astype(np.float32)
        for backbone, inside in (("vgg16", True), ("mobilenet", False), ("tiny", True)):
            rows, columns = feature_size(backbone, height), feature_size(backbone, width)
            anchors = AnchorGenerator(16, scales, ratios, 16)(
                tf.zeros([1, rows, columns, 1])
            ).numpy()
            iou = box_ops.iou(tf.constant(anchors), tf.constant(boxes)).numpy()  # [A, 7]
            if inside:
                fits = np.all(anchors[:, :2] >= 0, 1) & np.all(anchors[:, 2:] <= [height, width], 1)
                iou = np.where(fits[:, None], iou, 0.0)
            brute = iou.reshape(rows * columns, len(heights), 7).max(axis=0).T
            resized = anchor_fit.ResizedBoxes(
                boxes,
                np.tile(np.float32([[height, width]]), (7, 1)),
                np.tile([[rows, columns]], (7, 1)),
                np.ones(7, int),
            )
            fast = anchor_fit.best_anchor_iou(resized, heights, widths, 16, inside)
            np.testing.assert_allclose(fast, brute, atol=1e-5, err_msg=f"{trial} {backbone}")


def test_resized_shapes_agree_with_resize_image():
    shapes = [(375, 500), (500, 375), (333, 1000), (480, 640), (37, 91), (1000, 1000)]
    for min_size, max_size in ((600, 1000), (320, 512), (64, 64)):
        expected = [
            tuple(resize_image(tf.zeros([h, w, 1]), min_size, max_size)[0].shape[:2])
            for h, w in shapes
        ]
        got = split_boxes.resized_shapes(shapes, min_size, max_size)
        assert [tuple(row) for row in got] == expected


def test_40px_boxes_are_not_covered_by_the_paper_anchors_and_are_after_fitting():
    cfg = config()
    cfg.data.flip = False  # a mirrored 600 px image puts the centres 8 px off the grid
    instances, _ = split_boxes.views(grid_squares(), cfg)
    heights, widths = anchor_fit.anchor_shapes(16, *PAPER)
    paper = anchor_fit.coverage(anchor_fit.best_anchor_iou(instances, heights, widths).max(1))
    assert paper["positive"] <= 0.05
    assert paper["forced_below_negative"] >= 0.95  # 40 px vs 128 px: IoU 0.1

    fitted = box_stats.fit_config_anchors(cfg, instances)
    assert fitted.coverage >= 0.9
    assert len(fitted.scales) == 3 and len(fitted.ratios) == 3
    assert any(abs(16 * s - 40) < 4 for s in fitted.scales)


def test_the_mirrored_views_count_when_the_grid_offset_differs():
    cfg = config()
    instances, mirrored = split_boxes.views(grid_squares(jitter=0.0), cfg)
    heights, widths = anchor_fit.anchor_shapes(16, [2.5], [1.0])
    best = anchor_fit.best_anchor_iou(instances, heights, widths).max(1)
    np.testing.assert_allclose(best[~mirrored], 1.0, atol=1e-5)
    # 600 - (16 i + 8) is a multiple of 16: 8 px from every centre in x.
    np.testing.assert_allclose(best[mirrored], 32 * 40 / (2 * 1600 - 32 * 40), atol=1e-5)


def test_fit_is_deterministic_and_independent_of_the_record_order():
    cfg = config()
    split = mixed_boxes()
    instances, _ = split_boxes.views(split, cfg)
    first = box_stats.fit_config_anchors(cfg, instances)
    again = box_stats.fit_config_anchors(cfg, instances)
    shuffled = box_stats.fit_config_anchors(
        cfg, instances.take(np.random.default_rng(1).permutation(len(instances.labels)))
    )
    assert first == again == shuffled
    assert first.scales == sorted(first.scales) and len(set(first.scales)) == 3


def test_fit_beats_the_paper_anchors_and_its_score_is_the_summarys():
    cfg = config()
    for seed in range(3):
        instances, _ = split_boxes.views(mixed_boxes(seed=seed), cfg)
        paper = anchor_fit.fit_anchors(instances, scales=PAPER[0], ratios=PAPER[1])
        assert (paper.scales, paper.ratios) == PAPER  # both fixed: only scored
        fitted = box_stats.fit_config_anchors(cfg, instances)
        assert fitted.score > paper.score + 0.05  # 20-300 px boxes, 128 px anchors
        summary = box_stats.anchor_set_summary(cfg, instances, fitted.scales, fitted.ratios)
        assert summary["score"] == pytest.approx(fitted.score)
        assert summary["coverage"] == pytest.approx(fitted.coverage)


def test_fit_keeps_the_key_that_is_not_auto():
    cfg = config(anchor_scales=[2, 4, 8], anchor_ratios="auto", num_anchor_ratios=2)
    instances, _ = split_boxes.views(mixed_boxes(), cfg)
    fitted = box_stats.fit_config_anchors(cfg, instances)
    assert fitted.scales == [2.0, 4.0, 8.0]
    assert len(fitted.ratios) == 2


def test_tiny_crowded_objects_get_size_and_max_boxes_recommendations(monkeypatch):
    cfg = config()
    cfg.data.max_boxes = 4
    split = grid_squares(side=20, per_image=6)
    monkeypatch.setattr(analysis, "read_split", lambda config, split_name=None: split)
    summary = analysis.analyze(cfg).summary
    assert summary["classes"]["a"]["under_two_cells"] == 1.0
    advice = {item["key"]: item["value"] for item in summary["recommendations"]}
    assert advice["data.min_size"] == 960 and advice["data.max_size"] == 1600  # x 32 / 20
    assert advice["rpn.min_size"] == 10.0  # half the 20 px side, under the default 16
    assert advice["data.max_boxes"] == 6
    assert "model.anchor_scales" in advice  # 128-512 px anchors on 20 px boxes: no fit run
    assert advice["model.anchor_scales"] == "auto"


def test_same_class_overlap_and_the_nms_threshold_it_implies():
    # 10 images with two same-class boxes at IoU 0.45 plus an other-class box at IoU 0.9;
    # 30 images with one box.
    shift = 100 * (1 - 0.45) / (1 + 0.45)  # x offset of two 100 px squares at IoU 0.45
    pair = [[0, 0, 100, 100], [0, shift, 100, 100 + shift], [0, 0, 100, 95]]
    split = split_of(
        [(300, 300)] * 40, [pair] * 10 + [[[10, 10, 60, 60]]] * 30, [[1, 1, 2]] * 10 + [[1]] * 30
    )
    overlap = box_stats.same_class_overlap(split)
    pairs = split.labels == 1
    np.testing.assert_allclose(overlap[:30][pairs[:30]], 0.45, atol=1e-5)
    assert np.all(overlap[split.labels == 2] == 0.0)  # the other class does not count
    assert np.all(overlap[30:] == 0.0)

    advice = box_stats.nms_advice(overlap, configured=0.3)
    assert advice["recommended"] == 0.5  # smallest 0.05 step above 0.45
    assert advice["share_above_configured"] == pytest.approx(20 / 60)
    assert box_stats.nms_advice(overlap[30:], configured=0.3)["recommended"] == 0.3
    crowded = box_stats.nms_advice(np.full(10, 0.9), configured=0.3)
    assert crowded["recommended"] == 0.7  # capped


def test_analyze_a_voc_directory_counts_what_the_reader_repaired(voc, monkeypatch):
    voc.add("a", [("cat", 101, 101, 200, 200), ("cat", 150, 150, 150, 190)], size=(600, 400))
    voc.add("b", [("dog", 1, 1, 700, 300), ("cat", 11, 11, 60, 60, 1)], size=(600, 400))
    voc.add("c", [], size=(600, 400))
    voc.split("train", ["a", "b", "c"])
    cfg = config_from_dict(
        {
            "model": {"num_classes": 2, "class_names": ["cat", "dog"], "backbone": "mobilenet"},
            "data": {"source": "voc", "root": str(voc.root), "min_size": 600, "max_size": 1000},
        }
    )
    result = analysis.analyze(cfg, fit=True)
    s = result.summary
    assert (s["images"], s["boxes"], s["images_without_boxes"]) == (3, 2, 1)
    assert s["excluded_difficult_or_crowd"] == 1
    assert (s["reader"]["dropped_boxes"], s["reader"]["clipped_boxes"]) == (1, 1)
    assert s["classes"]["cat"]["boxes"] == 1 and s["classes"]["dog"]["boxes"] == 1
    # 400 x 600 -> 600 x 900 (scale 1.5): the cat, 1-based 101..200 (99 px), is 148.5 px.
    assert s["classes"]["cat"]["side"]["p50"] == pytest.approx(148.5, abs=1e-3)
    assert "fitted" in s["anchors"]
    text = format_analysis(s)
    assert "cat" in text and "dog" in text and "recommendations" in text

    # The decoded-records path (synthetic, TFDS) reads the same boxes.
    indexed = split_boxes.read_split(cfg)
    monkeypatch.setattr(split_boxes, "captured_examples", lambda: contextlib.nullcontext([]))
    decoded = split_boxes.read_split(cfg)
    np.testing.assert_array_equal(decoded.image_shapes, indexed.image_shapes)
    np.testing.assert_allclose(decoded.boxes, indexed.boxes)
    np.testing.assert_array_equal(decoded.labels, indexed.labels)


def test_build_model_refuses_unresolved_auto_anchors():
    cfg = Config()
    cfg.model.anchor_ratios = "auto"
    with pytest.raises(ConfigError, match="model.anchor_ratios.*auto"):
        build_model(cfg)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """A smoke training with `anchor_scales: auto` and `anchor_ratios: auto`: joint training,
    2 steps (the anchors are resolved before any stage, whatever the schedule)."""
    base = tmp_path_factory.mktemp("auto")
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["model"]["anchor_scales"] = "auto"
    values["model"]["anchor_ratios"] = "auto"
    values["train"].update(
        schedule="joint", checkpoint_every=2, stages={"joint": {"steps": 2, "learning_rate": 0.01}}
    )
    path = base / "smoke_auto.yaml"
    path.write_text(yaml.safe_dump(values))
    model_dir, data_dir = str(base / "model"), str(base / "tfds")
    assert (
        main(["train", "--config", str(path), "--model-dir", model_dir, "--data-dir", data_dir])
        == 0
    )
    return str(path), model_dir, data_dir


def test_auto_anchors_are_fitted_into_the_model_dirs_config(auto_run):
    path, model_dir, data_dir = auto_run
    cfg = load_config(path)
    cfg.data.data_dir = data_dir
    told = []
    expected = resolve.resolve_anchors(cfg, log=told.append)
    assert len(told) == 1 and "anchors fitted to" in told[0]
    assert isinstance(expected.model.anchor_scales, list)
    assert cfg.model.anchor_scales == "auto"  # the input is left alone
    recorded = load_config(os.path.join(model_dir, "config.yaml")).model
    assert recorded.anchor_scales == expected.model.anchor_scales
    assert recorded.anchor_ratios == expected.model.anchor_ratios

    from tf_frcnn.rundir import load_trained_model  # what eval and export use

    model, _ = load_trained_model(model_dir)
    assert list(model.anchor_generator.scales) == recorded.anchor_scales
    assert list(model.anchor_generator.ratios) == recorded.anchor_ratios

    assert main(["eval", "--config", path, "--model-dir", model_dir, "--data-dir", data_dir]) == 0
    assert (
        main(
            [
                "train",
                "--config",
                path,
                "--model-dir",
                model_dir,
                "--data-dir",
                data_dir,
                "--resume",
            ]
        )
        == 0
    )
    resumed = resolve.resolve_anchors(cfg, model_dir=model_dir)
    assert resumed.model.anchor_scales == recorded.anchor_scales


def test_cli_writes_the_json_and_the_plots(auto_run, tmp_path, capsys):
    path, _, data_dir = auto_run
    out = tmp_path / "analysis"
    assert main(["analyze", "--config", path, "--out", str(out), "--data-dir", data_dir]) == 0
    printed = capsys.readouterr().out
    assert "anchors fitted" in printed and "recommendations" in printed
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["images"] == 16 and summary["boxes"] > 0
    assert set(summary["classes"]) == {"ellipse", "rectangle", "triangle", "cross", "all"}
    assert summary["anchors"]["fitted"]["score"] >= summary["anchors"]["configured"]["score"]
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_gives_one_line(voc, tmp_path, capsys):
    voc.add("a", [("cat", 1, 1, 20, 20)])
    voc.split("train", ["a"])
    path = tmp_path / "voc.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"num_classes": 1, "class_names": ["cat"]},
                "data": {"source": "voc", "root": str(voc.root)},
            }
        )
    )
    for argv, needle in (
        (["--split", "nosuch"], "nosuch.txt"),
        (["--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
    ):
        arguments = ["analyze", "--config", str(path), "--out", str(tmp_path / "o"), *argv]
        assert main(arguments) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], lines
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out
