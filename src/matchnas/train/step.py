"""One training step of the sandwich rule, semi-supervised (METHOD.md, "One training step").

The step takes the subnets to train (``configs[0]`` is the teacher: the maxnet, or the single
model), runs each on one concatenated batch (labelled weak view, unlabelled strong view,
unlabelled weak view when needed, as FixMatch does), and calls ``backward()`` once per subnet so
gradients accumulate across the sandwich. The optimizer step is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from matchnas.data import resize
from matchnas.space import SubnetConfig
from matchnas.train.losses import (
    PseudoLabels,
    distillation_loss,
    fixmatch_loss,
    labelled_loss,
    pseudo_labels,
)


@dataclass(frozen=True)
class StepBatch:
    """Model-ready float batches at the stored image size (``N x 3 x S x S``, normalised).

    ``u_true`` holds the hidden labels of the unlabelled images when known (for the pseudo-label
    accuracy metric only; the step never trains on them)."""

    x: torch.Tensor
    y: torch.Tensor
    u_weak: torch.Tensor | None
    u_strong: torch.Tensor | None
    u_true: torch.Tensor | None = None


@dataclass(frozen=True)
class LossSettings:
    loss: str = "full"  # sup | fm | kd | full
    pseudo_labels: str = "maxnet"  # maxnet | self
    tau: float = 0.95
    label_smoothing: float = 0.0
    lambda_u: float = 1.0
    lambda_kd: float = 1.0

    @property
    def uses_fixmatch(self) -> bool:
        return self.loss in ("fm", "full")

    @property
    def uses_distillation(self) -> bool:
        return self.loss in ("kd", "full")


class NonFiniteLoss(RuntimeError):
    """A subnet's loss was NaN or infinite."""


def train_step(
    model: Callable[[torch.Tensor, SubnetConfig], torch.Tensor],
    configs: list[SubnetConfig],
    batch: StepBatch,
    settings: LossSettings,
) -> dict[str, float]:
    """Forward and backward every subnet of ``configs``; returns named losses and metrics:
    ``loss`` (sum over subnets), ``lab``/``fm``/``kd`` (means over subnets), ``mask_rate``, and
    ``pl_kept``/``pl_correct`` (how many of the teacher's pseudo-labels passed the threshold and
    were right, when the truth is known)."""
    totals = {"loss": 0.0, "lab": 0.0, "fm": 0.0, "kd": 0.0}
    teacher: PseudoLabels | None = None
    for i, config in enumerate(configs):
        is_teacher = i == 0
        # The weak view gives the teacher its pseudo-labels, a "self" subnet its own, and every
        # student its distillation input.
        needs_weak = (settings.uses_fixmatch and (is_teacher or settings.pseudo_labels == "self")) or (
            settings.uses_distillation
        )
        parts = [batch.x]
        if settings.uses_fixmatch:
            parts.append(batch.u_strong)
        if needs_weak:
            parts.append(batch.u_weak)
        logits = model(resize(torch.cat(parts), config.resolution), config)
        chunks = list(logits.split([p.shape[0] for p in parts]))
        logits_x = chunks.pop(0)
        logits_strong = chunks.pop(0) if settings.uses_fixmatch else None
        logits_weak = chunks.pop(0) if needs_weak else None

        loss_lab = labelled_loss(logits_x, batch.y, settings.label_smoothing)
        loss = loss_lab
        if is_teacher and logits_weak is not None:
            teacher = pseudo_labels(logits_weak, settings.tau)
        if settings.uses_fixmatch:
            own = pseudo_labels(logits_weak, settings.tau) if settings.pseudo_labels == "self" else teacher
            loss_fm = fixmatch_loss(logits_strong, own)
            loss = loss + settings.lambda_u * loss_fm
            totals["fm"] += loss_fm.item()
        if settings.uses_distillation and not is_teacher:
            loss_kd = distillation_loss(logits_weak, teacher.probs)
            loss = loss + settings.lambda_kd * loss_kd
            totals["kd"] += loss_kd.item()
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"subnet {config.id} has loss {loss.item()}")
        loss.backward()
        totals["loss"] += loss.item()
        totals["lab"] += loss_lab.item()

    n = len(configs)
    metrics = {"loss": totals["loss"], "lab": totals["lab"] / n}
    if settings.uses_fixmatch:
        metrics["fm"] = totals["fm"] / n
    if settings.uses_distillation and n > 1:
        metrics["kd"] = totals["kd"] / (n - 1)
    if teacher is not None:
        metrics["mask_rate"] = teacher.mask_rate
        if batch.u_true is not None:  # counts, so that ranks can be summed before dividing
            kept = teacher.mask.bool()
            metrics["pl_kept"] = float(kept.sum())
            metrics["pl_correct"] = float((teacher.labels[kept] == batch.u_true[kept]).sum())
    return metrics
