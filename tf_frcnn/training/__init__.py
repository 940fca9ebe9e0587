"""Training: the 4-step alternating schedule and approximate joint training
(``schedule``), the tf.function loop under tf.distribute (``loop``), its
optimizers (``optimizers``), the model directory's state and checkpoints
(``state``) and the input stream (``inputs``)."""

from tf_frcnn.training.loop import StageLoop, TrainingDiverged, make_strategy
from tf_frcnn.training.objective import Objective
from tf_frcnn.training.optimizers import make_optimizer
from tf_frcnn.training.schedule import Trainer, load_trained_model, train
from tf_frcnn.training.step import StageModel, set_trainable, train_step

__all__ = [
    "Objective",
    "StageLoop",
    "StageModel",
    "Trainer",
    "TrainingDiverged",
    "load_trained_model",
    "make_optimizer",
    "make_strategy",
    "set_trainable",
    "train",
    "train_step",
]
