import ast
import json
import os

import numpy as np
import pytest
from PIL import Image

from tf_frcnn_cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def _one_line_error(capsys, code, *needles):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["train", "eval", "export", "predict", "demo"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  backbone: tiny\n  anchor_sizes: [1, 2]\n")
    line = _one_line_error(
        capsys,
        main(["train", "--config", str(config), "--model-dir", str(tmp_path / "m")]),
        "model.anchor_sizes",
        str(config),
    )
    assert "unknown config key" in line


def test_missing_config_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    _one_line_error(capsys, main(["train", "--config", missing]), missing)


def test_out_of_range_config_value(tmp_path, capsys):
    config = tmp_path / "range.yaml"
    config.write_text("rpn:\n  positive_iou: 1.5\n")
    _one_line_error(
        capsys,
        main(["train", "--config", str(config), "--model-dir", str(tmp_path / "m")]),
        "rpn.positive_iou",
    )


def test_invalid_yaml(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model: [unclosed\n")
    _one_line_error(capsys, main(["train", "--config", str(config)]), "invalid YAML")


def test_eval_without_training(tmp_path, capsys):
    _one_line_error(
        capsys, main(["eval", "--config", SMOKE, "--model-dir", str(tmp_path)]), "final.weights.h5"
    )


def test_predict_missing_model_and_bad_images(tmp_path, capsys):
    _one_line_error(
        capsys,
        main(["predict", "--model", str(tmp_path / "none"), "x.png", "--out", str(tmp_path)]),
        "model not found",
    )


@pytest.fixture(scope="module")
def trained_dir(smoke_run):
    return smoke_run


def test_train_eval_export_predict(trained_dir, tmp_path, capsys):
    model_dir, tfds_dir = trained_dir
    with open(os.path.join(model_dir, "state.json")) as handle:
        assert json.load(handle)["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]
    assert (
        main(
            [
                "train",
                "--config",
                SMOKE,
                "--model-dir",
                model_dir,
                "--data-dir",
                tfds_dir,
                "--resume",
            ]
        )
        == 0
    )

    assert main(["eval", "--config", SMOKE, "--model-dir", model_dir, "--data-dir", tfds_dir]) == 0
    with open(os.path.join(model_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    for key in ("AP", "AP50", "AP75", "mAP_voc07", "recall@300"):
        assert key in metrics
    for name in ("report.md", "report.html", "pr_curves.png", "loss_curves.png", "rpn_recall.png"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0
    assert "AP50" in capsys.readouterr().out

    out = str(tmp_path / "saved_models" / "smoke")
    assert main(["export", "--model-dir", model_dir, "--out", out]) == 0
    assert os.path.exists(os.path.join(out, "1", "saved_model.pb"))
    assert os.path.exists(os.path.join(out, "1", "labels.txt"))

    image = tmp_path / "scene.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(image)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    preds = tmp_path / "preds"
    assert main(["predict", "--model", out, str(image), "--out", str(preds)]) == 0
    assert Image.open(preds / "scene.png").size == (512, 512)  # 64 px drawn enlarged
    capsys.readouterr()
    _predict_with_thresholds(capsys, out, image, metrics, tmp_path)
    _one_line_error(
        capsys, main(["predict", "--model", out, str(corrupt), "--out", str(preds)]), str(corrupt)
    )
    _one_line_error(
        capsys,
        main(["predict", "--model", out, str(tmp_path / "missing.png"), "--out", str(preds)]),
        "missing.png",
    )


def _predict_with_thresholds(capsys, model, image, metrics, tmp_path):
    """--thresholds takes metrics.json's per-class thresholds: all at 0 keeps every detection, all
    above 1 none, and with only one class's at 0 just that class's detections are kept; --html
    writes the index page."""
    names = {label: entry["name"] for label, entry in metrics["thresholds"].items()}
    assert sorted(names) == ["1", "2", "3", "4"]
    preds = tmp_path / "thresholded"

    def predict(thresholds):
        path = tmp_path / "thresholds.json"
        path.write_text(
            json.dumps(
                {
                    "thresholds": {
                        label: {"name": name, "threshold": thresholds(label)}
                        for label, name in names.items()
                    }
                }
            )
        )
        assert (
            main(
                [
                    "predict",
                    "--model",
                    model,
                    str(image),
                    "--out",
                    str(preds),
                    "--thresholds",
                    str(path),
                    "--html",
                ]
            )
            == 0
        )
        line = capsys.readouterr().out.splitlines()[0]
        found = ast.literal_eval(line[line.index("[") : line.index("]") + 1])
        return int(line.split(": ")[1].split()[0]), found

    everything, found = predict(lambda label: 0.0)
    assert everything > 0
    assert predict(lambda label: 1.01)[0] == 0
    kept_name = found[0][0]
    kept_label = next(label for label, name in names.items() if name == kept_name)
    count, found = predict(lambda label: 0.0 if label == kept_label else 1.01)
    assert 0 < count <= everything and {name for name, _ in found} == {kept_name}
    index = (preds / "index.html").read_text()
    assert 'src="scene.png"' in index and f"{count} detections" in index
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"thresholds": {"1": {"name": "zebra", "threshold": 0.5}}}))
    _one_line_error(
        capsys,
        main(
            [
                "predict",
                "--model",
                model,
                str(image),
                "--out",
                str(preds),
                "--thresholds",
                str(wrong),
            ]
        ),
        "--thresholds",
        "wrong.json",
    )


def test_eval_and_export_with_truncated_svd(trained_dir, tmp_path, capsys):
    model_dir, tfds_dir = trained_dir
    assert (
        main(
            [
                "eval",
                "--config",
                SMOKE,
                "--model-dir",
                model_dir,
                "--data-dir",
                tfds_dir,
                "--svd-ranks",
                "16",
                "8",
            ]
        )
        == 0
    )
    with open(os.path.join(model_dir, "metrics_svd.json")) as handle:
        metrics = json.load(handle)
    assert metrics["svd_ranks"] == [16, 8] and "AP50" in metrics
    assert os.path.exists(os.path.join(model_dir, "report_svd.md"))
    out, plain = str(tmp_path / "svd"), str(tmp_path / "plain")
    assert main(["export", "--model-dir", model_dir, "--out", out, "--svd-ranks", "16", "0"]) == 0
    assert main(["export", "--model-dir", model_dir, "--out", plain]) == 0

    def variables_size(base):
        directory = os.path.join(base, "1", "variables")
        return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))

    # fc6 (6272 x 64 on the smoke model) becomes 6272 x 16 + 16 x 64: the old kernel is not kept.
    saved = (6272 * 64 - (6272 * 16 + 16 * 64)) * 4
    assert variables_size(plain) - variables_size(out) > 0.9 * saved
    capsys.readouterr()
    _one_line_error(
        capsys,
        main(["export", "--model-dir", model_dir, "--out", out, "--svd-ranks", "16"]),
        "--svd-ranks",
        "fc6, fc7",
    )
    _one_line_error(
        capsys,
        main(["export", "--model-dir", model_dir, "--out", out, "--svd-ranks", "64", "0"]),
        "fc6",
        "rank 64",
    )


def test_export_verify_checks_every_artifact(trained_dir, tmp_path, capsys):
    model_dir, _ = trained_dir
    out = tmp_path / "verified"
    assert (
        main(
            [
                "export",
                "--model-dir",
                model_dir,
                "--out",
                str(out),
                "--tflite",
                "--verify",
                "--images",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "1" / "verify.json").read_text())
    assert report["ok"] and report["images"] == 4
    assert [row["artifact"] for row in report["artifacts"]] == [
        "Keras model",
        "SavedModel serving_default",
        "SavedModel serving_bytes",
        "TFLite float32",
    ]
    assert (out / "1" / "verify.md").read_text().strip() in printed
    _one_line_error(
        capsys,
        main(
            [
                "export",
                "--model-dir",
                model_dir,
                "--out",
                str(out),
                "--verify",
                "--tolerance",
                "-0.1",
            ]
        ),
        "--tolerance",
    )


def test_export_keras_file_loads_the_keras_way(trained_dir, tmp_path, capsys):
    import keras
    import tensorflow as tf

    from tf_frcnn.rundir import load_trained_model

    trained_dir, _ = trained_dir
    missing = _one_line_error(
        capsys,
        main(["eval", "--config", SMOKE, "--model-dir", trained_dir, "--weights", "keras"]),
        "model.keras",
    )
    assert "--format keras" in missing
    out = tmp_path / "smoke.keras"
    assert main(["export", "--model-dir", trained_dir, "--format", "keras", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    images = tf.random.uniform([1, 64, 64, 3], maxval=255.0, seed=5)
    expected = load_trained_model(trained_dir)[0]({"images": images})
    loaded = keras.models.load_model(str(out))({"images": images})
    np.testing.assert_allclose(loaded["detection_boxes"], expected["detection_boxes"], atol=1e-4)
    _one_line_error(
        capsys,
        main(
            [
                "export",
                "--model-dir",
                trained_dir,
                "--format",
                "keras",
                "--out",
                str(tmp_path / "m.h5"),
            ]
        ),
        ".keras",
    )
    _one_line_error(capsys, main(["export", "--model-dir", trained_dir]), "--out")
