"""Training under float16 / bfloat16 policies and with an XLA-compiled step."""

import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.model import build_model
from tf_frcnn.training import StageLoop, Trainer, inputs, make_optimizer
from tf_frcnn.training.loop import read_history
from tf_frcnn.training.schedule import ALTERNATING, stage_config


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_smoke_schedule_trains_all_four_stages_under_a_policy(smoke_config, tmp_path, precision):
    """Each stage's loss falls: the mean over its last 4 steps is below that of its first 4
    (the 8 steps of a stage are one pass over the 16 smoke images, so both halves see
    different batches; float32 falls by 10-20% per stage here)."""
    smoke_config.train.mixed_precision = precision
    trainer = Trainer(smoke_config, str(tmp_path), progress=False)
    trainer.run()
    assert trainer.model.rpn_head.compute_dtype == precision
    for stage, _ in ALTERNATING:
        losses = [loss for _, loss in read_history(str(tmp_path / "logs"), stage)]
        assert len(losses) == 8 and all(np.isfinite(losses)), (stage, losses)
        assert np.mean(losses[4:]) < np.mean(losses[:4]), (precision, stage, losses)


@pytest.mark.parametrize("precision, scaled", [(False, False), ("bfloat16", False),
                                               ("float16", True)])
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
        model = build_model(smoke_config, stage="joint")
        model(batch)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        loop = StageLoop(model, make_optimizer(smoke_config.train, stage_config(smoke_config, "x")),
                         tf.distribute.get_strategy(), jit_compile=jit)
        losses[jit] = [loop.step(batch) for _ in range(3)]
        assert loop.trace_count == 1
    assert type(model.roi_pooling).__name__ == "ROIPoolingBuiltin"
    for plain, compiled in zip(losses[False], losses[True]):
        for name, value in plain.items():
            assert compiled[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, plain,
                                                                              compiled)
    # Three steps of training moved the loss: the comparison is of trained steps.
    assert losses[True][0]["loss"] != losses[True][2]["loss"]
