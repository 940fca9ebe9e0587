import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.stages import SCHEDULES, STAGES
from tf_frcnn.training import Objective, StageLoop, Trainer, make_optimizer
from tf_frcnn.training.schedule import stage_config


def _weights(layer):
    return [np.array(w) for w in layer.weights]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


class RecordingTrainer(Trainer):
    """Snapshots the model when each stage starts and ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start, self.end, self.proposer_weights = {}, {}, {}

    def _train_stage(self, stage, state, resuming):
        model = self.model
        self.start[stage] = {
            "backbone": _weights(model.features),
            "rpn": _weights(model.rpn_head),
            "detector": _weights(model.detector_head),
        }
        if self.proposer is not None:
            self.proposer_weights[stage] = {
                "backbone": _weights(self.proposer.features),
                "rpn": _weights(self.proposer.rpn_head),
            }
        super()._train_stage(stage, state, resuming)
        self.end[stage] = {
            "backbone": _weights(model.features),
            "rpn": _weights(model.rpn_head),
            "detector": _weights(model.detector_head),
        }


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tfds_dir):
    from tf_frcnn import load_config

    here = os.path.dirname(os.path.abspath(__file__))
    config = load_config(os.path.join(here, "..", "..", "configs", "smoke.yaml"))
    config.data.data_dir = tfds_dir
    model_dir = str(tmp_path_factory.mktemp("smoke"))
    trainer = RecordingTrainer(config, model_dir, progress=False)
    trainer.run()
    return trainer, model_dir, config


def test_all_four_stages_finish_and_state_is_recorded(smoke_run):
    _, model_dir, _ = smoke_run
    with open(os.path.join(model_dir, "state.json")) as handle:
        state = json.load(handle)
    assert state["finished_stages"] == ["rpn1", "detector2", "rpn3", "detector4"]
    for stage in state["finished_stages"]:
        assert os.path.exists(os.path.join(model_dir, "stages", stage, "checkpoint"))
        assert os.path.exists(os.path.join(model_dir, "logs", f"{stage}.losses.jsonl"))
    assert os.path.exists(os.path.join(model_dir, "final.weights.h5"))
    with open(os.path.join(model_dir, "labels.txt")) as handle:
        assert len(handle.read().split()) == 4


def test_stage2_restarts_from_the_initial_backbone(smoke_run):
    trainer, _, _ = smoke_run
    initial = trainer.start["rpn1"]["backbone"]
    assert not _same(trainer.end["rpn1"]["backbone"], initial)  # stage 1 trained it
    assert _same(trainer.start["detector2"]["backbone"], initial)  # stage 2 starts over


def test_stage2_proposals_come_from_stage1_network(smoke_run):
    trainer, _, _ = smoke_run
    proposer = trainer.proposer_weights["detector2"]
    assert _same(proposer["backbone"], trainer.end["rpn1"]["backbone"])
    assert _same(proposer["rpn"], trainer.end["rpn1"]["rpn"])
    assert not _same(proposer["backbone"], trainer.start["detector2"]["backbone"])


def test_stage3_freezes_backbone_and_trains_rpn(smoke_run):
    trainer, _, _ = smoke_run
    assert _same(trainer.start["rpn3"]["backbone"], trainer.end["detector2"]["backbone"])
    assert _same(trainer.end["rpn3"]["backbone"], trainer.end["detector2"]["backbone"])
    assert not _same(trainer.end["rpn3"]["rpn"], trainer.start["rpn3"]["rpn"])


def test_stage4_freezes_backbone_and_rpn_and_trains_detector(smoke_run):
    trainer, _, _ = smoke_run
    assert _same(trainer.end["detector4"]["backbone"], trainer.end["rpn3"]["backbone"])
    assert _same(trainer.end["detector4"]["rpn"], trainer.end["rpn3"]["rpn"])
    assert not _same(trainer.end["detector4"]["detector"], trainer.start["detector4"]["detector"])


def test_resume_of_a_finished_run_is_a_no_op(smoke_run):
    trainer, model_dir, config = smoke_run
    before = os.path.getmtime(os.path.join(model_dir, "final.weights.h5"))
    again = Trainer(config, model_dir, progress=False)
    state = again.run(resume=True)
    assert state.done and again.model is None
    assert os.path.getmtime(os.path.join(model_dir, "final.weights.h5")) == before


def _fixed_batch(config):
    return next(iter(inputs.batches(config, "train", training=True, batch_size=2)))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_loss_of_a_small_batch_falls_in_every_stage(smoke_config, stage):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(smoke_config)
    batch = _fixed_batch(smoke_config)
    model(batch)
    settings = stage_config(smoke_config, "rpn1")
    settings.learning_rate = 0.02
    loop = StageLoop.for_stage(
        model,
        stage,
        Objective.from_config(smoke_config),
        make_optimizer(smoke_config.train, settings),
        tf.distribute.get_strategy(),
    )
    losses = [loop.step(batch)["loss"] for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), (stage, losses)
    assert loop.trace_count == 1  # the step traced once for 25 calls


def test_alternating_schedule_matches_the_paper():
    stages = SCHEDULES["alternating"]
    assert [stage.name for stage in stages] == ["rpn1", "detector2", "rpn3", "detector4"]
    assert [stage.trains for stage in stages] == [
        ("backbone", "rpn"),
        ("backbone", "detector"),
        ("rpn",),
        ("detector",),
    ]
    # Stage 2 detects on stage 1's proposals; stages 1 and 2 both start from the
    # initial (ImageNet) backbone, 3 and 4 from the stage before.
    assert [stage.proposals_from for stage in stages] == [None, "rpn1", None, None]
    assert [stage.initial_backbone for stage in stages] == [True, True, False, False]
    assert SCHEDULES["joint"][0].trains == ("backbone", "rpn", "detector")
