"""Training: the 4-step alternating schedule and approximate joint training
(``schedule``), the tf.function loop under tf.distribute (``loop``), its
optimizers (``optimizers``) and validation (``validation``); the model directory is
``tf_frcnn.rundir``."""

from tf_frcnn.training.loop import StageLoop, TrainingDiverged, make_strategy
from tf_frcnn.training.objective import Objective
from tf_frcnn.training.optimizers import make_optimizer
from tf_frcnn.training.schedule import Trainer, train
from tf_frcnn.training.step import StageModel, set_trainable, train_step

__all__ = [
    "Objective",
    "StageLoop",
    "StageModel",
    "Trainer",
    "TrainingDiverged",
    "make_optimizer",
    "make_strategy",
    "set_trainable",
    "train",
    "train_step",
]
