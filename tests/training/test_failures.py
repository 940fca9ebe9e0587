import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.training import Objective, StageLoop, Trainer, TrainingDiverged, make_optimizer
from tf_frcnn.training.schedule import stage_config


def test_nan_loss_stops_and_no_nan_reaches_the_weights(smoke_config):
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    model = build_model(smoke_config)
    model(batch)
    loop = StageLoop.for_stage(
        model,
        "joint",
        Objective.from_config(smoke_config),
        make_optimizer(smoke_config.train, stage_config(smoke_config, "x")),
        tf.distribute.get_strategy(),
    )
    loop.step(batch)
    poisoned = dict(batch, images=batch["images"] * np.nan)
    with pytest.raises(TrainingDiverged):
        loop.step(poisoned)
    assert all(np.all(np.isfinite(np.array(w))) for w in model.weights)


def test_nan_in_a_run_names_stage_and_step_and_keeps_last_checkpoint(
    smoke_config, tmp_path, monkeypatch
):
    smoke_config.train.stages["rpn1"].steps = 6
    smoke_config.train.checkpoint_every = 2
    real = inputs.training_batches

    def poisoned(config, split, batch_size, start_step=0):
        clean = real(config, split, batch_size, start_step)

        def poison(index, batch):
            scale = tf.where(index >= 4 - start_step, np.float32(np.nan), np.float32(1.0))
            return dict(batch, images=batch["images"] * scale)

        return clean.enumerate().map(poison)

    monkeypatch.setattr(inputs, "training_batches", poisoned)
    trainer = Trainer(smoke_config, str(tmp_path), progress=False)
    with pytest.raises(TrainingDiverged, match=r"stage 'rpn1' at step 5"):
        trainer.run()
    with open(tmp_path / "state.json") as handle:
        state = json.load(handle)
    assert state["current_stage"] == "rpn1" and state["step"] == 4
    assert os.path.exists(tmp_path / "stages" / "rpn1" / "ckpt-4.index")
    assert not os.path.exists(tmp_path / "stages" / "rpn1" / "ckpt-5.index")


def test_resume_continues_the_unfinished_stage(smoke_config, tmp_path, monkeypatch):
    """A run stopped in stage 2 resumes there, from its last checkpoint's step."""
    smoke_config.train.checkpoint_every = 2
    from tf_frcnn.training import loop as loop_module

    real_step = loop_module.StageLoop.step
    calls = {"n": 0}

    def dying_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # the 3rd step of stage 2 (stage 1 has 8)
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.StageLoop, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(smoke_config, str(tmp_path), progress=False).run()
    with open(tmp_path / "state.json") as handle:
        state = json.load(handle)
    assert state["finished_stages"] == ["rpn1"]
    assert state["current_stage"] == "detector2" and state["step"] == 2

    monkeypatch.setattr(loop_module.StageLoop, "step", real_step)
    resumed = Trainer(smoke_config, str(tmp_path), progress=False)
    starts = {}
    original = resumed._train_stage

    def record(stage, state, resuming):
        starts[stage] = resuming
        return original(stage, state, resuming)

    resumed._train_stage = record
    resumed.run(resume=True)
    assert starts == {"detector2": True, "rpn3": False, "detector4": False}
    assert int(resumed.loops["detector2"].optimizer.iterations.numpy()) == 8
    with open(tmp_path / "state.json") as handle:
        assert json.load(handle)["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]


def test_loss_scaling_overflow_is_skipped_not_fatal(smoke_config):
    """Under a LossScaleOptimizer (train.mixed_precision on a GPU) a step whose scaled
    gradients overflow is skipped by the scaler, which halves its scale; the run goes on
    and the weights stay as they were."""
    import keras

    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    model = build_model(smoke_config)
    model(batch)
    inner = make_optimizer(smoke_config.train, stage_config(smoke_config, "x"))
    optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**120)
    loop = StageLoop.for_stage(
        model,
        "joint",
        Objective.from_config(smoke_config),
        optimizer,
        tf.distribute.get_strategy(),
        clip_norm=10.0,
    )
    before = [w.numpy() for w in model.trainable_weights]
    losses = loop.step(batch)
    assert np.isfinite(losses["loss"])
    assert float(optimizer.dynamic_scale) == 2.0**119
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.trainable_weights, before))
    optimizer.dynamic_scale.assign(2.0**10)  # a sane scale: the next step trains
    loop.step(batch)
    assert not all(np.array_equal(w.numpy(), b) for w, b in zip(model.trainable_weights, before))
