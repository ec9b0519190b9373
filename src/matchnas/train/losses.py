"""Losses of one training step (docs/method.md, "One training step"): pure functions of tensors.

Shapes: logits ``(N, K)``, labels ``(N,)`` int64, probabilities ``(N, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def labelled_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """``L_lab``: cross-entropy with label smoothing ``eps`` (mean over the batch)."""
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


@dataclass(frozen=True)
class PseudoLabels:
    """A teacher's view of the unlabelled batch: ``probs = softmax(f(alpha(u)))`` (no gradient),
    ``labels = argmax probs`` and ``mask = [max probs >= tau]`` as floats."""

    probs: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor

    @property
    def mask_rate(self) -> float:
        return float(self.mask.mean())


def pseudo_labels(teacher_logits: torch.Tensor, tau: float) -> PseudoLabels:
    """MatchNAS's teacher step: the maxnet's weak-view predictions, thresholded at ``tau``."""
    probs = torch.softmax(teacher_logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return PseudoLabels(probs=probs, labels=labels, mask=(confidence >= tau).float())


def fixmatch_loss(strong_logits: torch.Tensor, pseudo: PseudoLabels) -> torch.Tensor:
    """``L_fm = mean_u(m * CE(f(A(u)), yhat))``: the mean runs over *all* unlabelled images, so
    the loss shrinks with the mask rate (FixMatch, eq. 4)."""
    per_image = F.cross_entropy(strong_logits, pseudo.labels, reduction="none")
    return (per_image * pseudo.mask).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """``L_kd = KL(p || softmax(f(alpha(u))))``, averaged over the batch (``batchmean``)."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), teacher_probs, reduction="batchmean")
