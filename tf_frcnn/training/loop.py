"""One training stage: a ``tf.function`` step under ``tf.distribute`` (``StageLoop``), and
the loop around it (``run_stage``) with checkpoints, logs, TensorBoard scalars, hooks
(validation, a time budget) and the stop on a non-finite loss or gradient."""

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from tf_frcnn.progress import stage_progress
from tf_frcnn.rundir import losses_log
from tf_frcnn.stages import get_stage
from tf_frcnn.training.step import set_trainable, stage_losses, train_step


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN or Inf; the last good checkpoint is kept."""


# MultiWorkerMirroredStrategy reads the cluster from ``TF_CONFIG``.
STRATEGIES = {
    "default": tf.distribute.get_strategy,
    "mirrored": tf.distribute.MirroredStrategy,
    "multiworker": tf.distribute.MultiWorkerMirroredStrategy,
}


def make_strategy(name):
    """The ``tf.distribute`` strategy called ``name``, one of ``STRATEGIES``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


class StageLoop:
    """``training.step.train_step`` of ``losses_of(batch, step)`` on a built ``model``'s
    trainable variables, as one ``tf.function`` (``trace_count`` counts its traces).
    ``average`` (a ``training.ema.WeightAverage``, set by the caller) is updated after
    each step."""

    def __init__(self, losses_of, model, optimizer, strategy, *, clip_norm=None, jit_compile=False):
        self.losses_of = losses_of
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.clip_norm = clip_norm
        self.average = None
        self.trace_count = 0
        self.jit_compile = jit_compile
        # Optimizer slots made now, not inside the first trace, keep it to one trace.
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self._step = tf.function(
            self._distributed_step, jit_compile=jit_compile or None, reduce_retracing=True
        )

    @classmethod
    def for_stage(
        cls, model, stage, objective, optimizer, strategy, *, proposal_source=None, **kwargs
    ):
        """The loop of ``stage`` (a ``Stage`` or its name) of a ``FasterRCNN``: makes its
        parts trainable and runs ``objective``'s losses."""
        stage = get_stage(stage) if isinstance(stage, str) else stage
        set_trainable(model, stage)
        losses_of = stage_losses(model, stage, objective, proposal_source)
        return cls(losses_of, model, optimizer, strategy, **kwargs)

    def _replica_step(self, batch):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        parts = (self.losses_of, self.model, self.optimizer, batch)
        return train_step(*parts, clip_norm=self.clip_norm, replicas=replicas)

    def _distributed_step(self, batch):
        self.trace_count += 1
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    def step(self, batch):
        """One training step; returns the replica-mean losses as Python floats. Raises
        ``TrainingDiverged`` on a non-finite loss or gradient (the optimizer has left
        the weights as they were)."""
        if self.jit_compile:
            # XLA takes no string tensors (the batch's image ids); the step reads none.
            batch = {
                name: value
                for name, value in batch.items()
                if self.strategy.experimental_local_results(value)[0].dtype != tf.string
            }
        values = {name: float(value) for name, value in self._step(batch).items()}
        finite = values.pop("gradients_finite") == 1.0
        if not finite or not all(math.isfinite(v) for v in values.values()):
            raise TrainingDiverged(values)
        if self.average is not None:
            self.average.update()
        return values


@dataclass
class StageRecords:
    """Where a stage's progress goes: ``manager`` checkpoints every ``checkpoint_every``
    steps and at the end (``state``, a ``rundir.RunState``, records the step); losses go to
    TensorBoard and ``{stage}.losses.jsonl`` under ``log_dir``; ``progress`` is
    ``tf_frcnn.progress``'s (False, True, "auto", "bar" or "lines"; lines every
    ``log_every`` steps)."""

    manager: tf.train.CheckpointManager
    state: object
    log_dir: str
    checkpoint_every: int
    progress: object = True
    log_every: int | None = None


@dataclass
class StageHooks:
    """What a stage calls besides its steps: ``validation`` (a
    ``training.validation.ValidationSchedule``) validates at its steps and may stop the
    stage early, ``on_best(row)`` runs on a best validated value, ``observe(step)`` after
    each step and may return a new length (a time budget's fit)."""

    validation: object = None
    on_best: Callable | None = None
    observe: Callable | None = None


def run_stage(stage, loop, batches, *, steps, start_step, records, hooks=None):
    """Train ``stage`` from ``start_step`` to ``steps`` with ``loop`` on ``batches``,
    kept in ``records`` (a ``StageRecords``), calling ``hooks`` (a ``StageHooks``).
    Returns the last step trained.

    A validated step is checkpointed first, then ``on_best(row)`` runs on a best value and
    the state is saved, so a kill at any point resumes with the record of the checkpoint
    it restores. With ``loop.average`` (weight averaging) validation and ``on_best`` see
    the averaged weights, checkpoints both."""
    return StageRun(stage, loop, records, hooks or StageHooks()).train(batches, start_step, steps)


class StageRun:
    """The steps of one ``run_stage``: a stage's loop with its checkpoints, logs and hooks."""

    def __init__(self, stage, loop, records, hooks):
        self.stage = stage
        self.loop = loop
        self.records = records
        self.hooks = hooks
        self.writer = tf.summary.create_file_writer(os.path.join(records.log_dir, stage))
        self.history_path = losses_log(records.log_dir, stage)
        self.averaged = loop.average.swapped if loop.average is not None else contextlib.nullcontext
        # Loss rows not yet in the losses log: written with each checkpoint, so the log
        # never runs ahead of the step a resume restores.
        self.pending = []
        self.steps = None
        self.report = None

    def train(self, batches, start_step, steps):
        self.steps = steps
        validation = self.hooks.validation
        self.report = stage_progress(
            self.records.progress,
            self.stage,
            steps,
            start_step,
            every=self.records.log_every,
            learning_rate=lambda: float(
                keras.ops.convert_to_numpy(self.loop.optimizer.learning_rate)
            ),
            metric=validation.metric if validation is not None else None,
        )
        if validation is not None and validation.due(start_step, steps) and start_step:
            self.validate(start_step, checkpointed=True)
        if validation is not None and validation.stopped:
            return start_step
        iterator = iter(self.loop.strategy.experimental_distribute_dataset(batches))
        step = start_step
        while step < self.steps:
            losses = self.step(iterator, step + 1)
            step += 1
            self.record_step(step, losses)
            if validation is not None and validation.due(step, self.steps):
                row = self.validate(step, checkpointed=False)
                if validation.stopped:
                    self.report_stop(step, row)
                    break
            elif step % self.records.checkpoint_every == 0 or step == self.steps:
                self.checkpoint(step)
                self.records.state.save()
        self.report.close(step)
        self.writer.flush()
        return step

    def step(self, iterator, step):
        """The losses of training step number ``step`` on the next batch."""
        try:
            return self.loop.step(next(iterator))
        except TrainingDiverged as error:
            raise TrainingDiverged(
                f"non-finite loss or gradient in stage '{self.stage}' at step {step} "
                f"({error.args[0]}); stopped, the last good checkpoint "
                f"(step {self.records.state.step}) is kept"
            ) from None

    def record_step(self, step, losses):
        """Runs ``observe``, queues the losses for the log and writes them to TensorBoard
        and the progress report."""
        if self.hooks.observe is not None:
            self.steps = self.hooks.observe(step) or self.steps
        self.pending.append(json.dumps({"step": step, **losses}))
        with self.writer.as_default(step=step):
            for name, value in losses.items():
                tf.summary.scalar(name, value)
        self.report.step(step, self.steps, losses)

    def checkpoint(self, step):
        with open(self.history_path, "a", encoding="utf-8") as history:
            history.write("".join(line + "\n" for line in self.pending))
        self.pending = []
        self.records.manager.save(checkpoint_number=step)
        self.records.state.step = step

    def validate(self, step, checkpointed):
        """Measures, checkpoints (unless ``checkpointed``), keeps a best value
        (``on_best``) and saves the state; returns the validation row."""
        validation = self.hooks.validation
        with self.averaged():
            row = validation.measure(step)
        with self.writer.as_default(step=step):
            for name, value in row.items():
                if name != "step":
                    tf.summary.scalar(f"val/{name}", value)
        if not checkpointed:
            self.checkpoint(step)
        if validation.commit(row) and self.hooks.on_best is not None:
            with self.averaged():
                self.hooks.on_best(row)
        self.records.state.save()
        record = validation.record
        best = f"best {validation.metric} {record['best']:.4f} at step {record['best_step']}"
        self.report.validation(step, self.steps, row, best)
        return row

    def report_stop(self, step, row):
        validation = self.hooks.validation
        gain = f" by more than {validation.min_delta:g}" if validation.min_delta else ""
        self.report.message(
            f"stage {self.stage}: no {validation.metric} gain{gain} in "
            f"{validation.patience} validations (best "
            f"{validation.record['best']:.4f} at step "
            f"{validation.record['best_step']}, on {row['images']} images); "
            f"stopped at step {step}"
        )
