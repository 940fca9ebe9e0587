"""The analysis on a feature pyramid (model.fpn): coverage on each level's own grid (exact),
"under two cells" against the finest stride, the pyramid fit, `auto` anchors and image sizes
resolved from the data, and `tf-frcnn analyze` with and without the pyramid."""

import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tf_frcnn import boxes as box_ops
from tf_frcnn.anchors import AnchorGenerator, level_scales, pyramid_levels
from tf_frcnn.config import FPNConfig, config_from_dict, load_config
from tf_frcnn.data import analysis, anchor_fit, box_stats, image_sizes, resolve, split_boxes
from tf_frcnn.rundir import write_config
from tf_frcnn_cli import main

RATIOS = (0.5, 1.0, 2.0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def split_of(image_shapes, boxes_per_image, names=("a",)):
    """A SplitBoxes of one class from absolute [ymin, xmin, ymax, xmax] boxes per image."""
    boxes, index = [], []
    for number, ((height, width), image_boxes) in enumerate(zip(image_shapes, boxes_per_image)):
        image_boxes = np.asarray(image_boxes, np.float32).reshape(-1, 4)
        boxes.append(image_boxes / np.float32([height, width, height, width]))
        index.append(np.full(len(image_boxes), number))
    boxes = np.concatenate(boxes)
    return split_boxes.SplitBoxes(
        "hand", "train", list(names), np.asarray(image_shapes), boxes,
        np.ones(len(boxes), np.int64), np.concatenate(index), 0, {},
    )  # fmt: skip


def squares(side, images=8, per_image=5, size=800, seed=0):
    """Squares of `side` px at random places in size x size images."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, size - side, (images, per_image, 2))
    boxes = np.concatenate([low, low + side], axis=2)
    return split_of([(size, size)] * images, list(boxes))


def config(fpn=None, **data):
    values = {"model": {"backbone": "mobilenet", "fpn": fpn, "num_classes": 1}}
    values["data"] = {"min_size": 600, "max_size": 1000, "flip": False, **data}
    return config_from_dict(values)


def test_pyramid_levels_and_the_default_scales():
    assert pyramid_levels(FPNConfig()) == [4, 8, 16, 32, 64]
    assert pyramid_levels(FPNConfig(min_level=3, max_level=5)) == [8, 16, 32]
    assert level_scales([8, 16, 32], FPNConfig()) == [8.0]  # 32 px on P2 ... 512 on P6
    assert level_scales([8, 16, 32], None) == [8.0, 16.0, 32.0]
    assert level_scales([4, 8], FPNConfig()) == [4.0, 8.0]


def test_config_reads_and_writes_model_fpn(tmp_path):
    cfg = config_from_dict({"model": {"fpn": {"channels": 64, "separable": True}}})
    assert cfg.model.fpn == FPNConfig(channels=64, separable=True)
    assert config_from_dict({}).model.fpn is None
    write_config(str(tmp_path), cfg)
    assert load_config(tmp_path / "config.yaml").model.fpn == cfg.model.fpn
    with pytest.raises(ValueError, match="model.fpn.levels"):
        config_from_dict({"model": {"fpn": {"levels": 3}}})


@pytest.mark.parametrize("inside", [True, False])
def test_level_coverage_is_the_max_over_every_anchor_of_every_level(inside):
    rng = np.random.default_rng(1)
    layout = anchor_fit.Layout.levels([4, 8, 16, 32, 64])
    scales = (8.0, 11.3)
    for height, width in ((600, 800), (601, 797), (130, 250)):
        low = rng.uniform(0, [height - 4, width - 4], (9, 2))
        high = np.minimum(low + rng.uniform(3, 300, (9, 2)), [height, width])
        boxes = np.concatenate([low, high], axis=1).astype(np.float32)
        resized = anchor_fit.ResizedBoxes(
            boxes, np.tile(np.float32([[height, width]]), (9, 1)),
            np.zeros((9, 2), int), np.ones(9, int),
        )  # fmt: skip
        fast = anchor_fit.level_best_iou(resized, layout, scales, RATIOS, inside)
        for level, stride in enumerate(layout.strides):
            rows, columns = -(-height // stride), -(-width // stride)
            anchors = AnchorGenerator(stride, scales, RATIOS, stride)(
                tf.zeros([1, rows, columns, 1])
            ).numpy()
            iou = box_ops.iou(tf.constant(anchors), tf.constant(boxes)).numpy()
            if inside:
                fits = np.all(anchors[:, :2] >= 0, 1) & np.all(anchors[:, 2:] <= [height, width], 1)
                iou = np.where(fits[:, None], iou, 0.0)
            brute = iou.reshape(rows * columns, len(scales) * len(RATIOS), 9).max(axis=0).T
            np.testing.assert_allclose(fast[:, level], brute, atol=1e-5, err_msg=f"P{level + 2}")
        cfg = config()
        cfg.rpn.ignore_cross_boundary = inside
        best, levels = box_stats.best_iou(cfg, resized, scales, RATIOS, layout)
        np.testing.assert_allclose(best, fast.max(axis=(1, 2)))
        np.testing.assert_array_equal(levels, fast.max(axis=2).argmax(axis=1))


def test_under_two_cells_counts_against_the_finest_stride(monkeypatch):
    # 800 px images shown at 600: 16 px boxes become 12 px, 60 px ones 45 px.
    split = split_of([(800, 800)] * 2, [[[0, 0, 16, 16], [100, 100, 160, 160]]] * 2)
    monkeypatch.setattr(analysis, "read_split", lambda config, name=None: split)
    single = analysis.analyze(config()).summary
    assert single["classes"]["all"]["under_two_cells"] == 0.5  # 12 px < 32 px <= 45 px
    pyramid = analysis.analyze(config(fpn={})).summary
    assert pyramid["classes"]["all"]["under_two_cells"] == 0.0  # both >= 8 px (P2)
    p3 = analysis.analyze(config(fpn={"min_level": 3})).summary
    assert p3["classes"]["all"]["under_two_cells"] == 0.5  # 12 px < 16 px
    assert single["layouts"]["pyramid"]["under_two_cells"] == 0.0
    assert pyramid["layouts"]["single"]["under_two_cells"] == 0.5
    assert set(pyramid["classes"]["all"]["best_level"]) == {"P2", "P3", "P4", "P5", "P6"}


def test_the_pyramid_fit_chooses_the_smallest_size_near_the_small_boxes():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(10):  # squares of 20-40 px in 600 px images
        side = rng.uniform(20, 40, (6, 1))
        low = rng.uniform(0, 550, (6, 2))
        images.append(np.concatenate([low, low + side], axis=1))
    cfg = config(fpn={}, min_size=600)
    instances, _ = split_boxes.views(split_of([(600, 600)] * 10, images), cfg)
    fitted = box_stats.fit_config_anchors(cfg, instances)
    assert len(fitted.scales) == 1 and len(fitted.ratios) == 3  # one size per level
    assert 16 <= 4 * fitted.scales[0] <= 40  # the smallest size, on P2, near the boxes
    default = box_stats.anchor_set_summary(cfg, instances, [8.0], RATIOS)
    assert fitted.coverage > default["coverage"]  # 32, 64 px anchors fit 20-40 px less well
    assert fitted.score > default["score"]
    cfg.model.num_anchor_scales = 2
    assert len(box_stats.fit_config_anchors(cfg, instances).scales) == 2


def test_two_sizes_per_level_are_advised_when_sizes_spread_over_the_octave(monkeypatch):
    rng = np.random.default_rng(2)
    side = np.exp(rng.uniform(np.log(24), np.log(96), (12, 6, 1)))  # two octaves, evenly
    low = rng.uniform(0, 500, (12, 6, 2))
    split = split_of([(600, 600)] * 12, list(np.concatenate([low, low + side], axis=2)))
    monkeypatch.setattr(analysis, "read_split", lambda config, name=None: split)
    summary = analysis.analyze(config(fpn={}), fit=True).summary
    one, two = summary["anchors"]["fitted"], summary["anchors"]["fitted_two_per_level"]
    assert (len(one["scales"]), len(two["scales"])) == (1, 2)
    assert two["coverage"] > one["coverage"] + 0.1
    advice = {item["key"]: item["value"] for item in summary["recommendations"]}
    assert advice["model.num_anchor_scales"] == 2
    cfg = config(fpn={})
    cfg.model.num_anchor_scales = 1  # set: the user's choice, no second fit
    assert "fitted_two_per_level" not in analysis.analyze(cfg, fit=True).summary["anchors"]


def test_resolve_anchors_with_fpn_writes_the_pyramids_scales(monkeypatch, tmp_path):
    split = squares(30, size=600)
    monkeypatch.setattr(resolve, "read_split", lambda config, name=None: split)
    cfg = config(fpn={"channels": 64})
    cfg.model.anchor_scales = cfg.model.anchor_ratios = "auto"
    told = []
    resolved = resolve.resolve_anchors(cfg, log=told.append)
    assert len(resolved.model.anchor_scales) == 1 and "on P2-P6, doubling" in told[0]
    assert 20 <= 4 * resolved.model.anchor_scales[0] <= 45
    write_config(str(tmp_path), resolved)
    recorded = load_config(tmp_path / "config.yaml").model
    assert recorded.anchor_scales == resolved.model.anchor_scales
    assert recorded.fpn == FPNConfig(channels=64)
    resumed = resolve.resolve_anchors(cfg, model_dir=str(tmp_path))
    assert resumed.model.anchor_scales == resolved.model.anchor_scales
    # With sizes "auto" the anchors are fitted at the sizes they resolve to (as at `train`).
    cfg.data.min_size = cfg.data.max_size = "auto"
    auto = resolve.resolve_anchors(cfg)
    assert auto.data.min_size == "auto"  # the sizes are resolve_sizes' to write
    assert (
        auto.model.anchor_scales
        == resolve.resolve_anchors(resolve.resolve_sizes(cfg)).model.anchor_scales
    )


def test_resolve_anchors_fits_at_the_sizes_auto_resolves_to(monkeypatch):
    split = squares(12, size=800)  # kept at 800 px by sizes "auto" on one level, not 600
    monkeypatch.setattr(resolve, "read_split", lambda config, name=None: split)
    cfg = config(min_size="auto", max_size="auto")
    cfg.model.anchor_scales = cfg.model.anchor_ratios = "auto"
    auto = resolve.resolve_anchors(cfg)
    assert auto.data.min_size == "auto"  # the sizes are resolve_sizes' to write
    sized = resolve.resolve_sizes(cfg)
    assert sized.data.min_size == 800
    assert auto.model.anchor_scales == resolve.resolve_anchors(sized).model.anchor_scales
    at_600 = config()
    at_600.model.anchor_scales = at_600.model.anchor_ratios = "auto"
    at_600 = resolve.resolve_anchors(at_600).model.anchor_scales  # 9 px boxes, not 12 px
    assert auto.model.anchor_scales != at_600


def test_sizes_auto_keeps_the_native_size_of_tiny_objects(monkeypatch, tmp_path):
    # 12 px objects in 800 px images: at 600 (and 480) they are 9 px, under 2 x 16.
    split = squares(12, size=800)
    augment = {"scales": [480, 544, 600]}
    cfg = config(min_size="auto", max_size="auto", augment=augment)
    plan = image_sizes.size_plan(cfg, split)
    assert plan["keep_native"] and plan["under_two_cells"]["paper_sizes"] == 1.0
    assert (plan["min_size"], plan["max_size"], plan["scales"]) == (800, 1334, [800])
    # With the pyramid's P2 (8 px) the 9 px objects fit: the paper's sizes stay.
    plan = image_sizes.size_plan(config(fpn={}, min_size="auto", max_size="auto"), split)
    assert (plan["min_size"], plan["max_size"], plan["keep_native"]) == (600, 1000, False)
    # pad_to caps max_size "auto".
    plan = image_sizes.size_plan(config(min_size="auto", max_size="auto", pad_to=[900, 900]), split)
    assert (plan["min_size"], plan["max_size"]) == (800, 900)
    monkeypatch.setattr(resolve, "read_split", lambda config, name=None: split)
    told = []
    resolved = resolve.resolve_sizes(cfg, log=told.append)
    assert (resolved.data.min_size, resolved.data.max_size) == (800, 1334)
    assert resolved.data.augment.scales == [800] and cfg.data.min_size == "auto"
    assert "min_size 800, max_size 1334" in told[0] and "native size" in told[0]
    write_config(str(tmp_path), resolved)
    resumed = resolve.resolve_sizes(cfg, model_dir=str(tmp_path))
    assert (resumed.data.min_size, resumed.data.max_size) == (800, 1334)


def test_sizes_auto_keeps_the_papers_sizes_for_large_objects():
    split = squares(200, size=800)
    cfg = config(min_size="auto", max_size="auto", augment={"scales": [480, 600]})
    plan = image_sizes.size_plan(cfg, split)
    assert (plan["min_size"], plan["max_size"], plan["scales"]) == (600, 1000, [480, 600])
    assert not plan["keep_native"]
    plan = image_sizes.size_plan(config(min_size=512, max_size="auto"), split)
    assert (plan["min_size"], plan["max_size"]) == (512, 854)  # 512 * 5 / 3 -> 854
    assert image_sizes.size_plan(config(min_size=512), split)["max_size"] == 1000


def test_analyze_recommends_the_pyramid_and_sizes_auto(monkeypatch):
    split = squares(12, size=800)
    monkeypatch.setattr(analysis, "read_split", lambda config, name=None: split)
    advice = {
        item["key"]: item["value"]
        for item in analysis.analyze(config(), fit=True).summary["recommendations"]
    }
    assert advice["model.fpn"] == {"min_level": 2, "max_level": 6}
    assert advice["data.min_size"] == "auto"  # keeps 800 px, no upscaling advised
    fpn_advice = analysis.analyze(config(fpn={}), fit=True).summary["recommendations"]
    assert not {"model.fpn", "data.min_size", "data.max_size"} & {i["key"] for i in fpn_advice}


def test_analyze_cli_with_and_without_the_pyramid(voc, tmp_path, capsys):
    objects = [("cat", 10, 10, 30, 30), ("cat", 100, 120, 124, 140), ("cat", 40, 200, 200, 290)]
    for number in range(4):
        voc.add(f"i{number}", objects, size=(400, 300))
    voc.split("train", [f"i{number}" for number in range(4)])
    for fpn, model_row in ((None, "stride 16"), ({"channels": 64}, "P2-P6")):
        values = {
            "model": {"num_classes": 1, "class_names": ["cat"], "backbone": "mobilenet"},
            "data": {"source": "voc", "root": str(voc.root), "min_size": "auto"},
        }
        values["model"]["fpn"] = fpn
        path = tmp_path / "voc.yaml"
        path.write_text(yaml.safe_dump(values))
        assert main(["analyze", "--config", str(path), "--out", str(tmp_path / "o")]) == 0
        printed = capsys.readouterr().out
        assert "pyramid vs one map" in printed and "P2-P6" in printed
        row = next(line for line in printed.splitlines() if "<- the model" in line)
        assert row.strip().startswith(model_row)
        assert "image sizes (data.min_size 'auto'" in printed
        header = next(line for line in printed.splitlines() if line.startswith("class"))
        assert ("P2" in header.split()) == (fpn is not None)


def test_train_resolves_sizes_auto_into_config_yaml_and_eval_uses_them(tmp_path, capsys):
    values = yaml.safe_load(open(SMOKE))
    values["data"].update(min_size="auto", max_size="auto")  # pad_to [64, 64] caps max_size
    values["train"].update(schedule="joint", stages={"joint": {"steps": 2}})
    path = tmp_path / "smoke_sizes.yaml"
    path.write_text(yaml.safe_dump(values))
    model_dir, data_dir = str(tmp_path / "model"), str(tmp_path / "tfds")
    argv = ["--config", str(path), "--model-dir", model_dir, "--data-dir", data_dir]
    assert main(["train", *argv]) == 0
    assert "min_size 600, max_size 64" in capsys.readouterr().out
    recorded = load_config(tmp_path / "model" / "config.yaml").data
    assert (recorded.min_size, recorded.max_size) == (600, 64)
    assert main(["eval", *argv]) == 0


def test_the_cpu_example_does_not_shrink_images_of_tiny_objects():
    # Issue #21 item 7 on the config users copy: 640 px images of 28 px defects stay at 640
    # (at its smallest multi-scale side, 480, they would be 21 px: under two stride-16 cells),
    # while large objects keep the example's 600 px and its 480/544/600 multi-scale.
    cpu = load_config(os.path.join(ROOT, "configs", "mobilenet_cpu.yaml"))
    assert (cpu.data.min_size, cpu.data.max_size) == ("auto", "auto")
    plan = image_sizes.size_plan(cpu, squares(28, size=640))
    assert plan["keep_native"]
    assert (plan["min_size"], plan["max_size"], plan["scales"]) == (640, 800, [640])
    plan = image_sizes.size_plan(cpu, squares(200, size=640))
    assert (plan["min_size"], plan["max_size"], plan["scales"]) == (600, 800, [480, 544, 600])
