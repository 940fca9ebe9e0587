"""Fitting a training schedule into a wall-clock budget (``train.minutes``,
``tf-frcnn train --minutes``), measured as training goes.

The stages not yet finished train floor(k * base) steps, for the largest k whose predicted
time fits the time left, so each keeps its proportion of the config's steps. The prediction
uses this run's measurements: each stage's set-up, time per step (checkpoints included) and
per validation, taken after its first step, after ``CALIBRATION_STEPS`` + 1 steps, each time
its step count doubles (so checkpoints and drift enter the rate), after each validation, and
near its end each time it has trained a quarter of the steps it has left (a rate that falls
late in a stage, as when another job ends, would otherwise leave the deadline unreached);
each fits k again. A stage not measured yet costs what its ``Stage.like`` did, else the
largest set-up and the slowest step so far (a detector's step is slower than an RPN's; the
first stage's set-up, which builds the model and fills the input pipeline, is the largest),
so the final stage's length comes from its own rate."""

import dataclasses
import math

# Timed training steps of a stage, after its traced first one, before its first fit.
CALIBRATION_STEPS = 3


@dataclasses.dataclass
class StageCost:
    """Costs of one stage in seconds: once (set-up, tracing, the previous stage's
    saves), per training step and per validation."""

    overhead_s: float
    step_s: float
    validation_s: float = 0.0


def validation_interval(eval_every, cost, share):
    """The smallest multiple of ``eval_every`` at which a stage's validations (each
    ``cost.validation_s``) take at most ``share`` of its time; ``eval_every`` itself
    without a share or a measured cost."""
    if not eval_every or not share or cost.validation_s <= 0 or cost.step_s <= 0:
        return eval_every
    # validation_s <= share * (interval * step_s + validation_s)
    needed = cost.validation_s * (1.0 - share) / (share * cost.step_s)
    return eval_every * max(1, math.ceil(needed / eval_every))


def fit_steps(base_steps, costs, seconds, eval_every=None, done=None):
    """Steps per stage that fill ``seconds`` in the proportions of ``base_steps``.

    Args:
      base_steps: {stage: steps the config gives it}, the stages still to train.
      costs: {stage: StageCost}; a stage under way (``done``) has paid its overhead.
      seconds: wall time left.
      eval_every: steps between validations (a stage also validates at its end), or None;
        or {stage: its steps between validations}.
      done: {stage: steps already trained} for a stage under way.

    Returns:
      (k, {stage: steps}): floor(k * base), at least 1 and at least the steps done;
      k is 0 when the fixed costs alone exceed ``seconds``.
    """
    done = done or {}
    intervals = eval_every
    if not isinstance(eval_every, dict):
        intervals = dict.fromkeys(base_steps, eval_every)

    def per_step(stage):
        return costs[stage].step_s + costs[stage].validation_s / (intervals[stage] or math.inf)

    fixed = sum(
        (0.0 if stage in done else costs[stage].overhead_s)
        + (costs[stage].validation_s if intervals[stage] else 0.0)
        for stage in base_steps
    )
    spent = sum(steps * per_step(stage) for stage, steps in done.items())
    per_unit = sum(base * per_step(stage) for stage, base in base_steps.items())
    k = max(0.0, (seconds + spent - fixed) / per_unit)
    return k, {
        stage: max(1, done.get(stage, 0), math.floor(k * base))
        for stage, base in base_steps.items()
    }


def _doubling(ratio):
    """Whether ``ratio`` is 1, 2, 4, 8, ..."""
    return ratio.is_integer() and ratio >= 1 and (int(ratio) & (int(ratio) - 1)) == 0


def scale_decay_steps(decay_steps, base, steps):
    """``decay_steps`` given for a stage of ``base`` steps, moved to one of ``steps``
    steps (each kept >= 1)."""
    return [max(1, round(d * steps / base)) for d in decay_steps]


class TimeBudget:
    """The measurements of a run under a time budget, and the fits they give.

    Args:
      deadline: the end, in ``time.perf_counter`` seconds.
      base_steps: {stage: steps the config gives it}, the schedule's stages in order.
      like: {stage: an earlier stage it is assumed to cost like until measured}.
      eval_every: steps between validations, or None.
      validation_share: with ``eval_every``, each fit also sets each stage's interval
        between validations (``intervals``: ``validation_interval`` of its costs), so
        validations take at most this share of its time; None keeps ``eval_every``.
    """

    def __init__(self, deadline, base_steps, like, eval_every, validation_share=None):
        self.deadline = deadline
        self.base_steps = dict(base_steps)
        self.like = dict(like)
        self.eval_every = eval_every
        self.validation_share = validation_share
        self.intervals = dict.fromkeys(self.base_steps, eval_every)
        self.costs = {}
        self.scale = None
        self.fits = 0
        self._last_step_end = None
        self._first_step_end = None
        self._fitted = {}  # {stage: (its steps in the last fit, the step it came at)}

    def stage_begins(self, now):
        """Called before a stage's set-up; the time since the previous stage's last
        step (its saves and last validation) counts as this stage's set-up."""
        self._gap = now - self._last_step_end if self._last_step_end is not None else 0.0
        self._begin = now

    def observe(self, stage, step, now, validation_s=0.0, validations=0):
        """Called after each training step of ``stage`` (``validation_s``: seconds
        its ``validations`` so far took). Returns {stage: steps} for this stage
        and the later ones when this step brings a new measurement, else None."""
        fit = False
        if step == 1:
            self._overhead_s = self._gap + now - self._begin
            self._first_step_end = now
            known = self._estimate(stage)
            if known is not None:
                self.costs[stage] = StageCost(
                    self._overhead_s - known.step_s, known.step_s, known.validation_s
                )
                fit = True
        elif step - 1 >= CALIBRATION_STEPS and (
            _doubling((step - 1) / CALIBRATION_STEPS)
            or validations > self._validations
            or self._tail(stage, step)
        ):
            step_s = (now - self._first_step_end - validation_s) / (step - 1)
            guess = self._estimate(stage)
            self.costs[stage] = StageCost(
                self._overhead_s - step_s,
                step_s,
                validation_s / validations
                if validations
                else (guess.validation_s if guess else 0.0),
            )
            fit = True
        self._validations = validations
        self._last_step_end = now
        if not fit:
            return None
        remaining = list(self.base_steps)[list(self.base_steps).index(stage) :]
        costs = {s: self.costs.get(s) or self._estimate(s) for s in remaining}
        base, left = {s: self.base_steps[s] for s in remaining}, self.deadline - now
        share = self.validation_share
        intervals = {s: validation_interval(self.eval_every, costs[s], share) for s in costs}
        self.intervals.update(intervals)
        self.scale, steps = fit_steps(base, costs, left, intervals, {stage: step})
        self.fits += 1
        self._fitted = {s: (n, step if s == stage else 0) for s, n in steps.items()}
        return steps

    def _tail(self, stage, step):
        """Whether ``stage`` has trained a quarter of the steps its last fit left it
        (at least ``CALIBRATION_STEPS``) since that fit."""
        if stage not in self._fitted:
            return False
        steps, at = self._fitted[stage]
        return step - max(at, 1) >= max(CALIBRATION_STEPS, (steps - max(at, 1)) / 4)

    def _estimate(self, stage):
        """The costs ``stage`` is assumed to have before it is measured (see the
        module docstring); None before any measurement."""
        if self.like.get(stage) in self.costs:
            return self.costs[self.like[stage]]
        if not self.costs:
            return None
        measured = self.costs.values()
        return StageCost(
            max(c.overhead_s for c in measured),
            max(c.step_s for c in measured),
            max(c.validation_s for c in measured),
        )
