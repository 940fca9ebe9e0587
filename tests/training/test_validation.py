"""Validation during training: val.jsonl rows, best.weights.h5, --weights, patience,
and a stopped run resumed with its best checkpoint and its patience count."""

import json
import os

import numpy as np
import pytest
import yaml

from tf_frcnn.config import config_from_dict
from tf_frcnn.rundir import BEST_WEIGHTS, load_trained_model
from tf_frcnn.training import Trainer
from tf_frcnn.training import validation as validation_module
from tf_frcnn_cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def _state(model_dir):
    with open(os.path.join(model_dir, "state.json")) as handle:
        return json.load(handle)


def _rows(model_dir, stage):
    with open(os.path.join(model_dir, "logs", f"{stage}.val.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def _weights_file(path):
    import h5py

    values = []
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                values.append((name, np.array(item))) if isinstance(item, h5py.Dataset) else None
            )
        )
    return dict(values)


def _same_files(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _same_weights(model, snapshot):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snapshot))


@pytest.fixture(scope="module")
def smoke_validated(tmp_path_factory):
    """The smoke schedule validating every 4 steps on a quarter held out of train."""
    tfds_dir = str(tmp_path_factory.mktemp("tfds"))
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["data"].update(val_split=0.25, data_dir=tfds_dir)
    values["train"].update(eval_every=2, val_images=3)
    for stage in values["train"]["stages"].values():
        stage["steps"] = 4
    config = config_from_dict(values)
    model_dir = str(tmp_path_factory.mktemp("validated"))
    Trainer(config, model_dir, progress=False).run()
    return model_dir


def test_every_stage_logs_its_validation_rows(smoke_validated):
    keys = {
        "rpn1": {"recall@300"},
        "rpn3": {"recall@300"},
        "detector2": {"mAP50", "AP", "AP50", "fitness"},
        "detector4": {"mAP50", "AP", "AP50", "fitness"},
    }
    for stage, expected in keys.items():
        rows = _rows(smoke_validated, stage)
        assert [row["step"] for row in rows] == [2, 4]
        for row in rows:
            assert set(row) == expected | {"step", "images"}
            assert row["images"] == 3  # train.val_images
            assert all(isinstance(row[k], float) and 0.0 <= row[k] <= 1.0 for k in expected)
            if "fitness" in row:
                assert row["fitness"] == pytest.approx(0.9 * row["AP"] + 0.1 * row["mAP50"])
    # The RPN of the smoke model finds some objects, which recall@300 must see.
    assert max(row["recall@300"] for row in _rows(smoke_validated, "rpn1")) > 0.0
    events = os.listdir(os.path.join(smoke_validated, "logs", "detector4"))
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_best_of_the_final_stage_is_recorded(smoke_validated):
    rows = _rows(smoke_validated, "detector4")
    best = max(rows, key=lambda row: row["fitness"])  # train.select_by's default
    state = _state(smoke_validated)
    assert state["best"] == {"stage": "detector4", **best}
    assert os.path.exists(os.path.join(smoke_validated, BEST_WEIGHTS))
    assert state["validation"]["detector4"]["last_step"] == 4


# -- scripted validations: the values are chosen, the weights are real -----------------


def _joint_config(tmp_path, steps=12, patience=None):
    tfds_dir = str(tmp_path / "tfds")
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["data"].update(val_split="validation", data_dir=tfds_dir, num_eval=2)
    values["train"].update(
        schedule="joint",
        select_by="mAP50",
        eval_every=3,
        patience=patience,
        checkpoint_every=100,
        stages={"joint": {"steps": steps, "learning_rate": 0.01}},
    )
    return config_from_dict(values)


@pytest.fixture()
def scripted(monkeypatch):
    """Validation returns mAP50 = values[step] and snapshots the weights it saw."""
    script = {"values": {}, "seen": {}, "step": None}
    measure = validation_module.ValidationSchedule.measure

    def fake_call(self):
        step = script["step"]
        script["seen"][step] = self.model.get_weights()
        self.num_images = 2
        value = script["values"][step]
        return {"mAP50": value, "AP": value / 2, "AP50": value}

    def record_step(self, step):
        script["step"] = step
        return measure(self, step)

    monkeypatch.setattr(validation_module.StageValidator, "__call__", fake_call)
    monkeypatch.setattr(validation_module.ValidationSchedule, "measure", record_step)
    return script


def test_best_weights_are_the_best_steps_and_weights_chooses_the_file(tmp_path, scripted, capsys):
    scripted["values"] = {3: 0.2, 6: 0.6, 9: 0.4, 12: 0.5}
    config = _joint_config(tmp_path)
    model_dir = str(tmp_path / "model")
    trainer = Trainer(config, model_dir, progress=False)
    trainer.run()
    assert _state(model_dir)["best"] == {
        "stage": "joint",
        "step": 6,
        "mAP50": 0.6,
        "AP": 0.3,
        "AP50": 0.6,
        "images": 2,
    }
    best = scripted["seen"][6]
    assert _same_weights(trainer.model, scripted["seen"][12])  # final = last step's
    assert not _same_weights(trainer.model, best)

    assert _same_weights(load_trained_model(model_dir, weights="best")[0], best)
    assert _same_weights(load_trained_model(model_dir)[0], best)  # default: best
    final = load_trained_model(model_dir, weights="final")[0]
    assert _same_weights(final, scripted["seen"][12])

    config_path = tmp_path / "joint.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    assert (
        main(["eval", "--config", str(config_path), "--model-dir", model_dir, "--weights", "final"])
        == 0
    )
    assert "(final)" in capsys.readouterr().out
    # Not the default weights (best exists): its own file, metrics.json is the default's.
    with open(os.path.join(model_dir, "metrics_final.json")) as handle:
        assert json.load(handle)["weights"] == "final"
    os.remove(os.path.join(model_dir, BEST_WEIGHTS))
    assert (
        main(
            [
                "export",
                "--model-dir",
                model_dir,
                "--out",
                str(tmp_path / "saved"),
                "--weights",
                "best",
            ]
        )
        == 2
    )
    assert "no best.weights.h5" in capsys.readouterr().err


def test_best_and_patience_survive_a_kill_and_resume(tmp_path, scripted, monkeypatch):
    """Killed at step 9 after its checkpoint but before its validation is recorded
    (best at 3, then one validation without gain): the resumed run validates step 9
    again, keeps best.weights.h5 and the count, and patience 2 stops it at 9 of 15."""
    scripted["values"] = {3: 0.6, 6: 0.4, 9: 0.5, 12: 0.9, 15: 0.9}
    config = _joint_config(tmp_path, steps=15, patience=2)
    model_dir = str(tmp_path / "model")
    commit = validation_module.ValidationSchedule.commit

    def dying_commit(self, row):
        if row["step"] == 9:
            raise KeyboardInterrupt
        return commit(self, row)

    monkeypatch.setattr(validation_module.ValidationSchedule, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, model_dir, progress=False).run()
    state = _state(model_dir)
    assert state["validation"]["joint"] == {
        "best": 0.6,
        "best_step": 3,
        "since_best": 1,
        "reference": 0.6,
        "last_step": 6,
    }
    assert os.path.exists(os.path.join(model_dir, "stages", "joint", "ckpt-9.index"))
    best_before = _weights_file(os.path.join(model_dir, BEST_WEIGHTS))
    first_seen = scripted["seen"].pop(9)

    monkeypatch.setattr(validation_module.ValidationSchedule, "commit", commit)
    resumed = Trainer(config, model_dir, progress=False)
    resumed.run(resume=True)
    assert all(np.array_equal(a, b) for a, b in zip(scripted["seen"][9], first_seen))
    state = _state(model_dir)
    assert state["finished_stages"] == ["joint"]
    assert state["best"] == {
        "stage": "joint",
        "step": 3,
        "mAP50": 0.6,
        "AP": 0.3,
        "AP50": 0.6,
        "images": 2,
    }
    assert state["validation"]["joint"] == {
        "best": 0.6,
        "best_step": 3,
        "since_best": 2,
        "reference": 0.6,
        "last_step": 9,
    }
    assert int(resumed.loops["joint"].optimizer.iterations.numpy()) == 9  # stopped early
    assert [row["step"] for row in _rows(model_dir, "joint")] == [3, 6, 9]
    assert _same_files(_weights_file(os.path.join(model_dir, BEST_WEIGHTS)), best_before)
    assert _same_weights(load_trained_model(model_dir, weights="best")[0], scripted["seen"][3])
