"""A label-free score: how closely a subnet reproduces the maxnet's predictions on unlabelled
images (docs/method.md, "Ranking without labels").

For ``n`` seeded unlabelled training images ``x_i`` (uint8, the run's own), the maxnet ``a_max`` at
its resolution, BN re-calibrated, gives class probabilities ``p_i`` once (cached). A subnet ``a``,
BN re-calibrated by the same protocol as every evaluation (``train.recalibration_images`` seeded
weak views, :func:`matchnas.evaluate.recalibration_batches`), sees the same images at its own
resolution and gives ``q_i``. Its scores are

- agreement ``= (1/n) sum_i [argmax p_i == argmax q_i]`` (a fraction; 1.0 for the maxnet itself),
- KL ``= (1/n) sum_i KL(p_i || q_i)`` in nats (0.0 for the maxnet itself).

The score a search ranks by is the agreement (``measure="agreement"``, higher is better) or
``-KL`` (``measure="kl"``). Cost per subnet: one extraction, ``recalibration_images`` forward
passes in train mode and ``n`` in eval mode, batched; the model inputs and the recalibration
views are prepared once per resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from matchnas import devices
from matchnas.data import Normalisation
from matchnas.errors import MatchnasError
from matchnas.evaluate import recalibration_batches
from matchnas.nn import Supernet, recalibrate_bn
from matchnas.space import SubnetConfig

if TYPE_CHECKING:
    from matchnas.run import Run

AGREEMENT_IMAGES = 2000  # unlabelled images scored per subnet
MEASURES = ("agreement", "kl")


@torch.no_grad()
def agreement_scores(teacher_probs: torch.Tensor, student_logits: torch.Tensor) -> tuple[float, float]:
    """``(agreement, KL)`` of student logits ``N x K`` against teacher probabilities ``N x K``:
    the fraction of equal argmaxes and the mean ``KL(p || q)`` in nats (module docstring)."""
    if teacher_probs.shape != student_logits.shape:
        raise ValueError(f"shapes differ: {tuple(teacher_probs.shape)} vs {tuple(student_logits.shape)}")
    log_q = torch.log_softmax(student_logits.double(), dim=1)
    p = teacher_probs.double()
    log_p = torch.log(p.clamp_min(1e-300))
    kl = (p * (log_p - log_q)).sum(1).clamp_min(0.0).mean()
    agree = (p.argmax(1) == student_logits.argmax(1)).double().mean()
    return float(agree), float(kl)


@dataclass
class AgreementScore:
    """``score(config) -> float`` (agreement or ``-KL``, per ``measure``), cached per config;
    :meth:`scores` gives both. ``images`` and ``recalibration_pool`` are uint8 ``N x C x H x W``."""

    supernet: Supernet
    images: torch.Tensor
    recalibration_pool: torch.Tensor
    recalibration_images: int
    seed: int
    flip: bool
    normalisation: Normalisation  # the run's (never a backbone's by default)
    measure: str = "agreement"
    batch_size: int = 500
    _inputs: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _recal: dict[int, list[torch.Tensor]] = field(default_factory=dict, repr=False)
    _teacher: torch.Tensor | None = field(default=None, repr=False)
    _cache: dict[SubnetConfig, tuple[float, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise MatchnasError(f"unknown label-free measure '{self.measure}': choose {' or '.join(MEASURES)}")
        if not len(self.images):
            raise MatchnasError("the label-free score needs unlabelled images, and the run has none")

    @property
    def name(self) -> str:
        return "agreement" if self.measure == "agreement" else "-KL"

    def as_measure(self, measure: str) -> AgreementScore:
        """The same score ranking by ``measure``, sharing this one's caches (teacher, inputs, scores)."""
        return self if measure == self.measure else replace(self, measure=measure)

    def __call__(self, config: SubnetConfig) -> float:
        agree, kl = self.scores(config)
        return agree if self.measure == "agreement" else -kl

    def scores(self, config: SubnetConfig) -> tuple[float, float]:
        """``(agreement, KL)`` of ``config`` against the maxnet (cached)."""
        if config not in self._cache:
            if self._teacher is None:
                self._teacher = torch.softmax(self._logits(self.supernet.space.max()).double(), dim=1)
            self._cache[config] = agreement_scores(self._teacher, self._logits(config))
        return self._cache[config]

    @torch.no_grad()
    def _logits(self, config: SubnetConfig) -> torch.Tensor:
        device = next(self.supernet.parameters()).device
        fmt = devices.memory_format(device)
        net = recalibrate_bn(self.supernet.extract(config).to(memory_format=fmt), self._batches(config.resolution, device))
        x = self._input(config.resolution)
        return torch.cat([net(b.to(device).contiguous(memory_format=fmt)).float().cpu() for b in x.split(self.batch_size)])

    def _input(self, resolution: int) -> torch.Tensor:
        if resolution not in self._inputs:
            self._inputs[resolution] = self.normalisation(self.images, size=resolution)
        return self._inputs[resolution]

    def _batches(self, resolution: int, device) -> list[torch.Tensor]:
        if resolution not in self._recal:  # the views calibrated_subnet would draw, drawn once
            self._recal[resolution] = recalibration_batches(
                self.recalibration_pool, resolution, self.recalibration_images, self.seed, self.flip,
                normalisation=self.normalisation)
        fmt = devices.memory_format(device)
        return [b.to(device).contiguous(memory_format=fmt) for b in self._recal[resolution]]


def unlabelled_sample(run: Run, n: int = AGREEMENT_IMAGES) -> torch.Tensor:
    """``n`` seeded unlabelled training images of the run (its labelled ones when it has none)."""
    sets = run.data.sets
    source = sets.unlabeled.images if len(sets.unlabeled) else sets.labeled.images
    generator = torch.Generator().manual_seed(run.experiment.train.seed + 0xA6)
    return source[torch.randperm(len(source), generator=generator)[:n]]


def agreement_for_run(run: Run, n: int = AGREEMENT_IMAGES, measure: str = "agreement") -> AgreementScore:
    """The label-free score of a trained run on ``n`` of its unlabelled images."""
    t = run.experiment.train
    return AgreementScore(run.supernet, unlabelled_sample(run, n), run.data.recalibration_pool,
                          t.recalibration_images, t.seed, run.data.flip, run.normalisation, measure)
