import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.training import Objective, StageLoop, StageModel, make_optimizer
from tf_frcnn.training.schedule import stage_config


@pytest.mark.parametrize("stage", ["rpn1", "joint"])
def test_fit_and_custom_loop_give_the_same_loss(smoke_config, stage):
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    objective = Objective.from_config(smoke_config)
    keras.utils.set_random_seed(1)
    fitted = build_model(smoke_config)
    fitted(batch)
    looped = build_model(smoke_config)
    looped(batch)
    looped.set_weights(fitted.get_weights())

    settings = stage_config(smoke_config, "rpn1")
    stage_model = StageModel(fitted, stage, objective)
    stage_model.compile(optimizer=make_optimizer(smoke_config.train, settings))
    history = stage_model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    loop = StageLoop.for_stage(
        looped,
        stage,
        objective,
        make_optimizer(smoke_config.train, settings),
        tf.distribute.get_strategy(),
    )
    losses = loop.step(batch)
    np.testing.assert_allclose(history.history["loss"][0], losses["loss"], rtol=1e-5)
    for name in ("rpn_objectness", "rpn_box"):
        np.testing.assert_allclose(history.history[name][0], losses[name], rtol=1e-5)
    np.testing.assert_allclose(fitted.get_weights()[-1], looped.get_weights()[-1], rtol=1e-5)


def test_fit_with_standard_callbacks_per_stage(smoke_config, tmp_path):
    batches = inputs.batches(smoke_config, "train", training=True, batch_size=2)
    model = build_model(smoke_config)
    model(next(iter(batches)))
    rpn = StageModel(model, "rpn1", Objective.from_config(smoke_config))
    rpn.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "rpn.weights.h5"), save_weights_only=True, monitor="loss"
        ),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        keras.callbacks.EarlyStopping(monitor="loss", patience=5),
    ]
    history = rpn.fit(batches, epochs=2, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 2
    assert set(history.history) >= {"loss", "rpn_objectness", "rpn_box"}
    assert (tmp_path / "rpn.weights.h5").exists()
    detector = StageModel(model, "detector4", Objective.from_config(smoke_config))
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    history = detector.fit(batches, epochs=1, verbose=0)
    assert set(history.history) >= {"loss", "detector_class", "detector_box"}
