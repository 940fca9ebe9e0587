"""The model directory: ``state.json``, the config it was trained with, and
weights files, all written atomically (write a temporary file, then rename) so
a kill at any moment leaves the last good state."""

import dataclasses
import json
import os
import tempfile

import yaml

from tf_frcnn.config import ConfigError

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
INITIAL_BACKBONE = "initial_backbone.weights.h5"
FINAL_WEIGHTS = "final.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
KERAS_MODEL = "model.keras"
LABELS_FILE = "labels.txt"


def atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
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
    (``best``: {"stage", "step", "mAP50"}, the step of ``best.weights.h5``)."""

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
    from tf_frcnn.config import load_config

    return load_config(os.path.join(model_dir, CONFIG_FILE))


def write_labels(directory, class_names):
    """``labels.txt`` of a model dir or an export: line i names label i (1-based); read it with
    ``tf_frcnn.export.read_labels``."""
    atomic_write_text(
        os.path.join(directory, LABELS_FILE), "".join(f"{name}\n" for name in class_names)
    )
