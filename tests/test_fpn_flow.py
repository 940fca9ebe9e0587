"""A pyramid model through the whole flow (issue #21): the 4-step schedule shares and
freezes the pyramid as the backbone, the .keras round trip, and `export --verify` of the
SavedModel and the float32 and int8 TFLite files; validation during training."""

import copy
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.config import config_from_dict
from tf_frcnn.rundir import load_trained_model
from tf_frcnn.training import Trainer
from tf_frcnn.training import loop as loop_module
from tf_frcnn_cli import main

CONFIG = {
    "model": {
        "backbone": "tiny",
        "num_classes": 4,
        "tiny_channels": [8, 8, 16, 16],
        "fc_units": [32, 32],
        "fpn": {"channels": 16},
    },
    "rpn": {"train_pre_nms": 200, "train_post_nms": 64, "test_pre_nms": 100, "test_post_nms": 32},
    "roi": {"num_rois": 32},
    "data": {
        "source": "synthetic",
        "image_size": 64,
        "num_train": 8,
        "num_eval": 4,
        "min_size": 64,
        "max_size": 64,
        "pad_to": [64, 64],
        "batch_size": 2,
        "max_boxes": 8,
        "val_split": 0.25,
    },
    "train": {
        "checkpoint_every": 4,
        "eval_every": 2,
        "stages": {
            name: {"steps": 2, "learning_rate": 0.01}
            for name in ("rpn1", "detector2", "rpn3", "detector4")
        },
    },
}


def _weights(layer):
    return [np.array(w) for w in layer.weights]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


class RecordingTrainer(Trainer):
    """Snapshots the pyramid (the features network's "fpn" layer), the rest of the
    features network, the RPN and the detector when each stage starts and ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start, self.end = {}, {}

    def _snapshot(self):
        features = self.model.features
        return {
            "fpn": _weights(features.get_layer("fpn")),
            "backbone": _weights(features.get_layer("stage2_conv")),
            "rpn": _weights(self.model.rpn_head),
            "detector": _weights(self.model.detector_head),
        }

    def _train_stage(self, stage, state, resuming):
        self.start[stage] = self._snapshot()
        super()._train_stage(stage, state, resuming)
        self.end[stage] = self._snapshot()


@pytest.fixture(scope="module")
def fpn_run(tmp_path_factory):
    config = config_from_dict(CONFIG)
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    model_dir = str(tmp_path_factory.mktemp("fpn"))
    trainer = RecordingTrainer(config, model_dir, progress=False)
    trainer.run()
    return trainer, model_dir, config


def test_the_schedule_shares_and_freezes_the_pyramid_as_the_backbone(fpn_run):
    trainer, _, _ = fpn_run
    start, end = trainer.start, trainer.end
    for part in ("fpn", "backbone"):
        # rpn1 and detector2 both start from the initial weights and train it...
        assert _same(start["rpn1"][part], start["detector2"][part])
        assert not _same(start["rpn1"][part], end["rpn1"][part])
        assert not _same(start["detector2"][part], end["detector2"][part])
        # ...rpn3 starts from detector2's and, like detector4, keeps it frozen.
        assert _same(end["detector2"][part], start["rpn3"][part])
        assert _same(start["rpn3"][part], end["rpn3"][part])
        assert _same(start["detector4"][part], end["detector4"][part])
    assert not _same(start["rpn3"]["rpn"], end["rpn3"]["rpn"])
    assert _same(start["detector4"]["rpn"], end["detector4"]["rpn"])
    assert not _same(start["detector4"]["detector"], end["detector4"]["detector"])


def test_validation_ran_in_every_stage(fpn_run):
    _, model_dir, _ = fpn_run
    for stage, metric in (("rpn1", "recall@300"), ("detector2", "mAP50"), ("rpn3", "recall@300")):
        with open(os.path.join(model_dir, "logs", f"{stage}.val.jsonl")) as log:
            rows = [json.loads(line) for line in log]
        assert rows and all(metric in row for row in rows), (stage, rows)


def test_keras_round_trip_of_a_pyramid_model(fpn_run, tmp_path):
    _, model_dir, _ = fpn_run
    model, _ = load_trained_model(model_dir)
    path = str(tmp_path / "fpn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.pyramid
    images = np.random.default_rng(1).uniform(0, 255, (1, 72, 88, 3)).astype(np.float32)
    ours, theirs = model({"images": images}), loaded({"images": images})
    for key in ("proposals", "detection_boxes", "detection_scores"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-4)


def test_svd_of_the_head_on_pyramid_features(fpn_run):
    _, model_dir, _ = fpn_run
    model, _ = load_trained_model(model_dir)
    truncated, _ = load_trained_model(model_dir, svd_ranks=[16, 16])
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    full, cut = model({"images": images}), truncated({"images": images})
    # fc6 takes the 7 x 7 x 16 pooled pyramid features; rank 16 of a 32-unit layer.
    assert truncated.detector_head.fcs[0].weights[0].shape == (7 * 7 * 16, 16)
    np.testing.assert_allclose(full["proposals"], cut["proposals"])


def test_export_verify_passes_on_a_pyramid_model(fpn_run, tmp_path, capsys):
    _, model_dir, _ = fpn_run
    out = str(tmp_path / "saved")
    code = main(
        [
            "export",
            "--model-dir",
            model_dir,
            "--out",
            out,
            "--tflite-variants",
            "--calibration",
            "4",
            "--verify",
        ]
    )
    assert code in (0, None), capsys.readouterr()
    report = json.load(open(os.path.join(out, "1", "verify.json")))
    text = json.dumps(report)
    for artifact in ("serving_default", "serving_bytes", "TFLite float32", "TFLite int8"):
        assert artifact in text


def _h5_weights(path):
    model, _ = load_trained_model(os.path.dirname(path))
    return [np.array(w) for w in model.weights]


def test_a_killed_pyramid_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    values = copy.deepcopy(CONFIG)
    values["train"].update(deterministic=True, checkpoint_every=2, eval_every=None)
    values["train"]["stages"] = {
        name: {"steps": 3, "learning_rate": 0.01}
        for name in ("rpn1", "detector2", "rpn3", "detector4")
    }
    values["data"]["val_split"] = None
    config = config_from_dict(values)
    config.data.data_dir = str(tmp_path / "tfds")
    whole = str(tmp_path / "whole")
    Trainer(config, whole, progress=False).run()

    killed = str(tmp_path / "killed")
    real_step = loop_module.StageLoop.step
    calls = {"n": 0}

    def dying_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 6:  # detector2's 3rd step: after its checkpoint of step 2
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.StageLoop, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, killed, progress=False).run()
    state = json.load(open(os.path.join(killed, "state.json")))
    assert (state["finished_stages"], state["step"]) == (["rpn1"], 2)
    monkeypatch.setattr(loop_module.StageLoop, "step", real_step)
    Trainer(config, killed, progress=False).run(resume=True)
    ours = _h5_weights(os.path.join(whole, "final.weights.h5"))
    again = _h5_weights(os.path.join(killed, "final.weights.h5"))
    assert len(ours) == len(again) and all(np.array_equal(a, b) for a, b in zip(ours, again))


def test_a_pyramid_run_under_a_time_budget(tmp_path):
    values = copy.deepcopy(CONFIG)
    values["train"].update(minutes=0.4, eval_every=None)
    values["train"]["stages"] = {
        name: {"steps": 8, "learning_rate": 0.01}
        for name in ("rpn1", "detector2", "rpn3", "detector4")
    }
    values["data"]["val_split"] = None
    config = config_from_dict(values)
    config.data.data_dir = str(tmp_path / "tfds")
    run = os.path.join(tmp_path, "run")
    Trainer(config, run, progress=False).run()
    state = json.load(open(os.path.join(run, "state.json")))
    assert state["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]
    # The budget measured the pyramid's steps and refitted the stages; each trained its refit.
    assert state["budget"]["fits"] > 0 and state["budget"]["measured"]
    trained = {}
    for stage in state["finished_stages"]:
        with open(os.path.join(run, "logs", f"{stage}.losses.jsonl")) as log:
            trained[stage] = len(log.readlines())
        assert trained[stage] == state["stage_steps"][stage]["steps"], stage
    assert trained != {stage: 8 for stage in trained}
    assert tf.io.gfile.exists(os.path.join(run, "final.weights.h5"))
