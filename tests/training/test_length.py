"""Training length as a user gives it: epochs, a time budget (--minutes), and the
validation hold-out the epochs are counted on."""

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.training import Trainer
from tf_frcnn.training.budget import (
    StageCost,
    TimeBudget,
    fit_steps,
    scale_decay_steps,
    validation_interval,
)
from tf_frcnn_cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.yaml")


def _ids(dataset):
    return [record["image_id"].decode() for record in dataset.as_numpy_iterator()]


def test_epochs_to_steps():
    assert inputs.epoch_steps(1, 16, 2) == 8
    assert inputs.epoch_steps(2.5, 10, 4) == 7  # 6.25 -> 7
    assert inputs.epoch_steps(0.1, 30, 1) == 3  # not 4 from 3.0000000000000004
    assert inputs.epoch_steps(0.01, 10, 8) == 1  # at least one step


def test_held_out_fraction_is_stable_and_about_right():
    ids = tf.constant([f"image_{i:05d}" for i in range(2000)])
    held = inputs.held_out(ids, 0.2).numpy()
    assert 0.17 < held.mean() < 0.23
    assert np.array_equal(held, inputs.held_out(tf.reverse(ids, [0]), 0.2).numpy()[::-1])
    # A larger fraction holds out a superset: growing val_split moves images one way.
    assert np.all(inputs.held_out(ids, 0.5).numpy()[held])


def test_hold_out_is_disjoint_from_training_and_epochs_count_the_rest(smoke_config, tmp_path):
    everything = _ids(inputs.source(smoke_config, "train")[0])
    smoke_config.data.val_split = 0.3
    train = _ids(inputs.split_records(smoke_config, "train")[0])
    held = _ids(inputs.split_records(smoke_config, inputs.VALIDATION)[0])
    assert held and train
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(everything)
    assert held == _ids(inputs.split_records(smoke_config, inputs.VALIDATION)[0])
    assert inputs.num_images(smoke_config, "train") == len(train)

    smoke_config.train.val_images = 1
    assert _ids(inputs.split_records(smoke_config, inputs.VALIDATION)[0]) == held[:1]
    # The training batches never hold a validation image.
    seen = set()
    for batch in inputs.batches(smoke_config, "train", training=False):
        seen.update(i.decode() for i in batch["image_id"].numpy())
    assert seen == set(train)

    smoke_config.train.stages["rpn1"].epochs = 2.0
    lengths = Trainer(smoke_config, str(tmp_path), progress=False)._resolve_lengths(["rpn1"])
    assert lengths["rpn1"]["steps"] == inputs.epoch_steps(2.0, len(train), 2)


def test_fit_keeps_the_proportions_and_fills_the_time():
    base = {"a": 100, "b": 300}
    costs = {
        "a": StageCost(overhead_s=5, step_s=0.1, validation_s=1.0),
        "b": StageCost(overhead_s=10, step_s=0.2, validation_s=2.0),
    }
    k, steps = fit_steps(base, costs, seconds=200, eval_every=50)
    # fixed 5 + 1 + 10 + 2 = 18 s; per unit 100 * (0.1 + 0.02) + 300 * (0.2 + 0.04) = 84
    assert k == pytest.approx((200 - 18) / 84)
    assert steps == {"a": int(k * 100), "b": int(k * 300)}
    # Stage "a" under way with 40 steps done: its overhead is paid, its steps count.
    k, steps = fit_steps(base, costs, seconds=100, eval_every=50, done={"a": 40})
    assert k == pytest.approx((100 + 40 * 0.12 - 13) / 84)
    k, steps = fit_steps(base, costs, seconds=5, eval_every=50, done={"a": 40})
    assert k == 0 and steps == {"a": 40, "b": 1}
    assert scale_decay_steps([60, 90], 100, 50) == [30, 45]


def test_time_budget_refits_from_what_it_measures():
    budget = TimeBudget(
        deadline=100.0, base_steps={"rpn1": 10, "detector2": 10}, like={}, eval_every=None
    )
    budget.stage_begins(0.0)
    assert budget.observe("rpn1", 1, now=2.0) is None  # nothing measured yet
    for step in range(2, 4):
        assert budget.observe("rpn1", step, now=2.0 + (step - 1)) is None
    steps = budget.observe("rpn1", 4, now=5.0)  # 1 s per step, 1 s set-up
    # detector2 unmeasured: rpn1's set-up and step time: 100 - 5 = 95 s
    # hold 1 + k * 20 + ... -> k = (95 + 4 - 1) / 20.
    assert budget.scale == pytest.approx((95 + 4 * 1.0 - 1.0) / 20)
    assert steps == {"rpn1": int(budget.scale * 10), "detector2": int(budget.scale * 10)}


def test_validations_take_at_most_their_share_of_a_stage():
    # A validation of 32 s against 0.58 s steps (aquarium's 127 validation images, 2 cores)
    # every 200 steps is 22% of the stage; at a 10% share: 32 * 0.9 / (0.1 * 0.58) = 496.6
    # steps between validations, rounded up to a multiple of 200.
    cost = StageCost(overhead_s=14.0, step_s=0.58, validation_s=32.0)
    assert validation_interval(200, cost, 0.1) == 600
    assert 32.0 / (600 * 0.58 + 32.0) <= 0.1 < 32.0 / (400 * 0.58 + 32.0)
    # Cheap validations keep eval_every; no share, no validation or no measurement keep it too.
    assert validation_interval(200, StageCost(1.0, 0.58, 2.0), 0.1) == 200
    assert validation_interval(200, cost, None) == 200
    assert validation_interval(None, cost, 0.1) is None
    assert validation_interval(200, StageCost(1.0, 0.58, 0.0), 0.1) == 200
    # The budget fits with the stretched interval: fewer validations leave more steps.
    base, left = {"joint": 3000}, 600.0
    k_every, _ = fit_steps(base, {"joint": cost}, left, eval_every=200)
    k_share, _ = fit_steps(base, {"joint": cost}, left, eval_every={"joint": 600})
    assert k_share > k_every
    budget = TimeBudget(
        deadline=600.0, base_steps=base, like={}, eval_every=200, validation_share=0.1
    )
    budget.stage_begins(0.0)
    budget.observe("joint", 1, now=14.0)
    for step in range(2, 201):
        budget.observe("joint", step, now=14.0 + 0.58 * (step - 1))
    assert budget.intervals["joint"] == 200  # no validation measured yet
    budget.observe("joint", 201, now=14.0 + 0.58 * 200 + 32.0, validation_s=32.0, validations=1)
    assert budget.intervals["joint"] == 600


def _simulated_end(first_rate, later_rate, change_at, deadline=100.0):
    """Runs one stage of 10 base steps under ``deadline`` s on a clock whose step
    takes ``first_rate`` s until ``change_at`` s, then ``later_rate`` s; returns the end."""
    budget = TimeBudget(deadline=deadline, base_steps={"a": 10}, like={}, eval_every=None)
    budget.stage_begins(0.0)
    now, step, steps = 1.0, 0, 10
    while step < steps:
        step += 1
        now += first_rate if now < change_at else later_rate
        fitted = budget.observe("a", step, now)
        steps = fitted["a"] if fitted else steps
    return now


@pytest.mark.parametrize("change_at", [30.0, 50.0, 70.0])
def test_a_rate_that_changes_late_still_ends_at_the_deadline(change_at):
    # Fitted only at doubling step counts, a stage whose step halved at 50 s (another job
    # ended) stopped at 91 s of 100, and one whose step doubled ran to 145 s: the fits near
    # the end (each quarter of the steps left) bring both within a step or two.
    assert 98.0 <= _simulated_end(1.0, 0.5, change_at) <= 100.5
    assert 99.0 <= _simulated_end(0.5, 1.0, change_at) <= 101.5


def test_minutes_fits_the_smoke_schedule_into_its_budget(tmp_path, tfds_dir):
    model_dir = str(tmp_path / "timed")
    begin = time.perf_counter()
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
                "--minutes",
                "0.5",
            ]
        )
        == 0
    )
    took = time.perf_counter() - begin
    assert took < 0.5 * 60 + 8, took
    with open(os.path.join(model_dir, "state.json")) as handle:
        state = json.load(handle)
    assert state["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]
    assert state["budget"]["minutes"] == 0.5
    assert set(state["budget"]["measured"]) == set(state["finished_stages"])
    for stage in state["finished_stages"]:
        # The steps state.json holds are the steps the stage trained.
        with open(os.path.join(model_dir, "logs", f"{stage}.losses.jsonl")) as handle:
            last = json.loads(handle.readlines()[-1])["step"]
        assert last == state["stage_steps"][stage]["steps"]

    # Killed after stage 2 (as a kill leaves it), resumed with another budget: the
    # resumed run keeps the steps it resolved and fits nothing anew.
    state.update(finished_stages=["rpn1", "detector2"], current_stage="rpn3", step=0)
    with open(os.path.join(model_dir, "state.json"), "w") as handle:
        json.dump(state, handle)
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
                "--minutes",
                "5",
                "--resume",
            ]
        )
        == 0
    )
    with open(os.path.join(model_dir, "state.json")) as handle:
        resumed = json.load(handle)
    assert resumed["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]
    assert resumed["stage_steps"] == state["stage_steps"]
    assert resumed["budget"] == state["budget"]
