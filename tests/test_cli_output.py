"""What the commands print and write for a user: plain log lines in a file, the summaries each
command ends with, `--help` without TensorFlow, `eval` without `--config`, and `predict` on a
directory writing COCO results."""

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO

from tf_frcnn import choices, progress, rundir
from tf_frcnn.data.records import BoxRepairWarning
from tf_frcnn_cli import LOG_FORMATS, STRATEGIES, WEIGHT_CHOICES, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")
STAGES = ("rpn1", "detector2", "rpn3", "detector4")
STEPS, LOG_EVERY, EVAL_EVERY = 8, 4, 4
CONTROL = re.compile(r"[\r\x08\x1b]")


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_never_imports_tensorflow(argv):
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "import tf_frcnn_cli\n"
        "try:\n"
        f"    tf_frcnn_cli.main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "print('SECONDS', time.perf_counter() - start)\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_frcnn')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "usage: tf-frcnn" in done.stdout
    assert "LOADED []" in done.stdout, done.stdout
    seconds = float(re.search(r"SECONDS ([\d.]+)", done.stdout).group(1))
    assert seconds < 1.0
    assert done.stderr == ""


def test_parser_choices_are_the_packages():
    assert STRATEGIES == choices.STRATEGIES
    assert WEIGHT_CHOICES == tuple(rundir.WEIGHTS)
    assert LOG_FORMATS == progress.FORMATS


def test_a_warning_is_one_line_naming_its_file(capsys):
    with progress.one_line_warnings(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(
            BoxRepairWarning("train.txt: dropped 2 boxes\n  and clipped 1", 2, 1), stacklevel=1
        )
        warnings.warn("something odd", UserWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "warning: train.txt: dropped 2 boxes and clipped 1",
        f"warning: something odd (UserWarning, test_cli_output.py:{_line_of('something odd')})",
    ]


def _line_of(text):
    with open(__file__, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if f'warnings.warn("{text}"' in line:
                return number
    raise AssertionError(text)


def test_a_message_never_joins_a_bar_line(capsys):
    with progress.own_lines():
        sys.stdout.write("\r 3/8 ━━━━ - loss: 0.5")
        print("time budget 25 min: rpn1 40 steps")
        sys.stdout.write("\b\b\r 4/8 ━━━━ - loss: 0.4")
        sys.stderr.write("warning: a repaired box\n")
        sys.stdout.write("\r 8/8 ━━━━ - loss: 0.3\n")
    captured = capsys.readouterr()
    assert "loss: 0.5\ntime budget 25 min: rpn1 40 steps\n" in captured.out
    assert "loss: 0.4\n\r 8/8" in captured.out
    assert captured.err == "warning: a repaired box\n"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """(model dir, TFDS dir, train output) of the smoke schedule validating every 4 steps, run
    as a user would: `python -m tf_frcnn_cli train ... > train.log 2>&1`."""
    base = tmp_path_factory.mktemp("logged")
    with open(SMOKE, encoding="utf-8") as handle:
        values = yaml.safe_load(handle)
    values["data"].update(val_split=0.25, data_dir=str(base / "tfds"))
    values["train"].update(eval_every=EVAL_EVERY, val_images=3, log_every=LOG_EVERY)
    config = base / "validated.yaml"
    config.write_text(yaml.safe_dump(values))
    model_dir, log = base / "run", base / "train.log"
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(
            [sys.executable, "-m", "tf_frcnn_cli", "train", "--config", str(config)]
            + ["--model-dir", str(model_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
            timeout=600,
        )
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text[-3000:]
    return str(model_dir), str(base / "tfds"), text


def test_train_log_in_a_file_is_plain_lines(logged_run):
    model_dir, _, text = logged_run
    assert not CONTROL.search(text), repr(CONTROL.search(text))
    for stage in STAGES:
        line = rf"^{stage} step (\d+)/{STEPS}  loss [\d.]+ .*  lr 0.01  .* ETA "
        steps = re.findall(line, text, re.M)
        assert [int(s) for s in steps] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), stage
        validations = re.findall(rf"^{stage} validation at step (\d+)/{STEPS}: (\S+) ", text, re.M)
        assert [int(s) for s, _ in validations] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
        metric = "recall@300" if stage.startswith("rpn") else "mAP50"
        assert {name for _, name in validations} == {metric}
    logged = rundir.read_validation(rundir.log_dir(model_dir), "detector4")
    last = re.findall(r"^detector4 validation at step 8/8: mAP50 ([\d.]+)", text, re.M)
    assert float(last[0]) == pytest.approx(logged[-1]["mAP50"], abs=1e-4)


def test_train_ends_with_its_summary(logged_run):
    model_dir, _, text = logged_run
    best = rundir.RunState.load(model_dir).best
    summary = text[text.rindex("trained ") :].splitlines()
    assert summary[0].startswith(f"trained {model_dir} in ")
    assert summary[1] == (
        f"  best validation: fitness {best['fitness']:.4f} (AP {best['AP']:.4f}, mAP50 "
        f"{best['mAP50']:.4f}; {best['images']} images) at stage detector4, step {best['step']}"
    )
    assert summary[2].startswith("  validations:     rpn1 recall@300 ")
    assert ", detector2 fitness " in summary[2] and "detector2 mAP50" not in summary[2]
    assert f"  eval will use:   {os.path.join(model_dir, 'best.weights.h5')} (best;" in summary[3]
    assert summary[4].startswith(f"  model dir:       {model_dir} (config.yaml")
    assert summary[5] == f"  next:            tf-frcnn eval --model-dir {model_dir}"


def test_eval_without_config_and_its_summary(logged_run, capsys):
    model_dir, tfds_dir, _ = logged_run
    assert main(["eval", "--model-dir", model_dir]) == 0
    out = capsys.readouterr().out
    config = os.path.join(model_dir, "config.yaml")
    assert f"config: {config} (the one training used)" in out
    assert not CONTROL.search(out)
    metrics = json.loads(open(os.path.join(model_dir, "metrics.json")).read())
    summary = out[out.index("evaluated ") :].splitlines()
    assert summary[0].startswith(f"evaluated {model_dir} (best, fitness ")
    assert summary[0].endswith(f"on split 'test', {metrics['num_images']} images")
    assert summary[1] == f"  COCO AP {metrics['AP']:.3f} · mAP50 {metrics['AP50']:.3f}"
    assert summary[2].startswith(f"  RPN recall@300: {metrics['recall@300']:.4f} (")
    assert any(line.startswith("  Most AP50 is lost to ") for line in summary)
    report = os.path.join(model_dir, "report.html")
    assert f"  report:  {report} (and " in out and os.path.getsize(report) > 0
    assert f"  metrics: {os.path.join(model_dir, 'metrics.json')}" in out

    # Another split and other weights write their own files; the default's stay as they were.
    before = open(os.path.join(model_dir, "metrics.json")).read()
    other_files = ["--weights", "final", "--split", "validation"]
    assert main(["eval", "--model-dir", model_dir, *other_files]) == 0
    assert open(os.path.join(model_dir, "metrics.json")).read() == before
    other = json.loads(open(os.path.join(model_dir, "metrics_validation_final.json")).read())
    assert other["split"] == "validation" and other["weights"] == "final"
    assert os.path.exists(os.path.join(model_dir, "report_validation_final.html"))
    capsys.readouterr()

    # A --config other than the training's: used, and what differs is said.
    assert main(["eval", "--model-dir", model_dir, "--config", SMOKE, "--data-dir", tfds_dir]) == 0
    said = capsys.readouterr().out
    assert f"config: {SMOKE}, which differs from {config}" in said
    assert "data.val_split: 0.25 -> None" in said and "train.eval_every: 4 -> None" in said


def test_export_summary_and_predict_on_a_directory(logged_run, tmp_path, monkeypatch, capsys):
    model_dir, _, _ = logged_run
    export = tmp_path / "saved_models" / "shapes"
    assert main(["export", "--model-dir", model_dir, "--out", str(export)]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("exported ") :].splitlines()
    assert re.fullmatch(rf"  SavedModel\s+{export}/1  [\d.]+ (MB|kB)", summary[1]), summary
    assert re.fullmatch(rf"  labels\s+{export}/1/labels.txt  \d+ B", summary[2]), summary
    assert summary[3] == f"  next: tf-frcnn predict --model {export} IMAGES_OR_DIR"

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for name in ("000000000042.png", "street.jpg"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(pictures / name)
    (pictures / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", str(export), "pictures", "--score-threshold", "0"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "runs" / "predict" / "shapes"
    assert "no --out: writing to runs/predict/shapes" in out
    assert sorted(os.listdir(written)) == ["000000000042.png", "predictions.json", "street.png"]
    rows = json.loads((written / "predictions.json").read_text())
    assert f"{len(rows)} detections" in out and rows
    labels = (export / "1" / "labels.txt").read_text().split()
    for row in rows:
        assert set(row) == {"image_id", "category_id", "bbox", "score"} | {
            "category_name",
            "file_name",
        }
        assert row["image_id"] == {"000000000042.png": 42, "street.jpg": "street"}[row["file_name"]]
        assert row["category_name"] == labels[row["category_id"] - 1]
        x, y, w, h = row["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64.01 and y + h <= 48.01
        assert 0 <= row["score"] <= 1
    _loads_as_coco_results(rows, labels)


def _loads_as_coco_results(rows, labels):
    """pycocotools reads the rows as detections of a ground truth with those images."""
    numeric = [row for row in rows if isinstance(row["image_id"], int)]
    truth = COCO()
    truth.dataset = {
        "images": [{"id": 42, "width": 64, "height": 48}],
        "annotations": [],
        "categories": [{"id": i, "name": name} for i, name in enumerate(labels, start=1)],
    }
    truth.createIndex()
    results = truth.loadRes(numeric)
    assert len(results.getAnnIds()) == len(numeric) > 0


def test_relative_config_paths_are_read_from_the_current_directory(tmp_path, monkeypatch, capsys):
    """One rule: a relative path in a config is read from the current directory, not the config
    file's; the error names the resolved path."""
    configs = tmp_path / "configs"
    configs.mkdir()
    config = configs / "voc.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"num_classes": 1, "class_names": ["cat"]},
                "data": {"source": "voc", "root": "data/VOC2007"},
            }
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["analyze", "--config", str(config), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    resolved = os.path.join(str(work), "data", "VOC2007")
    assert resolved in err and str(configs / "data") not in err, err
    assert len(err.strip().splitlines()) == 1
