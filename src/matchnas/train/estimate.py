"""How long a run will take on this machine, from a few timed steps.

The estimate times the run's own step (augmentation, forward, backward, optimizer) on synthetic
images of the run's size and colour: a few maxnet-only steps (the teacher's warm-up,
``train.teacher_warmup``) and a few minnet-only steps; a sandwich step is the maxnet's, the
minnet's and ``n_random`` random subnets' share, each interpolated in FLOPs between the two; then
the maxnet's and minnet's inference for the final evaluation. A folder's decoding time comes
from its survey. The run writes the time it took next to this estimate (``timing.json``), so every
estimate can be checked.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from matchnas import cost, devices
from matchnas.backbones import get_backbone
from matchnas.data import generator_for, resize, strong, weak
from matchnas.data.survey import DataSurvey
from matchnas.experiment import Experiment
from matchnas.io import atomic_write_json, read_text
from matchnas.train.levers import student_weight
from matchnas.train.step import LossSettings, StepBatch, train_step

PLAN_FILE = "plan.json"  # the training plan (matchnas.train.plan), when the run was planned
TIMING_FILE = "timing.json"  # measured seconds against the plan's estimate
TIMED_STEPS = 3  # per kind of step, after one untimed warm-up step
RANDOM_SAMPLE = 256  # random subnets whose FLOPs give the mean cost of a sandwich's random subnets
EVAL_BATCH = 64


@dataclass(frozen=True)
class Estimate:
    """Seconds, as measured for one run's settings on one device."""

    teacher_step: float  # a step that trains the maxnet only (the teacher's warm-up), or the single subnet
    sandwich_step: float  # a step of the sandwich (the maxnet, the minnet and random subnets)
    load: float  # reading the data (a folder: decoding every image)
    evaluate: float  # BN recalibration and test top-1 of the evaluated subnets
    steps: int  # the run's steps, teacher-only ones included
    teacher_steps: int

    @property
    def training(self) -> float:
        return self.teacher_steps * self.teacher_step + (self.steps - self.teacher_steps) * self.sandwich_step

    @property
    def fixed(self) -> float:
        """What does not scale with the steps."""
        return self.load + self.evaluate

    @property
    def total(self) -> float:
        return self.fixed + self.training

    def mean_step(self) -> float:
        return self.training / self.steps

    def with_steps(self, steps: int, teacher_steps: int) -> Estimate:
        return Estimate(self.teacher_step, self.sandwich_step, self.load, self.evaluate, steps, teacher_steps)

    def to_dict(self) -> dict:
        return {**asdict(self), "training": self.training, "total": self.total}


def teacher_steps(experiment: Experiment, steps: int) -> int:
    """How many of ``steps`` train the teacher alone (every step of a single-model run counts
    as one: it trains one subnet)."""
    t = experiment.train
    if t.single is not None:
        return steps
    return sum(student_weight(step, steps, t.teacher_warmup, t.student_ramp) == 0.0 for step in range(steps))


def estimate(experiment: Experiment, data: DataSurvey, supernet, device: torch.device) -> Estimate:
    """Time ``experiment``'s steps with ``supernet`` (a new run's, on ``device``); the supernet's
    weights and BN statistics are restored afterwards."""
    t, size = experiment.train, experiment.data.image_size
    channels = 1 if data.grey else 3
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    normalisation = get_backbone(experiment.model.backbone).normalisation
    settings = LossSettings.from_train_config(t)
    space = supernet.space
    optimizer = torch.optim.SGD(supernet.parameters(), lr=1e-6, momentum=t.momentum)
    images = torch.randint(0, 256, (t.batch_size * (1 + t.unlabeled_ratio), channels, size, size),
                           dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fixed = None if t.single is None else (space.max() if t.single == "max" else space.min() if t.single == "min"
                                           else space.config_from_file(t.single, "train.single"))

    def ready(x: torch.Tensor) -> torch.Tensor:
        return normalisation(x).to(device).contiguous(memory_format=devices.memory_format(device))

    def step(configs, seed_step: int) -> float:
        began = time.perf_counter()
        gen = generator_for(t.seed, seed_step, 0)
        x, u = images[: t.batch_size], images[t.batch_size:]
        y = torch.randint(0, supernet.num_classes, (t.batch_size,), generator=gen).to(device)
        batch = StepBatch(ready(weak(x, gen)), y, ready(weak(u, gen)), ready(strong(u, gen)))
        optimizer.zero_grad(set_to_none=True)
        train_step(supernet, configs, batch, settings, student_weight=1.0)
        optimizer.step()
        _synchronize(device)
        return time.perf_counter() - began

    supernet.train()
    try:
        if fixed is not None:
            step([fixed], 0)
            teacher = sandwiched = _mean(step([fixed], i) for i in range(TIMED_STEPS))
        else:
            step([space.max(), space.min()], 0)
            teacher = _mean(step([space.max()], i) for i in range(TIMED_STEPS))
            smallest = _mean(step([space.min()], i) for i in range(TIMED_STEPS))
            sandwiched = teacher + smallest + t.n_random * _mean_random_step(space, teacher, smallest, channels)
        targets = [fixed] if fixed is not None else [space.max(), space.min()]
        evaluate = _evaluation_seconds(supernet, targets, data, experiment, ready, images)
    finally:
        supernet.load_state_dict(state)
    load = data.seconds_per_image * data.images if data.folder else 0.0
    return Estimate(teacher, sandwiched, load, evaluate, t.steps, teacher_steps(experiment, t.steps))


def _mean_random_step(space, largest: float, smallest: float, channels: int) -> float:
    """A random subnet's share of a sandwich step, from the timed maxnet and minnet steps: linear
    in FLOPs between them, averaged over :data:`RANDOM_SAMPLE` seeded draws. (Timing a few
    sandwich steps instead gave 1.76 s for a Fashion-MNIST run whose sandwich steps took 2.0 s and
    more: three draws do not average the random subnets.)"""
    rng = np.random.default_rng(0)
    low, high = (cost.flops(space, c, 10, channels) for c in (space.min(), space.max()))
    share = _mean((cost.flops(space, space.sample(rng), 10, channels) - low) / (high - low)
                  for _ in range(RANDOM_SAMPLE))
    return smallest + share * (largest - smallest)


def _evaluation_seconds(supernet, targets, data: DataSurvey, experiment: Experiment, ready, images) -> float:
    """Recalibration (train-mode forwards of ``recalibration_images``) and inference on the test
    images (or the held-out validation images), for each evaluated subnet."""
    held_out = data.test or experiment.data.val_per_class * len(data.classes)
    n_images = experiment.train.recalibration_images + held_out
    batch = ready(images.repeat(math.ceil(EVAL_BATCH / len(images)), 1, 1, 1)[:EVAL_BATCH])
    seconds = 0.0
    for config in targets:
        net, x = supernet.extract(config).eval(), resize(batch, config.resolution)
        with torch.no_grad():
            net(x)
            began = time.perf_counter()
            net(x)
            _synchronize(batch.device)
        seconds += (time.perf_counter() - began) / len(batch) * n_images
    return seconds


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_timing(run_dir: Path, load_seconds: float, eval_seconds: float) -> None:
    """``timing.json``: the run's measured seconds (its steps' from ``metrics.jsonl``, over every
    resumed part; loading and evaluation of the last part) next to the plan's estimate, if any."""
    steps = sum(json.loads(line)["seconds"] for line in read_text(run_dir / "metrics.jsonl", "metrics").splitlines()
                if line.strip())
    measured = {"load": load_seconds, "training": steps, "evaluate": eval_seconds,
                "total": load_seconds + steps + eval_seconds}
    planned = None
    if (run_dir / PLAN_FILE).exists():
        planned = json.loads(read_text(run_dir / PLAN_FILE, "the run's plan")).get("estimate_s")
    timing = {"measured_s": measured, "estimate_s": planned}
    if planned:
        timing["measured_over_estimate"] = measured["total"] / planned["total"]
    atomic_write_json(run_dir / TIMING_FILE, timing)
