"""The training recipe (issue #22): learning-rate schedules with warm-up that follow a
refitted stage, weight averaging and its resume, selection by fitness, min_delta, and a
time budget that early stopping does not waste."""

import json
import math
import os
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf
import yaml

from tf_frcnn.config import ConfigError, StageConfig, config_from_dict, load_config
from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.rundir import FINAL_WEIGHTS, built
from tf_frcnn.stages import STAGES
from tf_frcnn.training import Trainer, budget
from tf_frcnn.training import loop as loop_module
from tf_frcnn.training import validation as validation_module
from tf_frcnn.training.ema import WeightAverage
from tf_frcnn.training.lr import StageSchedule, learning_rate
from tf_frcnn.training.validation import StageValidator, ValidationSchedule, fitness, fresh_record

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


# -- learning-rate schedules --------------------------------------------------------------


def test_constant_and_step_rates_at_hand_picked_steps():
    # No warm-up and no decay: the float Keras has always been given.
    assert learning_rate(StageConfig(learning_rate=0.1)) == 0.1
    warm = StageSchedule(0.1, "constant", steps=100, warmup_steps=4)
    # Warm-up from 0.001 x the rate: step s < 4 has 0.1 * (0.001 + 0.999 * s / 4).
    np.testing.assert_allclose(
        _rates(warm, [0, 2, 4, 50, 99]), [1e-4, 0.05005, 0.1, 0.1, 0.1], rtol=1e-6
    )
    # The paper's drops: 10x after steps 50 and 80 (PiecewiseConstantDecay's step > b).
    step = StageSchedule(0.1, "step", steps=100, decay_steps=[50, 80])
    np.testing.assert_allclose(
        _rates(step, [0, 50, 51, 80, 81, 99]), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6
    )
    step_warm = StageSchedule(0.1, "step", steps=100, decay_steps=[50], warmup_fraction=0.1)
    # Warm-up over 10 steps (0.1 x 100): step 5 is half-way.
    np.testing.assert_allclose(
        _rates(step_warm, [0, 5, 10, 51]), [1e-4, 0.05005, 0.1, 0.01], rtol=1e-6
    )


def test_cosine_rates_at_warmup_start_end_middle_and_last_step():
    cosine = StageSchedule(0.1, "cosine", steps=101, warmup_steps=10, final_lr_fraction=0.05)
    # 0: 0.1 * 0.001; 5: 0.1 * (0.001 + 0.999 / 2); 10: the full rate (cos 0 = 1);
    # 55 is half-way from 10 to the last step 100: 0.1 * (0.05 + 0.95 * 0.5) = 0.0525;
    # 100, the last step: 0.05 x 0.1; later steps stay there.
    np.testing.assert_allclose(
        _rates(cosine, [0, 5, 10, 55, 100, 150]),
        [1e-4, 0.05005, 0.1, 0.0525, 0.005, 0.005],
        rtol=1e-5,
    )


def test_cosine_follows_a_refitted_stage_length():
    schedule = StageSchedule(0.1, "cosine", steps=41, warmup_fraction=0.25, final_lr_fraction=0.05)
    rate_at = tf.function(schedule)  # traced once: the length is read at every call
    assert float(rate_at(tf.constant(40, tf.int64))) == pytest.approx(0.005, rel=1e-5)
    # Warm-up 10.25 steps, last step 40: step 30 is 19.75 / 29.75 of the way down.
    expected = 0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 19.75 / 29.75)))
    assert float(rate_at(tf.constant(30, tf.int64))) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.0291129, rel=1e-5)

    schedule.set_length(21)  # shortened: warm-up 5.25 steps, last step 20
    assert float(rate_at(tf.constant(20, tf.int64))) == pytest.approx(0.005, rel=1e-5)
    # Half-way from 5.25 to 20 is 12.625; step 12 is 6.75 / 14.75 of the way.
    expected = 0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 6.75 / 14.75)))
    assert float(rate_at(tf.constant(12, tf.int64))) == pytest.approx(expected, rel=1e-5)

    schedule.set_length(201)  # lengthened: warm-up 50.25 steps, last step 200
    assert float(rate_at(tf.constant(40, tf.int64))) == pytest.approx(
        0.1 * (0.001 + 0.999 * 40 / 50.25), rel=1e-5
    )
    expected = 0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 49.75 / 149.75)))
    assert float(rate_at(tf.constant(100, tf.int64))) == pytest.approx(expected, rel=1e-5)
    assert float(rate_at(tf.constant(200, tf.int64))) == pytest.approx(0.005, rel=1e-5)
    assert schedule.get_config()["steps"] == 201


def test_schedule_keys_and_the_configs_that_use_them():
    paper = load_config(os.path.join(ROOT, "configs", "voc07_vgg16.yaml"))
    for settings in paper.train.stages.values():
        assert (settings.lr_schedule, settings.warmup_steps, settings.warmup_fraction) == (
            "step",
            None,
            None,
        )
        assert settings.decay_steps
    assert paper.train.ema is None
    coco = load_config(os.path.join(ROOT, "configs", "coco_resnet50.yaml"))
    assert coco.train.stages["joint"].lr_schedule == "step" and coco.train.ema is None
    cpu = load_config(os.path.join(ROOT, "configs", "mobilenet_cpu.yaml"))
    assert {s.lr_schedule for s in cpu.train.stages.values()} == {"cosine"}
    assert all(s.warmup_fraction for s in cpu.train.stages.values())

    on = config_from_dict({"train": {"ema": True}})
    assert (on.train.ema.decay, on.train.ema.warmup) == (0.9999, 2000.0)
    assert config_from_dict({"train": {"ema": {"decay": 0.99}}}).train.ema.warmup == 2000.0
    with pytest.raises(ConfigError, match="unknown config key 'train.ema.tau'"):
        config_from_dict({"train": {"ema": {"tau": 5}}})
    with pytest.raises(ConfigError, match=r"train.stages.rpn1.decay_steps' needs lr_schedule"):
        config_from_dict(
            {"train": {"stages": {"rpn1": {"lr_schedule": "cosine", "decay_steps": [5]}}}}
        )
    with pytest.raises(ConfigError, match="'train.stages.rpn1.lr_schedule' = 'linear'"):
        config_from_dict({"train": {"stages": {"rpn1": {"lr_schedule": "linear"}}}})
    with pytest.raises(ConfigError, match="'train.select_by' = 'AP75'"):
        config_from_dict({"train": {"select_by": "AP75"}})


# -- weight averaging ---------------------------------------------------------------------


def test_weight_average_two_steps_by_hand():
    weights = [tf.Variable([1.0]), tf.Variable([2.0])]
    average = WeightAverage(weights, decay=0.5, warmup=1.0)
    weights[0].assign([3.0])
    weights[1].assign([-2.0])
    average.update()
    # d1 = 0.5 * (1 - e^-1) = 0.3160603: 0.316 * 1 + 0.684 * 3, 0.316 * 2 + 0.684 * -2
    np.testing.assert_allclose(
        [a.numpy()[0] for a in average.averages], [2.3678794, -0.7357589], rtol=1e-6
    )
    weights[0].assign([5.0])
    weights[1].assign([0.0])
    average.update()
    # d2 = 0.5 * (1 - e^-2) = 0.4323324: 0.432 * 2.368 + 0.568 * 5, 0.432 * -0.736 + 0
    np.testing.assert_allclose(
        [a.numpy()[0] for a in average.averages], [3.8620491, -0.3180924], rtol=1e-6
    )
    assert int(average.updates.numpy()) == 2
    with average.swapped():
        np.testing.assert_allclose(
            [w.numpy()[0] for w in weights], [3.8620491, -0.3180924], rtol=1e-6
        )
    assert [w.numpy()[0] for w in weights] == [5.0, 0.0]


def _h5(path):
    values = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                values.__setitem__(name, np.array(item)) if isinstance(item, h5py.Dataset) else None
            )
        )
    return values


def _joint_ema_config(tfds_dir):
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["data"]["data_dir"] = tfds_dir
    values["train"].update(
        schedule="joint",
        deterministic=True,
        checkpoint_every=2,
        ema={"decay": 0.9, "warmup": 2},
        stages={
            "joint": {"steps": 6, "learning_rate": 0.01, "lr_schedule": "cosine", "warmup_steps": 2}
        },
    )
    return config_from_dict(values)


def test_weight_average_resumes_bit_for_bit_after_a_kill(tmp_path, tfds_dir, monkeypatch):
    config = _joint_ema_config(tfds_dir)
    whole = str(tmp_path / "whole")
    Trainer(config, whole, progress=False).run()

    killed = str(tmp_path / "killed")
    real_step = loop_module.StageLoop.step
    calls = {"n": 0}

    def dying_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # after the checkpoint of step 4, before step 5 is saved
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(loop_module.StageLoop, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, killed, progress=False).run()
    with open(os.path.join(killed, "state.json")) as handle:
        assert json.load(handle)["step"] == 4
    monkeypatch.setattr(loop_module.StageLoop, "step", real_step)
    resumed = Trainer(config, killed, progress=False)
    resumed.run(resume=True)
    assert int(resumed.loops["joint"].average.updates.numpy()) == 6

    final, again = _h5(os.path.join(whole, FINAL_WEIGHTS)), _h5(os.path.join(killed, FINAL_WEIGHTS))
    assert final.keys() == again.keys()
    assert all(np.array_equal(final[k], again[k]) for k in final)
    # final.weights.h5 holds the average, not the trained weights the checkpoint keeps.
    raw = built(build_model(config))
    tf.train.Checkpoint(model=raw).restore(
        os.path.join(whole, "stages", "joint", "ckpt-6")
    ).expect_partial()
    averaged = built(build_model(config))
    averaged.load_weights(os.path.join(whole, FINAL_WEIGHTS))
    differ = [
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(raw.trainable_variables, averaged.trainable_variables)
    ]
    assert any(differ)


# -- selection and stopping -----------------------------------------------------------------


class _Scripted:
    """A validator returning chosen values (no model)."""

    def __init__(self, metric, rows):
        self.metric = metric
        self.rows = iter(rows)
        self.num_images = 44

    def __call__(self):
        return next(self.rows)


def _detector_row(mAP50, AP):
    return {"mAP50": mAP50, "AP": AP, "AP50": mAP50, "fitness": fitness({"mAP50": mAP50, "AP": AP})}


def test_fitness_weighs_coco_ap_and_selects_what_map50_alone_would_not(tmp_path):
    assert fitness({"AP": 0.5, "mAP50": 0.8}) == pytest.approx(0.9 * 0.5 + 0.1 * 0.8)
    assert fitness({"AP": 0.558, "mAP50": 0.879}) == pytest.approx(0.5901)
    # mAP50 falls by 0.03 (noise on 44 images) while AP rises 0.05: fitness 0.45 -> 0.53.
    rows = [_detector_row(0.9, 0.4), _detector_row(0.87, 0.45)]
    schedule = ValidationSchedule(
        _Scripted("fitness", rows), "detector2", 2, None, str(tmp_path), fresh_record()
    )
    first = schedule.measure(2)
    assert first["images"] == 44 and first["fitness"] == pytest.approx(0.45)
    assert schedule.commit(first)
    second = schedule.measure(4)
    assert schedule.commit(second)
    assert schedule.record["best"] == pytest.approx(0.87 * 0.1 + 0.45 * 0.9)
    assert schedule.record["best_step"] == 4
    # By mAP50 the second would not be chosen.
    by_map = ValidationSchedule(
        _Scripted("mAP50", rows), "detector4", 2, None, str(tmp_path), fresh_record()
    )
    assert by_map.commit(by_map.measure(2)) and not by_map.commit(by_map.measure(4))
    assert config_from_dict({}).train.select_by == "fitness"


def test_min_delta_gains_keep_the_best_but_not_the_patience(tmp_path):
    values = [0.50, 0.505, 0.509, 0.52, 0.515, 0.519]
    schedule = ValidationSchedule(
        _Scripted("AP", [{"AP": v} for v in values]),
        "joint",
        1,
        2,
        str(tmp_path),
        fresh_record(),
        min_delta=0.01,
    )
    seen = []
    for step in range(1, 7):
        improved = schedule.commit(schedule.measure(step))
        record = schedule.record
        seen.append((improved, record["since_best"], record["reference"], schedule.stopped))
    assert seen == [
        (True, 0, 0.50, False),
        (True, 1, 0.50, False),  # +0.005: the best weights move, patience does not reset
        (True, 2, 0.50, True),  # +0.009 over 0.50: still below min_delta; patience 2 runs out
        (True, 0, 0.52, False),  # +0.02: resets
        (False, 1, 0.52, False),
        (False, 2, 0.52, True),
    ]
    assert (schedule.record["best"], schedule.record["best_step"]) == (0.52, 4)


# -- the time budget ------------------------------------------------------------------------


def test_early_stopped_stages_hand_their_time_on_and_the_budget_is_spent(
    tmp_path, tfds_dir, monkeypatch
):
    """Every validation is worse than the one before (scripted) and patience is 1: rpn1,
    detector2 and rpn3 stop at their second validation; their time goes to the stages
    after them, and the final stage trains to the deadline, its rate annealed to its
    final fraction at its last step."""
    minutes = 0.5

    def worse_each_time(self):
        self.calls = getattr(self, "calls", 0) + 1
        self.num_images = 3
        value = 1.0 / self.calls
        if self.metric == "recall@300":
            return {"recall@300": value}
        return _detector_row(value, value / 2)

    monkeypatch.setattr(validation_module.StageValidator, "__call__", worse_each_time)
    fits = []
    observe = budget.TimeBudget.observe

    def recorded(self, stage, step, now, *args):
        steps = observe(self, stage, step, now, *args)
        if steps is not None:
            fits.append((stage, step, steps))
        return steps

    monkeypatch.setattr(budget.TimeBudget, "observe", recorded)
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["data"].update(val_split=0.25, data_dir=tfds_dir)
    values["train"].update(eval_every=4, patience=1, minutes=minutes, checkpoint_every=50)
    for stage in values["train"]["stages"].values():
        stage.update(lr_schedule="cosine", warmup_fraction=0.1)
    config = config_from_dict(values)
    model_dir = str(tmp_path / "budget")
    trainer = Trainer(config, model_dir, progress=False)
    begin = time.perf_counter()
    trainer.run()
    took = time.perf_counter() - begin

    assert 0.95 * 60 * minutes <= took <= 60 * minutes + 8, took
    with open(os.path.join(model_dir, "state.json")) as handle:
        state = json.load(handle)
    last = {}
    for stage in state["finished_stages"]:
        with open(os.path.join(model_dir, "logs", f"{stage}.losses.jsonl")) as handle:
            last[stage] = json.loads(handle.readlines()[-1])["step"]
    for stage in ("rpn1", "detector2", "rpn3"):
        assert last[stage] == 8 < state["stage_steps"][stage]["steps"], (stage, last, fits)
    # The final stage stops only with train.stop_final_stage: it ran its fitted steps
    # although its patience had run out.
    assert last["detector4"] == state["stage_steps"]["detector4"]["steps"] > 8
    assert state["validation"]["detector4"]["since_best"] >= 1

    # The time detector2 left went on: rpn3's first fit gives detector4 more steps than
    # detector2's last fit did.
    before = [steps for stage, _, steps in fits if stage == "detector2"][-1]["detector4"]
    after = [steps for stage, _, steps in fits if stage == "rpn3"][0]["detector4"]
    assert after > before, fits

    schedule = trainer.loops["detector4"].optimizer._learning_rate
    assert int(schedule.steps.numpy()) == last["detector4"]
    assert float(schedule(last["detector4"] - 1)) == pytest.approx(0.01 * 0.05, rel=1e-5)


def test_slow_validations_are_spaced_to_their_share_of_the_budget(tmp_path, tfds_dir, monkeypatch):
    """A validation of 0.4 s against steps of a few hundredths: after the first one is
    measured, the interval grows from eval_every (2) to a multiple of it that keeps
    validations at 10% of the stage (train.validation_share), recorded in state.json."""

    def slow(self):
        time.sleep(0.4)
        self.num_images = 3
        return _detector_row(0.5, 0.25)

    monkeypatch.setattr(validation_module.StageValidator, "__call__", slow)
    with open(SMOKE) as handle:
        values = yaml.safe_load(handle)
    values["data"].update(val_split=0.25, data_dir=tfds_dir)
    values["train"].update(
        schedule="joint",
        stages={"joint": {"steps": 40, "learning_rate": 0.01}},
        eval_every=2,
        minutes=0.2,
        checkpoint_every=1000,
    )
    model_dir = str(tmp_path / "share")
    Trainer(config_from_dict(values), model_dir, progress=False).run()
    with open(os.path.join(model_dir, "state.json")) as handle:
        state = json.load(handle)
    every = state["validation"]["joint"]["every"]
    assert every > 2 and every % 2 == 0, every
    with open(os.path.join(model_dir, "logs", "joint.val.jsonl")) as handle:
        steps = [json.loads(line)["step"] for line in handle]
    last = state["stage_steps"]["joint"]["steps"]
    assert steps[0] == 2 and steps[-1] == last, steps
    # After the first, each validation comes the grown interval after the one before (it is
    # refitted as the costs are measured again, so it moves by a few steps), and the last
    # at the stage's end.
    gaps = [b - a for a, b in zip(steps, steps[1:-1])]
    assert all(gap >= every / 2 for gap in gaps), (steps, every)
    assert len(steps) <= last // every + 2, (steps, every, last)


@pytest.mark.parametrize("stage", ["rpn1", "joint"])
def test_a_warmed_up_validator_traces_before_its_first_validation(smoke_config, stage):
    # Under a budget the trace belongs to the stage's set-up: warm_up traces the prediction
    # (recall@300's for an RPN stage, the detector's otherwise) and the validation after it
    # traces nothing more.
    smoke_config.data.val_split = 0.25
    model = built(build_model(smoke_config))
    batches = inputs.batches(smoke_config, inputs.VALIDATION, training=False)
    names = [f"class{i}" for i in range(smoke_config.model.num_classes)]
    validator = StageValidator(model, smoke_config, STAGES[stage], names, batches)
    assert validator._predict.experimental_get_tracing_count() == 0
    validator.warm_up()
    traced = validator._predict.experimental_get_tracing_count()
    assert traced >= 1
    values = validator()
    # 7 held-out images in batches of 2: the last batch is smaller, traced by warm_up too.
    assert validator.num_images == 7 and set(values) >= {validator.metric}
    assert validator._predict.experimental_get_tracing_count() == traced
