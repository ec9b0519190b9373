"""One training step of the sandwich rule, semi-supervised (docs/method.md, "One training step").

The step takes the subnets to train (``configs[0]`` is the teacher: the maxnet, or the single
model), runs each on one concatenated batch (labelled weak view, unlabelled strong view,
unlabelled weak view when needed, as FixMatch does), and calls ``backward()`` once per subnet so
gradients accumulate across the sandwich. The optimizer step is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

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
from matchnas.train.levers import gradient_snapshot, project_conflicting_students


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
    # Training levers (their meaning: experiment.TrainConfig); defaults here = the plain sandwich.
    student_sup_weight: float = 1.0
    distill_labelled: bool = False
    distill_view: str = "weak"  # weak | strong
    project_conflicts: bool = False

    @classmethod
    def from_train_config(cls, train_config) -> LossSettings:
        """The loss settings of an ``experiment.TrainConfig``, field by field by name: a field
        added here must exist there under the same name (an AttributeError says which)."""
        return cls(**{f.name: getattr(train_config, f.name) for f in fields(cls)})

    @property
    def uses_fixmatch(self) -> bool:
        return self.loss in ("fm", "full")

    @property
    def uses_distillation(self) -> bool:
        return self.loss in ("kd", "full")

    def views(self, is_teacher: bool) -> tuple[bool, bool]:
        """Which unlabelled views a subnet forwards: ``(strong, weak)``. The teacher's weak view
        gives the pseudo-labels and distillation targets; a student needs the strong view for
        FixMatch (unless its supervised terms are off) or to distil on it, and the weak view for
        its own pseudo-labels (``self``) or to distil on it."""
        if is_teacher:
            return self.uses_fixmatch, self.uses_fixmatch or self.uses_distillation
        supervised_fm = self.uses_fixmatch and self.student_sup_weight > 0
        strong = supervised_fm or (self.uses_distillation and self.distill_view == "strong")
        weak = (supervised_fm and self.pseudo_labels == "self") or (
            self.uses_distillation and self.distill_view == "weak")
        return strong, weak


class NonFiniteLoss(RuntimeError):
    """A subnet's loss was NaN or infinite."""


def train_step(
    model: Callable[[torch.Tensor, SubnetConfig], torch.Tensor],
    configs: list[SubnetConfig],
    batch: StepBatch,
    settings: LossSettings,
    student_weight: float = 1.0,
    mean_teacher: Callable[[torch.Tensor, SubnetConfig], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Forward and backward every subnet of ``configs``; returns named losses and metrics:
    ``loss`` (sum over subnets), ``lab``/``fm``/``kd`` (means over the subnets that computed
    them), ``mask_rate``, ``pl_kept``/``pl_correct`` (how many of the teacher's pseudo-labels
    passed the threshold and were right, when the truth is known), and ``conflict_cosine`` (the
    students' gradient against the maxnet's, with ``project_conflicts``).

    Each student's loss is ``student_weight * (student_sup_weight * (L_lab + lambda_u * L_fm) +
    lambda_kd * L_kd)``, the teacher's ``L_lab + lambda_u * L_fm`` (docs/method.md, step 3). Which
    subnets train and ``student_weight`` are the caller's, both from one rule:
    :func:`matchnas.train.levers.teacher_first`.

    With ``mean_teacher`` (a weight average of ``model``: ``train.ema_teacher``) the pseudo-labels
    and distillation targets come from its forward at ``configs[0]``, without gradient, of the
    teacher's whole batch (labelled, strong and weak views: the same BN batch statistics), and the
    online maxnet forwards only the labelled and strong views."""
    totals = {"loss": 0.0, "lab": 0.0, "fm": 0.0, "kd": 0.0}
    counts = {"lab": 0, "fm": 0, "kd": 0}
    teacher: PseudoLabels | None = None
    teacher_labelled: torch.Tensor | None = None  # the maxnet's softmax on the labelled batch
    teacher_grads = None
    params = [p for p in model.parameters() if p.requires_grad] if settings.project_conflicts else []
    for i, config in enumerate(configs):
        is_teacher = i == 0
        needs_strong, needs_weak = settings.views(is_teacher)
        logits_x, logits_strong, logits_weak, averaged = _forward(
            model, config, batch, needs_strong, needs_weak, mean_teacher if is_teacher else None, settings.tau)
        if averaged is not None:
            teacher = averaged

        loss_lab = labelled_loss(logits_x, batch.y, settings.label_smoothing)
        supervised = loss_lab
        if is_teacher and logits_weak is not None:
            teacher = pseudo_labels(logits_weak, settings.tau)
        if is_teacher and settings.distill_labelled:
            teacher_labelled = torch.softmax(logits_x.detach().float(), dim=1)
        if settings.uses_fixmatch and logits_strong is not None and (is_teacher or settings.student_sup_weight > 0):
            own = teacher if is_teacher or settings.pseudo_labels != "self" else pseudo_labels(logits_weak, settings.tau)
            loss_fm = fixmatch_loss(logits_strong, own)
            supervised = supervised + settings.lambda_u * loss_fm
            totals["fm"] += loss_fm.item()
            counts["fm"] += 1
        if is_teacher:
            loss = supervised
        else:
            loss = settings.student_sup_weight * supervised
            if settings.uses_distillation:
                # BigNAS/AlphaNet roles: students distil the maxnet's weak-view softmax, on the
                # view ``distill_view`` (strong: no weak-view forward for the students at all).
                student_view = logits_weak if settings.distill_view == "weak" else logits_strong
                loss_kd = distillation_loss(student_view, teacher.probs)
                if teacher_labelled is not None:
                    loss_kd = loss_kd + distillation_loss(logits_x, teacher_labelled)
                loss = loss + settings.lambda_kd * loss_kd
                totals["kd"] += loss_kd.item()
                counts["kd"] += 1
            loss = student_weight * loss
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"subnet {config.id} has loss {loss.item()}")
        loss.backward()
        if is_teacher and settings.project_conflicts and len(configs) > 1:
            teacher_grads = gradient_snapshot(params)
        totals["loss"] += loss.item()
        totals["lab"] += loss_lab.item()
        counts["lab"] += 1
    return _metrics(totals, counts, teacher, batch, params, teacher_grads)


def _forward(model, config: SubnetConfig, batch: StepBatch, needs_strong: bool, needs_weak: bool,
             mean_teacher, tau: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, PseudoLabels | None]:
    """``config`` forwarded once on the concatenated views it needs (labelled, then strong, then
    weak): the logits of each view (None where not needed), and with ``mean_teacher`` (the
    teacher's only) the pseudo-labels of the mean teacher's weak view."""
    parts = [batch.x]  # always: L_lab is logged for every subnet, and BN sees the labelled view
    if needs_strong:
        parts.append(batch.u_strong)
    averaged = None
    if mean_teacher is not None and needs_weak:
        # the mean teacher sees the maxnet's whole batch, so its BN batch statistics are the ones
        # the online maxnet would use; only its weak-view rows are kept
        needs_weak = False
        with torch.no_grad():
            logits = mean_teacher(resize(torch.cat([*parts, batch.u_weak]), config.resolution), config)
        averaged = pseudo_labels(logits[-batch.u_weak.shape[0]:], tau)
    if needs_weak:
        parts.append(batch.u_weak)
    logits = model(resize(torch.cat(parts), config.resolution), config)
    chunks = list(logits.split([p.shape[0] for p in parts]))
    logits_x = chunks.pop(0)
    logits_strong = chunks.pop(0) if needs_strong else None
    logits_weak = chunks.pop(0) if needs_weak else None
    return logits_x, logits_strong, logits_weak, averaged


def _metrics(totals: dict, counts: dict, teacher: PseudoLabels | None, batch: StepBatch, params: list,
             teacher_grads) -> dict[str, float]:
    """The step's named metrics (see :func:`train_step`); projects the students' gradient first
    when ``teacher_grads`` were taken (``project_conflicts``)."""
    metrics = {"loss": totals["loss"], "lab": totals["lab"] / counts["lab"]}
    if counts["fm"]:
        metrics["fm"] = totals["fm"] / counts["fm"]
    if counts["kd"]:
        metrics["kd"] = totals["kd"] / counts["kd"]
    if teacher_grads is not None:
        metrics["conflict_cosine"] = project_conflicting_students(params, teacher_grads)
    if teacher is not None:
        metrics["mask_rate"] = teacher.mask_rate
        if batch.u_true is not None:  # counts, so that ranks can be summed before dividing
            kept = teacher.mask.bool()
            metrics["pl_kept"] = float(kept.sum())
            metrics["pl_correct"] = float((teacher.labels[kept] == batch.u_true[kept]).sum())
    return metrics
