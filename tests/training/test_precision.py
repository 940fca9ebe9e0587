"""Training under float16 / bfloat16 policies and with an XLA-compiled step."""

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.stages import SCHEDULES
from tf_frcnn.training import Objective, StageLoop, make_optimizer
from tf_frcnn.training.schedule import stage_config


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_smoke_model_trains_all_four_stages_under_a_policy(smoke_config, precision):
    """The smoke model through the four alternating stages, 8 steps each (smoke.yaml's),
    on one batch: each stage lowers its loss on that batch, measured before and after the
    stage with the same anchor and ROI samples (those of step 0); by 10-35% here. The
    Trainer's own plumbing is float32's (tests/training/test_schedule.py)."""
    import keras

    keras.utils.set_random_seed(0)
    smoke_config.train.mixed_precision = precision
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    batch = {name: batch[name] for name in ("images", "image_shape", "boxes", "labels")}
    model = build_model(smoke_config)
    model(batch)
    assert model.rpn_head.compute_dtype == precision
    objective = Objective.from_config(smoke_config)
    step0 = tf.constant(0, tf.int64)
    for stage in SCHEDULES["alternating"]:
        before = float(objective(model, batch, stage, training=False, step=step0)["loss"])
        settings = stage_config(smoke_config, stage.name)
        loop = StageLoop.for_stage(
            model,
            stage,
            objective,
            make_optimizer(smoke_config.train, settings),
            tf.distribute.get_strategy(),
        )
        losses = [loop.step(batch)["loss"] for _ in range(settings.steps)]
        after = float(objective(model, batch, stage, training=False, step=step0)["loss"])
        assert len(losses) == 8 and np.all(np.isfinite(losses)), (stage, losses)
        assert after < 0.95 * before, (precision, stage, before, after, losses)


@pytest.mark.parametrize(
    "precision, scaled", [(False, False), ("bfloat16", False), ("float16", True)]
)
def test_float16_scales_the_loss_on_any_device(smoke_config, precision, scaled):
    import keras

    smoke_config.train.mixed_precision = precision
    optimizer = make_optimizer(smoke_config.train, stage_config(smoke_config, "rpn1"))
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == scaled


def test_xla_step_equals_the_plain_step_and_traces_once(smoke_config):
    """Both loops start from the same weights on the same batch; the XLA step pools with
    the gather-based ROIPoolingBuiltin and samples the same anchors and ROIs."""
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    losses, weights = {}, None
    for jit in (False, True):
        smoke_config.train.jit_compile = jit
        model = build_model(smoke_config)
        model(batch)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        loop = StageLoop.for_stage(
            model,
            "joint",
            Objective.from_config(smoke_config),
            make_optimizer(smoke_config.train, stage_config(smoke_config, "x")),
            tf.distribute.get_strategy(),
            jit_compile=jit,
        )
        losses[jit] = [loop.step(batch) for _ in range(3)]
        assert loop.trace_count == 1
    assert type(model.roi_pooling).__name__ == "ROIPoolingBuiltin"
    for plain, compiled in zip(losses[False], losses[True]):
        for name, value in plain.items():
            assert compiled[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (
                name,
                plain,
                compiled,
            )
    # Three steps of training moved the loss: the comparison is of trained steps.
    assert losses[True][0]["loss"] != losses[True][2]["loss"]
