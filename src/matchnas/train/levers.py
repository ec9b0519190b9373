"""Training levers that are not losses (docs/method.md, "Training levers"): when the students
join the sandwich, how the students' gradient is kept from fighting the maxnet's, and a mean
teacher.

Each is a function of the step, of gradient tensors, or of the weights after an optimizer step, so
a resumed run and every rank of a distributed run compute the same thing from ``(seed, step)``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from matchnas.space import SubnetConfig


def student_weight(step: int, steps: int, teacher_warmup: float, student_ramp: float) -> float:
    """The students' loss weight at 0-based ``step`` of ``steps``.

    The teacher first (OFA trains the full network before shrinking it; DepS, arXiv 2407.06167):
    0 during the first ``round(teacher_warmup * steps)`` steps, where only the maxnet trains; then
    a linear ramp reaching 1 after ``round(student_ramp * steps)`` more steps (the first ramp
    step already has a small positive weight, so no step after the warm-up is wasted); 1 after.
    With both fractions 0 the weight is 1 at every step (the plain sandwich rule)."""
    warmup = round(teacher_warmup * steps)
    ramp = round(student_ramp * steps)
    if step < warmup:
        return 0.0
    if step - warmup >= ramp:
        return 1.0
    return (step - warmup + 1) / (ramp + 1)


def teacher_first(configs: list[SubnetConfig], step: int, steps: int, teacher_warmup: float,
                  student_ramp: float) -> tuple[list[SubnetConfig], float]:
    """The teacher-first rule, applied in this one place: the subnets that train at ``step`` and
    the students' loss weight (:func:`student_weight`). While the weight is 0 (the teacher's
    warm-up) only ``configs[0]``, the teacher, trains: the students are not even forwarded, so
    they cost nothing and enter no selection index; after it every subnet trains and the step
    scales each student's loss by the weight (:func:`matchnas.train.step.train_step`)."""
    weight = student_weight(step, steps, teacher_warmup, student_ramp)
    return (configs[:1] if weight == 0.0 else configs), weight


def gradient_snapshot(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    """A copy of every parameter's current gradient (None where it has none)."""
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


def project_conflicting_students(params: list[torch.nn.Parameter], teacher: list[torch.Tensor | None]) -> float:
    """NASViT's gradient projection (Gong et al., ICLR 2022, "NASViT", sec. 3.2), PCGrad-style.

    On entry ``p.grad`` holds the maxnet's gradient ``g_t`` (``teacher``, snapshotted right after
    its backward) plus the students' summed gradient ``g_s``. When ``<g_s, g_t> < 0`` the students
    would undo the maxnet's step, so ``g_s`` loses its component along ``g_t``:
    ``g_s <- g_s - <g_s, g_t> / |g_t|^2 g_t``, and ``p.grad = g_t + g_s``. The maxnet's gradient
    itself is never changed.

    One global projection over all parameters, not one per tensor: a conflict is defined on the
    whole update (as in NASViT and PCGrad), and a global projection keeps the relative sizes of
    the students' per-tensor gradients, where per-tensor projection would reshape the students'
    update tensor by tensor and remove far more of it. Returns the cosine between ``g_s`` and
    ``g_t`` before projection (for the metrics; 0 when either is zero).

    Under DDP the projection runs on each rank's local gradients before they are averaged."""
    # A parameter only students use (a kernel transform) has no g_t: nothing to project there.
    students = [None if p.grad is None or g_t is None else p.grad - g_t for p, g_t in zip(params, teacher)]
    pairs = [(g_s, g_t) for g_s, g_t in zip(students, teacher) if g_s is not None]
    if not pairs:
        return 0.0
    dot = sum((g_s.double() * g_t.double()).sum() for g_s, g_t in pairs)
    teacher_sq = sum(g_t.double().pow(2).sum() for _, g_t in pairs)
    student_sq = sum(g_s.double().pow(2).sum() for g_s, _ in pairs)
    cosine = float(dot / (teacher_sq.sqrt() * student_sq.sqrt())) if teacher_sq > 0 and student_sq > 0 else 0.0
    if dot >= 0 or teacher_sq == 0:
        return cosine
    coefficient = dot / teacher_sq
    for p, g_s, g_t in zip(params, students, teacher):
        if g_s is None:
            continue
        p.grad.copy_(g_t + (g_s.double() - coefficient * g_t.double()).to(g_t.dtype))
    return cosine


class MeanTeacher:
    """An exponential moving average of a model's weights that gives the pseudo-labels and the
    distillation targets (Tarvainen & Valpola, NeurIPS 2017, "Mean teachers"; FixMatch and USB
    evaluate such an average): after each optimizer step, ``w_ema <- d w_ema + (1 - d) w`` with
    ``d = min(decay, (step + 1) / (step + 10))``, so the first steps follow the model closely
    instead of averaging in its randomly initialised head. Buffers (BN statistics) are copied:
    the teacher forwards in training mode, on batch statistics, as the online maxnet does.

    ``model`` is a frozen copy of the supernet (same class, same subnets); it is saved in each
    checkpoint, and every rank computes the same average from the same averaged gradients."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False).train()

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average towards ``model``'s weights after the 0-based ``step``."""
        weight = 1.0 - min(self.decay, (step + 1) / (step + 10))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
