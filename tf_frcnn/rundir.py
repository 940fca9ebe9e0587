"""The model directory, the one module that knows its layout, read and written by training,
evaluation, export and data analysis::

    MODEL_DIR/
      state.json                 the run's progress (``RunState``)
      config.yaml                the config it was trained with (anchors resolved)
      labels.txt                 line i names class i
      initial_backbone.weights.h5, final.weights.h5, best.weights.h5, model.keras
      stages/<stage>/            the stage's checkpoints and its final.weights.h5
      logs/<stage>.losses.jsonl  one row per step; logs/<stage>.val.jsonl: validations
      logs/<stage>/              TensorBoard events

Every file is written atomically (a temporary file, then a rename) so a kill at any moment
leaves the last good state, and readable as the umask allows (0644 under the usual 022).
"""

import dataclasses
import json
import os
import tempfile

import keras
import tensorflow as tf
import yaml

from tf_frcnn.config import ConfigError, load_config
from tf_frcnn.model import build_model
from tf_frcnn.svd import truncate_head

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
INITIAL_BACKBONE = "initial_backbone.weights.h5"
FINAL_WEIGHTS = "final.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
KERAS_MODEL = "model.keras"
LABELS_FILE = "labels.txt"
STAGES_DIR = "stages"
LOGS_DIR = "logs"
# What ``--weights`` names: the file of each choice.
WEIGHTS = {"best": BEST_WEIGHTS, "final": FINAL_WEIGHTS, "keras": KERAS_MODEL}
# The side of the dummy image a model is called on once so that its weights exist.
DUMMY_SIDE = 64


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable(path, directory=False):
    """Gives ``path`` the mode a plain ``open``/``mkdir`` would (0644 files, 0755 directories
    under umask 022): ``tempfile`` makes them private (0600, 0700)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def stage_dir(model_dir, stage):
    """Where ``stage`` keeps its checkpoints and its final weights."""
    return os.path.join(model_dir, STAGES_DIR, stage)


def stage_weights(model_dir, stage):
    """The weights ``stage`` finished with."""
    return os.path.join(stage_dir(model_dir, stage), FINAL_WEIGHTS)


def log_dir(model_dir):
    return os.path.join(model_dir, LOGS_DIR)


def losses_log(logs, stage):
    """The step rows of ``stage``'s losses under ``logs`` (``log_dir``)."""
    return os.path.join(logs, f"{stage}.losses.jsonl")


def validation_log(logs, stage):
    """The step rows of ``stage``'s validations under ``logs`` (``log_dir``)."""
    return os.path.join(logs, f"{stage}.val.jsonl")


def atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_weights_atomic(layer, path):
    """``layer.save_weights`` to ``path`` through a temporary file; a ``.keras`` path
    gets the whole model (``model.save``)."""
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    if path.endswith(".keras"):
        layer.save(tmp)
    else:
        layer.save_weights(tmp)
    os.replace(tmp, path)


@dataclasses.dataclass
class RunState:
    """What ``state.json`` records: the schedule, the finished stages (names, in order), the
    current stage and its last checkpointed step; each stage's resolved length
    (``stage_steps``: {stage: {"steps", "decay_steps"}}, from ``steps``, ``epochs`` or the
    ``--minutes`` budget, whose measurements are in ``budget``); each stage's validation
    record (``training.validation.fresh_record``) and the final stage's best validation
    (``best``: {"stage", "step", and the values of its validation row}, the step of
    ``best.weights.h5``, selected by ``train.select_by``)."""

    model_dir: str
    schedule: str
    stages: list
    finished_stages: list = dataclasses.field(default_factory=list)
    current_stage: str | None = None
    step: int = 0
    stage_steps: dict = dataclasses.field(default_factory=dict)
    budget: dict | None = None
    validation: dict = dataclasses.field(default_factory=dict)
    best: dict | None = None

    @classmethod
    def load(cls, model_dir):
        """The state of ``model_dir``. Raises ``ConfigError`` naming the file when it
        is not a state this module wrote (edited by hand, or damaged on disk)."""
        path = os.path.join(model_dir, STATE_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
            return cls(
                model_dir,
                values["schedule"],
                values["stages"],
                finished_stages=list(values["finished_stages"]),
                current_stage=values.get("current_stage"),
                step=int(values.get("step", 0)),
                stage_steps={
                    stage: {
                        "steps": int(v["steps"]),
                        "decay_steps": [int(d) for d in v["decay_steps"]],
                    }
                    for stage, v in values.get("stage_steps", {}).items()
                },
                budget=values.get("budget"),
                validation=dict(values.get("validation", {})),
                best=values.get("best"),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"{path} is damaged ({type(error).__name__}: {error}); restore "
                "it, or train the model dir afresh without --resume"
            ) from None

    @property
    def done(self):
        return self.finished_stages == self.stages

    def save(self):
        values = dataclasses.asdict(self)
        del values["model_dir"]
        path = os.path.join(self.model_dir, STATE_FILE)
        atomic_write_text(path, json.dumps(values, indent=2) + "\n")


def read_step_rows(path):
    """The JSON rows of a log of ``path`` ({"step", ...} per line), by step: the later row
    of a step wins (a run killed between logging and its checkpoint repeats those steps on
    resume); [] without the file."""
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            # A kill mid-append leaves a torn row, which the resumed run's first row may
            # continue on the same line: keep the last complete row of it.
            for start in (0, line.rfind('{"step"')):
                try:
                    row = json.loads(line[start:])
                    rows[row["step"]] = row
                    break
                except json.JSONDecodeError:
                    continue
    return [rows[step] for step in sorted(rows)]


def write_config(model_dir, config):
    values = config.to_dict()
    for stage in values["train"]["stages"].values():
        # A stage's length is its steps or its epochs: the other key stays out.
        stage.pop("steps" if stage["epochs"] is not None else "epochs")
    atomic_write_text(os.path.join(model_dir, CONFIG_FILE), yaml.safe_dump(values, sort_keys=False))


def read_config(model_dir):
    return load_config(os.path.join(model_dir, CONFIG_FILE))


def write_labels(directory, class_names):
    """``labels.txt`` of a model dir or an export: line i names label i (1-based); read it with
    ``tf_frcnn.export.read_labels``."""
    atomic_write_text(
        os.path.join(directory, LABELS_FILE), "".join(f"{name}\n" for name in class_names)
    )


def read_history(logs, stage):
    """[(step, loss)] of a stage from its losses log."""
    return [(row["step"], row["loss"]) for row in read_step_rows(losses_log(logs, stage))]


def read_validation(logs, stage):
    """The validation rows of a stage, by step (see ``read_step_rows``)."""
    return read_step_rows(validation_log(logs, stage))


def built(model):
    """``model`` (a ``FasterRCNN``) after one call on a dummy image, so its weights exist."""
    side = DUMMY_SIDE
    model({"images": tf.zeros([1, side, side, 3]), "image_shape": tf.constant([[side, side]])})
    return model


def trained_weights(model_dir, weights=None):
    """(name, path) of the weights file of a model directory: ``weights`` "best"
    (``best.weights.h5``, the final stage's best validation), "final"
    (``final.weights.h5``), "keras" (``model.keras``, the whole model as
    ``tf-frcnn export --format keras`` saves it), or None for best where it exists, else
    final."""
    if weights is None:
        weights = "best" if os.path.exists(os.path.join(model_dir, BEST_WEIGHTS)) else "final"
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r} must be one of {', '.join(WEIGHTS)}")
    return weights, os.path.join(model_dir, WEIGHTS[weights])


def load_trained_model(model_dir, svd_ranks=None, weights=None, precision=None):
    """(model, config) of a finished model directory, ready for inference, with
    the weights ``trained_weights`` names; ``svd_ranks`` (one per fc layer)
    truncates the head's fc layers (see ``tf_frcnn.svd``); ``precision`` (False,
    "float16", "bfloat16"; None: the config's ``detection.mixed_precision``) is the
    network's dtype policy (a ``model.keras`` file keeps the one it was saved with)."""
    config = read_config(model_dir)
    name, path = trained_weights(model_dir, weights)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "no such weights file", path)
    if name == "keras":
        if precision is not None:
            raise ValueError(
                f"{path} keeps the precision it was saved with; "
                "load a weights file to choose another"
            )
        model = keras.models.load_model(path)
    else:
        if precision is None:
            precision = config.detection.mixed_precision
        model = built(build_model(config, precision=precision))
        model.load_weights(path)
    if svd_ranks:
        truncate_head(model, svd_ranks)
    return model, config
