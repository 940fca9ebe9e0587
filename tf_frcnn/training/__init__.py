"""Training: the 4-step alternating schedule and approximate joint training
(``schedule``), the tf.function loop under tf.distribute (``loop``), its
optimizers (``optimizers``), the model directory's state and checkpoints
(``state``) and the input stream (``inputs``)."""

from tf_frcnn.training.loop import StageLoop, TrainingDiverged, make_strategy
from tf_frcnn.training.optimizers import make_optimizer
from tf_frcnn.training.schedule import (ALTERNATING, JOINT, SCHEDULES, Trainer,
                                        load_trained_model, train)

__all__ = ["ALTERNATING", "JOINT", "SCHEDULES", "StageLoop", "Trainer", "TrainingDiverged",
           "load_trained_model", "make_optimizer", "make_strategy", "train"]
