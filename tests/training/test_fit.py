import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_frcnn.model import build_model
from tf_frcnn.training import StageLoop, inputs, make_optimizer
from tf_frcnn.training.schedule import stage_config


@pytest.mark.parametrize("stage", ["rpn", "joint"])
def test_fit_and_custom_loop_give_the_same_loss(smoke_config, stage):
    batch = next(iter(inputs.batches(smoke_config, "train", training=True, batch_size=2)))
    keras.utils.set_random_seed(1)
    fitted = build_model(smoke_config, stage=stage)
    fitted(batch)
    looped = build_model(smoke_config, stage=stage)
    looped(batch)
    looped.set_weights(fitted.get_weights())

    settings = stage_config(smoke_config, "rpn1")
    fitted.compile(optimizer=make_optimizer(smoke_config.train, settings))
    history = fitted.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    loop = StageLoop(looped, make_optimizer(smoke_config.train, settings),
                     tf.distribute.get_strategy())
    losses = loop.step(batch)
    np.testing.assert_allclose(history.history["loss"][0], losses["loss"], rtol=1e-5)
    for name in ("rpn_objectness", "rpn_box"):
        np.testing.assert_allclose(history.history[name][0], losses[name], rtol=1e-5)


def test_fit_with_standard_callbacks_per_stage(smoke_config, tmp_path):
    batches = inputs.batches(smoke_config, "train", training=True, batch_size=2)
    model = build_model(smoke_config, stage="rpn")
    model(next(iter(batches)))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    callbacks = [keras.callbacks.ModelCheckpoint(str(tmp_path / "rpn.weights.h5"),
                                                 save_weights_only=True, monitor="loss"),
                 keras.callbacks.TensorBoard(str(tmp_path / "tb")),
                 keras.callbacks.EarlyStopping(monitor="loss", patience=5)]
    history = model.fit(batches, epochs=2, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 2
    assert set(history.history) >= {"loss", "rpn_objectness", "rpn_box"}
    assert (tmp_path / "rpn.weights.h5").exists()
    model.set_stage("detector_finetune")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(batches, epochs=1, verbose=0)
    assert set(history.history) >= {"loss", "detector_class", "detector_box"}
