"""The training schedules: the paper's 4-step alternating training (Sec. 3.2)
and approximate joint training, with checkpoints per stage and resume."""

import os

import keras
import tensorflow as tf

from tf_frcnn.config import ConfigError, StageConfig
from tf_frcnn.model import build_model
from tf_frcnn.training import inputs
from tf_frcnn.training.loop import StageLoop, make_strategy, run_stage
from tf_frcnn.training.optimizers import make_optimizer
from tf_frcnn.training.pretrain import PRETRAIN, BackbonePretrainer
from tf_frcnn.training.state import (FINAL_WEIGHTS, INITIAL_BACKBONE, RunState,
                                     save_weights_atomic, write_config, write_labels)

# (stage name, what the model trains in it: a key of tf_frcnn.model.STAGES).
#  1. RPN on the ImageNet-initialised backbone.
#  2. Fast R-CNN on stage 1's proposals, its backbone initialised again from
#     the same initial weights and fine-tuned.
#  3. RPN layers fine-tuned on stage 2's backbone, frozen from here on.
#  4. Fast R-CNN layers fine-tuned; backbone and RPN frozen.
ALTERNATING = (("rpn1", "rpn"), ("detector2", "detector"),
               ("rpn3", "rpn_finetune"), ("detector4", "detector_finetune"))
JOINT = (("joint", "joint"),)
SCHEDULES = {"alternating": ALTERNATING, "joint": JOINT}


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type = resolver.task_type
    return task_type == "chief" or (task_type == "worker" and resolver.task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())


def stage_names(config):
    """The stages a run of ``config`` goes through, in order: the optional
    "pretrain" stage, then the schedule's."""
    names = [name for name, _ in SCHEDULES[config.train.schedule]]
    return ([PRETRAIN] if PRETRAIN in config.train.stages else []) + names


def stage_config(config, stage):
    return config.train.stages.get(stage, StageConfig())


def _stage_weights(model_dir, stage):
    return os.path.join(model_dir, "stages", stage, FINAL_WEIGHTS)


class Trainer:
    """Trains a model directory through its schedule; ``resume`` continues a
    killed run from its last checkpoint and is a no-op on a finished run."""

    def __init__(self, config, model_dir, *, strategy=None, progress=True,
                 checkpoint_every=None):
        self.config = config
        self.model_dir = model_dir
        self.progress = progress
        self.checkpoint_every = checkpoint_every or config.train.checkpoint_every
        if config.train.deterministic:
            # Some CPU kernels (crop_and_resize's gradient) sum across threads in
            # no fixed order; bit-exact resume needs them deterministic.
            tf.config.experimental.enable_op_determinism()
        self.strategy = make_strategy(strategy or config.train.strategy)
        self.schedule = SCHEDULES[config.train.schedule]
        if not _is_chief(self.strategy):
            # Every worker saves (saving is collective under multi-worker
            # training) but only the chief writes the model directory.
            task = self.strategy.cluster_resolver.task_id
            self.model_dir = model_dir = os.path.join(model_dir, "workers", f"worker-{task}")
        self.log_dir = os.path.join(model_dir, "logs")
        self.model = None
        self.loops = {}

    # -- set-up -----------------------------------------------------------------
    def _build(self):
        keras.utils.set_random_seed(self.config.train.seed)
        with self.strategy.scope():
            model = build_model(self.config)
            model(self._dummy_inputs())
        return model

    def _dummy_inputs(self):
        side = 64
        return {"images": tf.zeros([1, side, side, 3]), "image_shape": tf.constant([[side, side]])}

    def _proposer(self):
        """Stage 1's network, frozen: the proposal source of stage 2."""
        with self.strategy.scope():
            proposer = build_model(self.config)
            proposer(self._dummy_inputs())
        proposer.load_weights(_stage_weights(self.model_dir, "rpn1"))
        proposer.trainable = False

        def propose(images, image_shape):
            return proposer.propose(images, image_shape, training=True)
        return proposer, propose

    # -- running ----------------------------------------------------------------
    def run(self, resume=False):
        os.makedirs(self.model_dir, exist_ok=True)
        stages = stage_names(self.config)
        state_path = os.path.join(self.model_dir, "state.json")
        if resume and os.path.exists(state_path):
            state = RunState.load(self.model_dir)
            if state.done:
                final = os.path.join(self.model_dir, FINAL_WEIGHTS)
                if not os.path.exists(final):
                    # Killed between finishing the last stage and writing the final weights.
                    self.model = self._build()
                    self.model.load_weights(_stage_weights(self.model_dir, stages[-1]))
                    save_weights_atomic(self.model, final)
                return state
        else:
            state = RunState(self.model_dir, self.config.train.schedule, stages)
            write_config(self.model_dir, self.config)
            _, class_names = inputs.source(self.config, self.config.data.train_split)
            if len(class_names) != self.config.model.num_classes:
                raise ConfigError(
                    f"the dataset has {len(class_names)} classes but config key "
                    f"'model.num_classes' = {self.config.model.num_classes}")
            write_labels(self.model_dir, class_names)
        self.model = self._build()
        initial = os.path.join(self.model_dir, INITIAL_BACKBONE)
        if PRETRAIN in stages and PRETRAIN not in state.finished_stages:
            self._pretrain(state)
        if not os.path.exists(initial):
            save_weights_atomic(self.model.features, initial)

        for index, (stage, trains) in enumerate(self.schedule):
            if stage in state.finished_stages:
                continue
            resuming = state.current_stage == stage and state.step > 0
            self._prepare_stage(index, stage, trains, fresh=not resuming)
            self._train_stage(stage, state, resuming)
            save_weights_atomic(self.model, _stage_weights(self.model_dir, stage))
            state.finished_stages.append(stage)
            state.current_stage, state.step = None, 0
            state.save()
        save_weights_atomic(self.model, os.path.join(self.model_dir, FINAL_WEIGHTS))
        return state

    def _pretrain(self, state):
        """The "pretrain" stage (see ``training.pretrain``): its backbone is the
        run's initial backbone."""
        with self.strategy.scope():
            pretrainer = BackbonePretrainer(self.model.features, self.config.model.num_classes,
                                            self.model.backbone.stride)
            pretrainer(self._dummy_inputs()["images"])
        resuming = state.current_stage == PRETRAIN and state.step > 0
        self._train_stage(PRETRAIN, state, resuming, model=pretrainer)
        save_weights_atomic(self.model.features,
                            os.path.join(self.model_dir, INITIAL_BACKBONE))
        state.finished_stages.append(PRETRAIN)
        state.current_stage, state.step = None, 0
        state.save()

    def _prepare_stage(self, index, stage, trains, fresh):
        model = self.model
        if index > 0:
            model.load_weights(_stage_weights(self.model_dir, self.schedule[index - 1][0]))
        elif fresh:
            # The initial backbone: what a "pretrain" stage left (or the seeded
            # initialisation itself), also after a resume.
            model.features.load_weights(os.path.join(self.model_dir, INITIAL_BACKBONE))
        model.set_stage(trains)
        model.proposal_source = None
        if trains == "detector" and self.config.train.schedule == "alternating":
            self._proposer_model, model.proposal_source = self._proposer()
            if fresh:
                model.features.load_weights(os.path.join(self.model_dir, INITIAL_BACKBONE))

    def _train_stage(self, stage, state, resuming, model=None):
        model = model or self.model
        settings = stage_config(self.config, stage)
        with self.strategy.scope():
            optimizer = make_optimizer(self.config.train, settings)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        directory = os.path.join(self.model_dir, "stages", stage)
        manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
        loop = StageLoop(model, optimizer, self.strategy, clip_norm=self.config.train.clip_norm,
                         jit_compile=self.config.train.jit_compile)
        self.loops[stage] = loop
        start = 0
        if resuming and manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            start = int(optimizer.iterations.numpy())
        state.current_stage, state.step = stage, start
        state.save()
        batch_size = settings.batch_size or self.config.data.batch_size
        batches = inputs.training_batches(self.config, self.config.data.train_split,
                                          batch_size, start_step=start)
        if self.progress:
            print(f"stage {stage} ({settings.steps} steps, lr {settings.learning_rate})")
        run_stage(model, stage, loop, batches, steps=settings.steps, start_step=start,
                  checkpoint=checkpoint, manager=manager, state=state, log_dir=self.log_dir,
                  checkpoint_every=self.checkpoint_every, progress=self.progress)


def train(config, model_dir, *, resume=False, strategy=None, progress=True):
    """Train ``config`` into ``model_dir`` (see ``Trainer``); returns the model."""
    trainer = Trainer(config, model_dir, strategy=strategy, progress=progress)
    trainer.run(resume=resume)
    return trainer.model


def load_trained_model(model_dir, svd_ranks=None, precision=None):
    """(model, config) of a finished model directory, ready for inference;
    ``svd_ranks`` (one per fc layer) truncates the head's fc layers (see
    ``tf_frcnn.svd``); ``precision`` (False, "float16", "bfloat16"; None: the
    config's ``detection.mixed_precision``) is the network's dtype policy."""
    from tf_frcnn.training.state import read_config
    config = read_config(model_dir)
    model = build_model(config, precision=config.detection.mixed_precision
                        if precision is None else precision)
    model({"images": tf.zeros([1, 64, 64, 3])})
    model.load_weights(os.path.join(model_dir, FINAL_WEIGHTS))
    if svd_ranks:
        from tf_frcnn.svd import truncate_head
        truncate_head(model, svd_ranks)
    return model, config
