"""Validation during training: every ``train.eval_every`` steps a stage measures the model
on ``data.val_split``: RPN recall@300 at IoU 0.5, or VOC mAP50, COCO AP and their ``fitness``
once it trains the detector, selected by ``train.select_by``. Rows go to
``logs/{stage}.val.jsonl``; the record (best, patience count, last validated step) lives in
``state.json``, so a resumed stage continues the same schedule."""

import json
import math
import os
import time

import tensorflow as tf

from tf_frcnn.evaluation.evaluator import unpad_proposals
from tf_frcnn.evaluation.recall import rpn_recall
from tf_frcnn.evaluation.runner import (
    batch_groundtruths,
    evaluate,
    inference_function,
    recall_layer,
)
from tf_frcnn.rundir import atomic_write_text, read_validation, validation_log
from tf_frcnn.stages import RPN_METRIC, RPN_RECALL_AT

# Ultralytics' fitness weights (0.9 x mAP50-95 + 0.1 x mAP50): COCO AP, which rewards tight
# boxes and moves less on a small validation set than mAP50 alone, decides.
FITNESS_WEIGHTS = {"AP": 0.9, "mAP50": 0.1}


def fitness(metrics):
    """0.9 x COCO AP + 0.1 x VOC mAP50 of a detector's ``metrics`` {"AP", "mAP50", ...}."""
    return sum(weight * metrics[name] for name, weight in FITNESS_WEIGHTS.items())


class StageValidator:
    """Measures ``model`` on ``batches`` (eval batches of ``inputs.VALIDATION``).

    ``proposal_source`` (images, image_shape) -> (proposals, scores, num) gives
    the detector its proposals instead of the model's own RPN: stage 2 of the
    alternating schedule trains on stage 1's proposals, and its own RPN sits on
    a backbone being retrained, so its detections are judged on stage 1's.

    ``metric`` is what selects and stops: recall@300 for an RPN stage, else
    ``train.select_by``; ``num_images`` the images the last call measured."""

    def __init__(self, model, config, stage, class_names, batches, proposal_source=None):
        self.model = model
        self.config = config
        self.metric = stage.metric if stage.metric == RPN_METRIC else config.train.select_by
        self.num_images = 0
        self.class_names = class_names
        self.batches = batches
        if self.metric == RPN_METRIC:
            layer = recall_layer(model.proposal_layer, RPN_RECALL_AT)

            @tf.function(reduce_retracing=True)
            def propose(images, image_shape):
                _, logits, deltas, anchors = model.rpn_forward(images, training=False)
                proposals, _, count = layer(logits, deltas, anchors, image_shape)
                return proposals, count

            self._predict = propose
        else:
            self._predict = inference_function(model, proposal_source)

    def warm_up(self):
        """Traces the prediction on the first validation batch. Under a time budget the
        stage's set-up, measured once, then pays for the trace, and the first validation
        costs what the later ones will (a pyramid's first took 83 s with its trace, and the
        budget, expecting as much for the last one, ended the run 44 s early)."""
        batch = next(iter(self.batches))
        self._predict(batch["images"], batch["image_shape"])
        # A smaller last batch traces once more (a relaxed batch size): here, not then.
        self._predict(batch["images"][:1], batch["image_shape"][:1])

    def __call__(self):
        """{"recall@300": float} or {"mAP50", "AP", "AP50", "fitness": float}."""
        if self.metric == RPN_METRIC:
            return self._recall()
        metrics, evaluator = evaluate(
            self.model, self.class_names, self.batches, progress=False, predict=self._predict
        )
        self._check(evaluator.num_images)
        values = {"mAP50": metrics["mAP_voc"], "AP": metrics["AP"], "AP50": metrics["AP50"]}
        return {**values, "fitness": fitness(values)}

    def _recall(self):
        groundtruths, proposals = [], []
        for batch in self.batches:
            boxes, count = self._predict(batch["images"], batch["image_shape"])
            scale = batch["scale"].numpy()[:, None, None]
            groundtruths += batch_groundtruths(batch)
            proposals += unpad_proposals(
                boxes.numpy() / scale, count.numpy(), batch["image_id"].numpy()
            )
        self._check(len(groundtruths))
        recall = rpn_recall(
            groundtruths, proposals, num_proposals=(RPN_RECALL_AT,), iou_thresholds=(0.5,)
        )
        return {RPN_METRIC: recall[RPN_METRIC]}

    def _check(self, count):
        self.num_images = count
        if not count:
            raise ValueError(
                f"the validation split (config key 'data.val_split' = "
                f"{self.config.data.val_split!r}) has no images"
            )


def fresh_record():
    """A stage's validation record as ``state.json`` keeps it: the best value and
    its step, validations since patience was last reset, the value that reset it
    (``reference``) and the last validated step."""
    return {"best": None, "best_step": 0, "since_best": 0, "reference": None, "last_step": 0}


class ValidationSchedule:
    """When a stage validates (``every`` steps after its last validation and at its last step), what
    it has seen (``record``, kept in ``state.json``) and whether it stops early
    (``patience`` validations in a row without a gain of more than ``min_delta``
    over ``record["reference"]``)."""

    def __init__(self, validator, stage, every, patience, log_dir, record, min_delta=0.0):
        self.validator = validator
        self.stage = stage
        self.every = every
        self.patience = patience
        self.min_delta = min_delta
        self.record = record
        self.path = validation_log(log_dir, stage)
        self.seconds = 0.0
        self.count = 0
        # Rows past the last recorded validation belong to a run killed before
        # it recorded them: they are measured again.
        keep_rows(log_dir, stage, record["last_step"])

    @property
    def metric(self):
        return self.validator.metric

    def due(self, step, steps):
        # Counted from the last validation, so an interval that grows under a budget
        # (train.validation_share) spaces the next one by the new interval.
        last = self.record["last_step"]
        return step > last and (step - last >= self.every or step == steps)

    @property
    def stopped(self):
        return bool(self.patience) and self.record["since_best"] >= self.patience

    def measure(self, step):
        """The validation row of ``step``: {"step", metric names: float, "images"}."""
        start = time.perf_counter()
        row = {"step": int(step), **{k: float(v) for k, v in self.validator().items()}}
        row["images"] = self.validator.num_images
        self.seconds += time.perf_counter() - start
        self.count += 1
        return row

    def commit(self, row):
        """Appends ``row`` to the log and updates the record; True when its value
        is the best so far (NaN never is). Patience restarts on a gain of more than
        ``min_delta`` over the value that last restarted it."""
        value = row[self.metric]
        record = self.record
        improved = not math.isnan(value) and (record["best"] is None or value > record["best"])
        reference = record.get("reference", record["best"])
        if improved:
            record["best"], record["best_step"] = value, row["step"]
        if improved and (reference is None or value > reference + self.min_delta):
            record["since_best"], record["reference"] = 0, value
        else:
            record["since_best"] += 1
        record["last_step"] = row["step"]
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(row) + "\n")
        return improved


def keep_rows(log_dir, stage, last_step):
    """Rewrites a stage's validation log with its rows up to ``last_step`` only."""
    path = validation_log(log_dir, stage)
    if os.path.exists(path):
        rows = [row for row in read_validation(log_dir, stage) if row["step"] <= last_step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
