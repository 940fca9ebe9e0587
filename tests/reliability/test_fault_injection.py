"""Crash safety: the smoke training SIGKILLed at three points spread over the four stages
and resumed each time ends with the very weights of an uninterrupted run.

Both runs set ``TF_DETERMINISTIC_OPS=1`` (see ``fault_injection._env``): without it, two
*uninterrupted* runs already differ by ~1e-8 from stage 2 on (crop_and_resize's image
gradient on CPU sums from several threads), so bit equality would test TF's thread
scheduling, not the resume. With it, equality is exact, which also shows that the resumed
data stream and the sampling continue where they stopped.
"""

import json
import os

import numpy as np

from tf_frcnn.rundir import atomic_write_text, save_weights_atomic

STAGES = ["rpn1", "detector2", "rpn3", "detector4"]


def test_every_kill_landed_where_planned(smoke_runs):
    _, _, history = smoke_runs
    killed, last = history[:-1], history[-1]
    assert [(h["killed"], h["returncode"]) for h in killed] == [(True, -9)] * 3, history
    # A kill follows the state.json it waits for by a poll (20 ms) or so; the third may
    # land just after rpn3 is marked finished, or as detector4 starts.
    landed = [h["at"] for h in killed]
    assert landed[:2] == ["rpn1@4", "detector2@4"], history
    assert landed[2] in ("rpn3@8", "rpn3@end", "detector4@0"), history
    # Each resumed process starts from the checkpoint the killed one left.
    assert [h["start"] for h in history] == [0] + [h["end"] for h in killed], history
    assert (last["returncode"], last["end"], last["at"]) == (0, 32, "detector4@end"), history


def test_resumed_run_finishes_all_four_stages(smoke_runs):
    _, killed_dir, _ = smoke_runs
    with open(os.path.join(killed_dir, "state.json")) as handle:
        state = json.load(handle)
    assert state["finished_stages"] == STAGES and state["current_stage"] is None
    for stage in STAGES:
        assert os.path.exists(os.path.join(killed_dir, "stages", stage, "final.weights.h5"))


def test_final_weights_equal_the_uninterrupted_run_bit_for_bit(smoke_runs, harness):
    reference, killed_dir, _ = smoke_runs
    identical, worst, count = harness.compare_weights(
        os.path.join(reference, "final.weights.h5"), os.path.join(killed_dir, "final.weights.h5")
    )
    assert count > 20
    assert identical, f"max |difference| {worst}"
    for stage in STAGES:
        assert harness.compare_weights(
            os.path.join(reference, "stages", stage, "final.weights.h5"),
            os.path.join(killed_dir, "stages", stage, "final.weights.h5"),
        )[0], stage


def test_every_step_saw_the_same_loss(smoke_runs, harness):
    """The loss of every step (steps redone after a kill counted once) equals the
    uninterrupted run's: the data order and the sampling continued, not restarted."""
    reference, killed_dir, _ = smoke_runs
    expected, resumed = harness.loss_history(reference), harness.loss_history(killed_dir)
    for stage in STAGES:
        assert [step for step, _ in resumed[stage]] == list(range(1, 9)), stage
        assert resumed[stage] == expected[stage], stage


# -- the writes a kill can interrupt ------------------------------------------------------
def test_interrupted_text_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text(str(path), "old\n")

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    try:
        atomic_write_text(str(path), "new\n")
    except KeyboardInterrupt:
        pass
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["state.json"]


def test_interrupted_weights_write_keeps_the_old_file(tmp_path, monkeypatch):
    import keras

    layer = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((3,)), layer])
    path = str(tmp_path / "final.weights.h5")
    save_weights_atomic(model, path)
    before = [np.array(w) for w in model.get_weights()]
    layer.kernel.assign(layer.kernel + 1.0)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    try:
        save_weights_atomic(model, path)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    model.load_weights(path)
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)
