"""The training schedules: the paper's 4-step alternating training (Sec. 3.2)
and approximate joint training, with checkpoints per stage and resume."""

import contextlib
import dataclasses
import functools
import os
import time

import keras
import tensorflow as tf

from tf_frcnn.backbones import STRIDE
from tf_frcnn.config import ConfigError, StageConfig
from tf_frcnn.data import inputs
from tf_frcnn.model import build_model
from tf_frcnn.rundir import (
    BEST_WEIGHTS,
    DUMMY_SIDE,
    FINAL_WEIGHTS,
    INITIAL_BACKBONE,
    STATE_FILE,
    RunState,
    built,
    log_dir,
    save_weights_atomic,
    stage_dir,
    stage_weights,
    write_config,
    write_labels,
)
from tf_frcnn.stages import PRETRAIN, SCHEDULES, STAGES, stage_names
from tf_frcnn.training import budget, lr
from tf_frcnn.training.ema import WeightAverage
from tf_frcnn.training.loop import StageHooks, StageLoop, StageRecords, make_strategy, run_stage
from tf_frcnn.training.objective import Objective
from tf_frcnn.training.optimizers import make_optimizer
from tf_frcnn.training.pretrain import BackbonePretrainer
from tf_frcnn.training.validation import StageValidator, ValidationSchedule, fresh_record


def stage_config(config, stage):
    return config.train.stages.get(stage, StageConfig())


def _resuming(state, stage):
    return state.current_stage == stage and state.step > 0


class Trainer:
    """Trains a model directory through its schedule; ``resume`` continues a killed run
    from its last checkpoint and is a no-op on a finished run.

    A stage trains the steps ``state.json`` resolved for it when the run began: its
    ``steps``, ``epochs`` passes over the training split, or its share of
    ``train.minutes`` (``training.budget``). With ``train.eval_every`` every stage
    validates and the final stage keeps its best weights in ``best.weights.h5``.

    ``resolve(config, model_dir=None, log=None) -> config`` turns "auto" image sizes and
    anchors into numbers when the run begins (``tf_frcnn.data.resolve.resolve_config``,
    passed in by the caller); without it the config's sizes and anchors must be numbers."""

    def __init__(self, config, model_dir, *, strategy=None, progress=True, resolve=None):
        self.config = config
        self.resolve = resolve or (lambda config, **_: config)
        self.model_dir = model_dir
        self.progress = progress
        if config.train.deterministic:
            # Some CPU kernels (crop_and_resize's gradient) sum across threads in
            # no fixed order; bit-exact resume needs them deterministic.
            tf.config.experimental.enable_op_determinism()
        self.strategy = make_strategy(strategy or config.train.strategy)
        self.schedule = SCHEDULES[config.train.schedule]
        if not self.strategy.extended.should_checkpoint:
            # Every worker saves (saving is collective under multi-worker
            # training) but only the chief (or worker 0) writes the model directory.
            task = self.strategy.cluster_resolver.task_id
            self.model_dir = model_dir = os.path.join(model_dir, "workers", f"worker-{task}")
        self.log_dir = log_dir(model_dir)
        self.model = None
        self.objective = Objective.from_config(config)
        self.loops = {}
        # The network, frozen, whose proposals the current stage trains on (``proposals_from``).
        self.proposer = None
        self._budget = None

    def _build(self):
        keras.utils.set_random_seed(self.config.train.seed)
        with self.strategy.scope():
            return built(build_model(self.config))

    @functools.cached_property
    def _validation_data(self):
        """(eval batches of ``inputs.VALIDATION``, class names), made once per run."""
        _, class_names = inputs.source(self.config, self.config.data.train_split)
        return inputs.batches(self.config, inputs.VALIDATION, training=False), class_names

    # -- training length --------------------------------------------------------
    def _resolve_lengths(self, stages):
        """{stage: {"steps", "decay_steps"}} from each stage's ``steps`` or ``epochs``."""
        images = None
        lengths = {}
        for stage in stages:
            settings = stage_config(self.config, stage)
            steps = settings.steps
            if settings.epochs is not None:
                if images is None:
                    images = inputs.num_images(self.config, self.config.data.train_split)
                steps = inputs.epoch_steps(settings.epochs, images, self._batch_size(settings))
            lengths[stage] = {
                "steps": int(steps),
                "decay_steps": [int(d) for d in settings.decay_steps],
            }
        return lengths

    def _batch_size(self, settings):
        return settings.batch_size or self.config.data.batch_size

    # -- running ----------------------------------------------------------------
    def run(self, resume=False):
        """Trains every stage not finished yet (``resume``: of the run in ``model_dir``),
        then writes the final weights; returns the ``RunState``."""
        started = time.perf_counter()
        os.makedirs(self.model_dir, exist_ok=True)
        stages = stage_names(self.config)
        if resume and os.path.exists(os.path.join(self.model_dir, STATE_FILE)):
            self.config = self.resolve(self.config, model_dir=self.model_dir)
            state = RunState.load(self.model_dir)
            if state.done:
                self._write_missing_final(stages[-1])
                return state
        else:
            state = self._begin(stages)
        self.model = self._build()
        if not state.stage_steps:
            state.stage_steps = self._resolve_lengths(stages)
            state.save()
        self._initial_backbone(state, stages)
        self._run_schedule(state, started)
        save_weights_atomic(self.model, os.path.join(self.model_dir, FINAL_WEIGHTS))
        return state

    def _begin(self, stages):
        """A new run: resolves the config, writes config.yaml and labels.txt; its state."""
        # "auto" sizes and anchors become numbers here: config.yaml records what the model uses.
        self.config = self.resolve(self.config, log=print if self.progress else None)
        state = RunState(self.model_dir, self.config.train.schedule, stages)
        write_config(self.model_dir, self.config)
        _, class_names = inputs.source(self.config, self.config.data.train_split)
        if len(class_names) != self.config.model.num_classes:
            raise ConfigError(
                f"the dataset has {len(class_names)} classes but config key "
                f"'model.num_classes' = {self.config.model.num_classes}"
            )
        write_labels(self.model_dir, class_names)
        return state

    def _write_missing_final(self, last_stage):
        """The final weights of a finished run killed between finishing its last stage
        and writing them: that stage's weights."""
        final = os.path.join(self.model_dir, FINAL_WEIGHTS)
        if not os.path.exists(final):
            self.model = self._build()
            self.model.load_weights(stage_weights(self.model_dir, last_stage))
            save_weights_atomic(self.model, final)

    def _initial_backbone(self, state, stages):
        """Writes the run's initial backbone once: what the "pretrain" stage trains when
        the run has one, else the seeded initialisation."""
        initial = os.path.join(self.model_dir, INITIAL_BACKBONE)
        if PRETRAIN in stages and PRETRAIN not in state.finished_stages:
            with self.strategy.scope():
                strides = (
                    [level.stride for level in self.model.anchor_generator.levels]
                    if self.model.pyramid
                    else STRIDE
                )
                pretrainer = BackbonePretrainer(
                    self.model.features, self.config.model.num_classes, strides
                )
                pretrainer(tf.zeros([1, DUMMY_SIDE, DUMMY_SIDE, 3]))
            self._train_stage(PRETRAIN, state, _resuming(state, PRETRAIN), pretrainer=pretrainer)
            self._finish(state, PRETRAIN, self.model.features, initial)
        if not os.path.exists(initial):
            save_weights_atomic(self.model.features, initial)

    def _run_schedule(self, state, started):
        """Trains the schedule's stages not finished yet, each from the weights it starts
        from (``_prepare_stage``), under the time budget when ``train.minutes`` is set."""
        schedule = [stage.name for stage in self.schedule]
        begun = state.current_stage in schedule or any(s in state.finished_stages for s in schedule)
        # Resolved once, when the schedule begins; a resumed run keeps them.
        if self.config.train.minutes and not begun:
            self._budget = self._begin_budget(state, schedule, started)
        for index, stage in enumerate(self.schedule):
            if stage.name in state.finished_stages:
                continue
            resuming = _resuming(state, stage.name)
            if self._budget is not None:
                self._budget.stage_begins(time.perf_counter())
            self._prepare_stage(index, stage, fresh=not resuming)
            self._train_stage(stage.name, state, resuming)
            self._finish(state, stage.name, self.model, stage_weights(self.model_dir, stage.name))

    def _begin_budget(self, state, schedule, started):
        """A ``budget.TimeBudget`` for the whole schedule, ending ``train.minutes``
        after ``started`` (when ``run`` began)."""
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise ConfigError(
                "config key 'train.minutes' (--minutes) needs the default or "
                "mirrored strategy: workers timing themselves could fit "
                "different schedules"
            )
        minutes = self.config.train.minutes
        base = {s: state.stage_steps[s]["steps"] for s in schedule}
        state.budget = {
            "minutes": minutes,
            "base_steps": base,
            "base_decay_steps": {s: state.stage_steps[s]["decay_steps"] for s in schedule},
            "scale": None,
            "fits": 0,
            "measured": {},
        }
        like = {s: STAGES[s].like for s in schedule if STAGES[s].like}
        t = self.config.train
        return budget.TimeBudget(
            started + 60 * minutes, base, like, t.eval_every, t.validation_share
        )

    def _apply_fit(self, state, steps, schedule):
        """Writes a fit of the time budget into ``state`` ({stage: steps}) and moves
        the current stage's learning-rate ``schedule`` (an ``lr.StageSchedule``) with it."""
        first = state.budget["fits"] == 0
        for stage, count in steps.items():
            decay = budget.scale_decay_steps(
                state.budget["base_decay_steps"][stage], state.budget["base_steps"][stage], count
            )
            state.stage_steps[stage] = {"steps": count, "decay_steps": decay}
        current = state.stage_steps[next(iter(steps))]
        schedule.set_length(current["steps"], current["decay_steps"])
        state.budget.update(
            scale=self._budget.scale,
            fits=self._budget.fits,
            measured={s: dataclasses.asdict(c) for s, c in self._budget.costs.items()},
        )
        state.save()
        if self.progress and first:
            print(
                f"time budget {self.config.train.minutes:g} min: "
                f"{', '.join(f'{s} {n}' for s, n in steps.items())} steps "
                f"(x{self._budget.scale:.3g} the config's; refitted as it goes)"
            )

    def _finish(self, state, stage, layer, path):
        """Saves ``layer``'s weights, the result of ``stage``, and records it finished."""
        save_weights_atomic(layer, path)
        state.finished_stages.append(stage)
        state.current_stage, state.step = None, 0
        state.save()

    def _prepare_stage(self, index, stage, fresh):
        """Loads the weights ``stage`` starts from; a stage trained on another stage's
        proposals gets that network, frozen."""
        model = self.model
        if index > 0:
            model.load_weights(stage_weights(self.model_dir, self.schedule[index - 1].name))
        if fresh and stage.initial_backbone:
            # The initial backbone: what a "pretrain" stage left (or the seeded
            # initialisation itself), also after a resume.
            model.features.load_weights(os.path.join(self.model_dir, INITIAL_BACKBONE))
        self.proposer = None
        if stage.proposals_from:
            with self.strategy.scope():
                self.proposer = built(build_model(self.config))
            self.proposer.load_weights(stage_weights(self.model_dir, stage.proposals_from))
            self.proposer.trainable = False

    def _make_loop(self, stage, optimizer, pretrainer=None):
        """The ``StageLoop`` of ``stage``, averaging its weights with ``train.ema``."""
        options = dict(
            clip_norm=self.config.train.clip_norm, jit_compile=self.config.train.jit_compile
        )
        if pretrainer:
            return StageLoop(
                pretrainer.compute_losses, pretrainer, optimizer, self.strategy, **options
            )
        # The proposer's training counts for training, its test-time ones for validation.
        source = None
        if self.proposer is not None:
            source = functools.partial(self.proposer.propose, training_counts=True)
        loop = StageLoop.for_stage(
            self.model,
            STAGES[stage],
            self.objective,
            optimizer,
            self.strategy,
            proposal_source=source,
            **options,
        )
        ema = self.config.train.ema
        if ema is not None:
            with self.strategy.scope():
                loop.average = WeightAverage(self.model.trainable_variables, ema.decay, ema.warmup)
        return loop

    def _train_stage(self, stage, state, resuming, pretrainer=None):
        """Trains ``stage`` (the backbone pre-training with ``pretrainer``) to its length
        in ``state``: optimizer and schedule, checkpoint/resume, validation, budget, loop."""
        settings = self._stage_settings(stage, state)
        timed = self._budget is not None and stage in self._budget.base_steps
        with self.strategy.scope():
            # Under a time budget the stage's length, and so its learning-rate curve,
            # change as it trains: the schedule reads them from variables.
            rate = lr.learning_rate(settings, variable_length=timed)
            optimizer = make_optimizer(self.config.train, settings, learning_rate=rate)
        loop = self.loops[stage] = self._make_loop(stage, optimizer, pretrainer)
        model = pretrainer or self.model
        manager, start = self._restore(stage, loop, model, resuming)
        state.current_stage, state.step = stage, start
        final = stage == self.schedule[-1].name
        if final and not start:
            # A final stage starting afresh drops an earlier run's best weights.
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.model_dir, BEST_WEIGHTS))
            state.best = None
        hooks = StageHooks()
        if pretrainer is None and self.config.train.eval_every:
            hooks.validation = self._validation(stage, state, start, final)
            if final:
                hooks.on_best = functools.partial(self._save_best, model, state, stage)
        state.save()
        batches = inputs.training_batches(
            self.config, self.config.data.train_split, self._batch_size(settings), start_step=start
        )
        if timed:
            hooks.observe = functools.partial(self._observe, stage, state, rate, hooks.validation)
        self._announce(stage, settings, timed, loop)
        t = self.config.train
        records = StageRecords(
            manager, state, self.log_dir, t.checkpoint_every, self.progress, t.log_every
        )
        run_stage(
            stage,
            loop,
            batches,
            steps=settings.steps,
            start_step=start,
            records=records,
            hooks=hooks,
        )
        if loop.average is not None:
            # The stage's result, its stage weights and final.weights.h5: the average.
            loop.average.copy_to_weights()

    def _stage_settings(self, stage, state):
        """The stage's ``StageConfig`` with the length ``state`` resolved for it."""
        length = state.stage_steps[stage]  # {"steps", "decay_steps"}
        return dataclasses.replace(stage_config(self.config, stage), **length)

    def _restore(self, stage, loop, model, resuming):
        """(checkpoint manager of ``stage``'s directory, the step to start from): the
        latest checkpoint's when ``resuming``, else 0."""
        parts = dict(model=model, optimizer=loop.optimizer)
        if loop.average is not None:
            parts["average"] = loop.average.trackable
        checkpoint = tf.train.Checkpoint(**parts)
        directory = stage_dir(self.model_dir, stage)
        manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
        if resuming and manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            return manager, int(loop.optimizer.iterations.numpy())
        return manager, 0

    def _validation(self, stage, state, start, final):
        """The ``ValidationSchedule`` of ``stage``, its record in ``state`` (fresh
        unless the stage resumes from ``start``)."""
        if not start or stage not in state.validation:
            state.validation[stage] = fresh_record()
        batches, class_names = self._validation_data
        source = None if self.proposer is None else self.proposer.propose
        parts = (self.model, self.config, STAGES[stage], class_names, batches)
        validator = StageValidator(*parts, proposal_source=source)
        if self._budget is not None:
            validator.warm_up()
        # Under a time budget (also once resumed) the final stage trains to the
        # deadline: time it frees would go to no later stage.
        budgeted = state.budget is not None
        t = self.config.train
        patience = None if final and budgeted and not t.stop_final_stage else t.patience
        record = state.validation[stage]
        # Under a budget the interval follows the validations' cost (train.validation_share);
        # a resumed stage keeps the interval it had.
        every = (
            t.eval_every
            if self._budget is None
            else self._budget.intervals.get(stage, t.eval_every)
        )
        every = record.get("every", every)
        return ValidationSchedule(
            validator, stage, every, patience, self.log_dir, record, min_delta=t.min_delta
        )

    def _save_best(self, model, state, stage, row):
        save_weights_atomic(model, os.path.join(self.model_dir, BEST_WEIGHTS))
        state.best = {"stage": stage, **row}

    def _observe(self, stage, state, rate, validation, step):
        """The time budget's look at ``step``: the stage's new length when it refits."""
        seconds, count = (validation.seconds, validation.count) if validation else (0.0, 0)
        steps = self._budget.observe(stage, step, time.perf_counter(), seconds, count)
        if steps is None:
            return None
        every = self._budget.intervals[stage]
        if validation is not None and every != validation.every:
            validation.every = validation.record["every"] = every
            if self.progress:
                cost = self._budget.costs[stage]
                print(
                    f"{stage}: validating every {every} steps (a validation takes "
                    f"{cost.validation_s:.1f} s, a step {cost.step_s:.2f} s; "
                    f"train.validation_share {self.config.train.validation_share:g})"
                )
        self._apply_fit(state, steps, rate)
        return steps[stage]

    def _announce(self, stage, settings, timed, loop):
        if self.progress:
            print(
                f"stage {stage} ({settings.steps} steps"
                f"{', fitted to the time budget as it goes' if timed else ''}, "
                f"lr {settings.learning_rate} {settings.lr_schedule}"
                f"{', weights averaged' if loop.average is not None else ''})"
            )


def train(config, model_dir, *, resume=False, strategy=None, progress=True, resolve=None):
    """Train ``config`` into ``model_dir`` (see ``Trainer``); returns the model."""
    trainer = Trainer(config, model_dir, strategy=strategy, progress=progress, resolve=resolve)
    trainer.run(resume=resume)
    return trainer.model
