"""The training plan: what a run will do, shown before it does it.

``make_plan(experiment, run_dir)`` surveys the data, fills every automatic setting
(:mod:`matchnas.defaults`), times a few steps on this machine (:mod:`matchnas.train.estimate`),
fits the steps to a time budget when one is given, and returns a :class:`Plan`: the resolved
experiment that trains, the text ``matchnas train`` prints, and ``plan.json`` for the run folder.
Planning writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from matchnas import cost, devices
from matchnas.checkpoint import FINAL, has_checkpoint
from matchnas.data.split import labelled_in_class
from matchnas.data.survey import DataSurvey, survey
from matchnas.defaults import DEFAULT_STEPS, Choice, resolve, steps_for_time
from matchnas.experiment import Experiment
from matchnas.search.budgets import format_cost
from matchnas.space_file import load_space
from matchnas.train.distributed import pick_device
from matchnas.train.estimate import TIMED_STEPS, Estimate, estimate, teacher_steps
from matchnas.train.loop import build_supernet, resume, train


LONG_RUN_S = 8 * 3600  # a plan that takes longer says how to fit a budget


@dataclass(frozen=True)
class Plan:
    experiment: Experiment  # resolved: every automatic setting has its value
    data: DataSurvey
    choices: tuple[Choice, ...]
    estimate: Estimate | None  # None when not timed (under torchrun)
    device: str
    threads: int
    run_dir: str

    def describe(self) -> str:
        return describe(self)

    def to_dict(self) -> dict:
        return {
            "choices": [{"key": c.key, "value": c.value, "reason": c.reason} for c in self.choices],
            "data": {"classes": len(self.data.classes), "labelled": sum(self.data.labelled),
                     "unlabelled": self.data.unlabelled, "test": self.data.test, "short_side": self.data.short_side,
                     "grey": self.data.grey},
            "device": self.device, "threads": self.threads,
            "estimate_s": self.estimate.to_dict() if self.estimate is not None else None,
        }


def make_plan(experiment: Experiment, run_dir: str | Path, device: torch.device, time_budget: tuple[float, str] | None = None,
              timed: bool = True) -> Plan:
    """Plan ``experiment`` (automatic settings may be None) for ``run_dir`` on ``device``.

    Args:
        time_budget: ``(seconds, as the user wrote it)``: the steps are those that fit (the
            step count is then recorded in the experiment, so the run reproduces from its settings).
        timed: time a few steps for the estimate (needed with ``time_budget``).
    """
    data = survey(experiment.data.source, experiment.data.data_dir)
    ignored = None
    if time_budget is not None and experiment.train.steps is None:
        experiment = replace(experiment, train=replace(experiment.train, steps=1))  # a placeholder, refitted below
    elif time_budget is not None:
        ignored, time_budget = time_budget[1], None  # train.steps set by the user wins
    resolved, choices = resolve(experiment, data)
    if ignored is not None:
        choices = [c if c.key != "train.steps" else Choice(c.key, c.value, f"set by you (--time {ignored} not applied)")
                   for c in choices]
    timing = None
    if timed or time_budget is not None:
        supernet = build_supernet(resolved, len(data.classes)).to(device, memory_format=devices.memory_format(device))
        timing = estimate(resolved, data, supernet, device)
    if time_budget is not None:
        seconds, text = time_budget
        # the mean step over the teacher-only / sandwich mix of a full-length run
        mix = timing.with_steps(DEFAULT_STEPS, teacher_steps(resolved, DEFAULT_STEPS))
        steps = steps_for_time(seconds, timing.fixed, mix.mean_step(), text)
        resolved = replace(resolved, train=replace(resolved.train, steps=steps))
        timing = timing.with_steps(steps, teacher_steps(resolved, steps))
        choices = [c if c.key != "train.steps" else Choice(c.key, steps, f"what fits --time {text} at the measured step time")
                   for c in choices]
    elif timing is not None:
        timing = timing.with_steps(resolved.train.steps, teacher_steps(resolved, resolved.train.steps))
    return Plan(resolved, data, tuple(choices), timing, str(device), torch.get_num_threads(), str(run_dir))


def describe(plan: Plan) -> str:
    """The plan as ``matchnas train`` prints it: one line per fact or choice."""
    e, d = plan.experiment, plan.data
    lines = [f"data     {d.name}: {len(d.classes)} classes, {'grey' if d.grey else 'colour'}, " + _sizes(d)]
    held = e.data.val_per_class * len(d.classes)
    labelled = _labelled_count(e, d)
    leftover = sum(d.labelled) - labelled - held
    if d.folder:
        pool_from = "unlabeled/" + (f" and {leftover:,} labeled/ images left unlabelled" if leftover else "")
        labelled_from, tested_on = "labeled/", "test/" if d.test else "held-out labelled images"
    else:
        pool_from, labelled_from = "the training images left unlabelled", "the training split"
        tested_on = "the test split" if d.test else "held-out labelled images"
    lines.append(f"         labelled {labelled:,} of {sum(d.labelled):,} ({labelled_from}), unlabelled "
                 f"{leftover + d.unlabelled:,} ({pool_from}), evaluated on {d.test or held:,} ({tested_on})")
    space = load_space(e.model.space)
    k, c = len(d.classes), 1 if d.grey else 3
    lo, hi = (cost.flops(space, x, k, c) for x in (space.min(), space.max()))
    lines.append(f"space    {space.name}: resolutions {'/'.join(map(str, space.resolutions))} px, "
                 f"{space.num_configs():.2e} subnets, {format_cost(lo, 'flops')}-{format_cost(hi, 'flops')} FLOPs")
    t = e.train
    kind = f"one subnet ({t.single}), loss {t.loss}" if t.single else f"supernet, sandwich of max + min + {t.n_random} random, loss {t.loss}"
    lines.append(f"train    {t.steps} steps of {t.batch_size} labelled + {t.batch_size * t.unlabeled_ratio} unlabelled, "
                 f"{kind}; lr {t.lr}, cosine after {t.warmup_steps} warm-up steps")
    lines.append(f"device   {plan.device}, {plan.threads} thread{'s' * (plan.threads != 1)}; run folder {plan.run_dir}")
    if plan.device.startswith("cuda"):
        lines.append("         on a GPU the step is launch-bound, but larger batches or more unlabelled images per step "
                     "(FixMatch's mu = 7) are not measured yet: the batch is the CPU's")
    for choice in plan.choices:
        lines.append(f"  {choice.key} = {choice.value}: {choice.reason}")
    if plan.estimate is None:
        lines.append("time     not estimated (several processes)")
    else:
        s = plan.estimate
        lines.append(f"time     about {_duration(s.total)} ({s.steps} steps at {s.mean_step():.2f} s, "
                     f"loading {_duration(s.load)}, evaluation {_duration(s.evaluate)}; from {TIMED_STEPS} timed steps of each kind)")
        if s.total > LONG_RUN_S:
            lines.append(f"         more than {_duration(LONG_RUN_S)} here: --time DURATION trains the steps that fit a budget")
    return "\n".join(lines)


def _labelled_count(e: Experiment, d: DataSurvey) -> int:
    """The labelled training images the split will draw (as :func:`~matchnas.data.split.make_split` does)."""
    return sum(labelled_in_class(n, e.data.labels_per_class, e.data.label_fraction, e.data.val_per_class)
               for n in d.labelled)


def _sizes(d: DataSurvey) -> str:
    low, high = d.short_range
    spread = f"{d.short_side} px" if low == high else f"{d.short_side} px median ({low}-{high} px)"
    return f"native short side {spread}, {d.sampled} images sampled"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train_planned(experiment: Experiment, run_dir: str | Path, time_budget: tuple[float, str] | None = None,
                  echo=print) -> dict[str, float]:
    """A run in ``run_dir``, whatever state it is in: a finished run's evaluation is returned as it
    is, an interrupted run is resumed as it was configured, and a new run is planned (the plan
    goes to ``echo``) and trained. The demo and ``matchnas build`` train through this."""
    run_dir = Path(run_dir)
    if (run_dir / FINAL).exists() and (run_dir / "eval.json").exists():
        echo(f"{run_dir}: trained already; its evaluation is reused")
        return json.loads((run_dir / "eval.json").read_text())
    if has_checkpoint(run_dir):
        echo(f"{run_dir}: resuming the interrupted run as it was configured")
        return resume(run_dir)
    plan = make_plan(experiment, run_dir, pick_device(experiment.train.device), time_budget)
    echo(plan.describe())
    return train(plan.experiment, run_dir, plan=plan)
