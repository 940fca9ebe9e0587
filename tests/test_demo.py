import json
import os

from tf_frcnn.demo import run_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_end_to_end_on_the_smoke_config(tmp_path, capsys):
    metrics = run_demo(
        config_path=os.path.join(ROOT, "configs", "smoke.yaml"),
        model_dir=str(tmp_path / "demo"),
        data_dir=str(tmp_path / "tfds"),
        export_dir=str(tmp_path / "saved_models" / "smoke"),
    )
    out = capsys.readouterr().out
    for step in range(1, 6):
        assert f"[{step}/5]" in out
    assert "demo finished" in out and "AP50" in out
    with open(tmp_path / "demo" / "metrics.json") as handle:
        assert json.load(handle)["AP50"] == metrics["AP50"]
    version = tmp_path / "saved_models" / "smoke" / "1"
    assert (version / "saved_model.pb").exists() and (version / "model.tflite").exists()
    assert len(os.listdir(tmp_path / "demo" / "predictions")) == 6
