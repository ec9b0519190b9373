"""The optimizer and learning-rate schedule of a run (docs/method.md, "One training step", step
4), and how both carry over when the supernet is split into sub-supernets."""

from __future__ import annotations

import math

import torch

from matchnas.experiment import Experiment
from matchnas.nn.fewshot import SplitSupernet


def build_optimizer(model: torch.nn.Module, experiment: Experiment):
    """SGD with Nesterov momentum; weight decay on conv and linear weights only (not on biases,
    BN, or the kernel transforms, which start at the identity); linear warm-up then cosine down
    to ``final_lr * lr``. With ``body_lr_scale != 1`` everything but the new classifier (the
    pre-trained body) learns at ``body_lr_scale * lr`` (fine-tuning: the body moves less than
    the head that starts from scratch), in groups of their own."""
    t = experiment.train
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        decays = p.dim() > 1 and ".transforms." not in name
        body = t.body_lr_scale != 1.0 and name.split(".")[-2] != "classifier"  # also parts.N.classifier
        groups.setdefault((body, decays), []).append(p)
    optimizer = torch.optim.SGD(
        [{"params": params, "weight_decay": t.weight_decay if decays else 0.0,
          "lr": t.lr * (t.body_lr_scale if body else 1.0)}
         for (body, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))],
        lr=t.lr,
        momentum=t.momentum,
        nesterov=True,
    )

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        return t.final_lr + (1.0 - t.final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def carry_over(optimizer: torch.optim.Optimizer, schedule, momentum: dict[str, dict], split: SplitSupernet,
               experiment: Experiment):
    """The split supernet's optimizer and schedule, continuing the parent's: ``momentum`` per
    parameter (:func:`momentum_by_name`, taken before the split), the current learning rate, the schedule's position."""
    new_optimizer, new_schedule = build_optimizer(split, experiment)
    copy_momentum(new_optimizer, momentum, split)
    new_schedule.load_state_dict(schedule.state_dict())
    for new, old in zip(new_optimizer.param_groups, optimizer.param_groups):
        new["lr"] = old["lr"]
    return new_optimizer, new_schedule


def momentum_by_name(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, dict]:
    """``model``'s optimizer state (momentum) keyed by parameter name."""
    return {name: optimizer.state[p] for name, p in model.named_parameters() if p in optimizer.state}


def copy_momentum(optimizer: torch.optim.Optimizer, old_state: dict, split: SplitSupernet) -> None:
    """Start every sub-supernet's momentum from the parent's (``old_state``: the parent's
    optimizer state keyed by parameter name)."""
    for part in split.parts:
        for name, p in part.named_parameters():
            if name in old_state:
                optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in old_state[name].items()}
