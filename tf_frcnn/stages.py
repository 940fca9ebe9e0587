"""The stage table: every training stage by name, what it trains, where its detector's
proposals come from and what weights it starts from. Config validation, the Trainer, its
time budget and validation, the loss plots and the CLI all read it.

The paper's 4-step alternating training (Sec. 3.2):
  1. rpn1: the RPN on the initial (ImageNet or pretrained) backbone.
  2. detector2: Fast R-CNN on stage 1's proposals, its backbone started again from the
     initial weights.
  3. rpn3: the RPN layers fine-tuned on stage 2's backbone, which stays frozen from here on.
  4. detector4: the Fast R-CNN layers fine-tuned; backbone and RPN frozen.
"joint" is approximate joint training; "pretrain" the optional backbone pre-training
(``training.pretrain``) that comes before either schedule.
"""

from dataclasses import dataclass

PARTS = ("backbone", "rpn", "detector")
PRETRAIN = "pretrain"
# The RPN stages' metric: recall of the top 300 proposals at IoU 0.5 (the paper's test-time
# proposal count, Sec. 4.1); evaluation reports it beside other counts (evaluation/recall.py).
RPN_RECALL_AT = 300
RPN_METRIC = f"recall@{RPN_RECALL_AT}"
DETECTOR_METRIC = "mAP50"


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
      name: the stage's name in configs (``train.stages.NAME``), the model dir and logs.
      trains: the parts it trains, a subset of ``PARTS``.
      proposals_from: None: the detector (when trained) learns on this model's own
        proposals; a stage name: on the proposals of that stage's network, frozen.
      initial_backbone: the stage starts its backbone from the run's initial weights;
        otherwise from the previous stage's.
      like: the stage whose steps cost about what this one's do (a time budget's guess
        before this one is measured).
    """

    name: str
    trains: tuple
    proposals_from: str | None = None
    initial_backbone: bool = False
    like: str | None = None

    @property
    def trains_rpn(self):
        return "rpn" in self.trains

    @property
    def trains_detector(self):
        return "detector" in self.trains

    @property
    def metric(self):
        """What validation measures first: RPN recall, or the detector's mAP50 (a detector
        stage is selected by ``train.select_by``, ``training.validation``)."""
        return DETECTOR_METRIC if self.trains_detector else RPN_METRIC


SCHEDULES = {
    "alternating": (
        Stage("rpn1", ("backbone", "rpn"), initial_backbone=True),
        Stage("detector2", ("backbone", "detector"), proposals_from="rpn1", initial_backbone=True),
        Stage("rpn3", ("rpn",), like="rpn1"),
        Stage("detector4", ("detector",), like="detector2"),
    ),
    "joint": (Stage("joint", PARTS, initial_backbone=True),),
}
STAGES = {stage.name: stage for schedule in SCHEDULES.values() for stage in schedule}


def stage_names(config):
    """The stage names a run of ``config`` (a ``Config``) goes through, in order: the
    optional "pretrain" stage, then its schedule's."""
    pretrain = [PRETRAIN] if PRETRAIN in config.train.stages else []
    return pretrain + [stage.name for stage in SCHEDULES[config.train.schedule]]


def get_stage(name):
    """The ``Stage`` called ``name``; a ValueError naming the known ones otherwise."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGES[name]
