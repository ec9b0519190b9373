"""Few-shot supernets split by gradient matching (GM-NAS; docs/method.md, "Few-shot splitting by
gradient matching").

An *edge* is one choice of the network every subnet makes: the depthwise kernel size or the
expansion ratio of a stage's first block (always active, so every config has a value there; in a
``per_block: false`` stage it is the stage's one choice). After a warm-up of the one-shot
supernet, the gradient-matching score of two choices of an edge is the cosine similarity of the
gradients the shared weights receive from subnets that differ only in that choice, each gradient
averaged over a few batches. The choices are then partitioned into groups that maximise the
within-group similarity (a minimum cut of the similarity graph, found by enumeration: an edge has
at most a handful of choices), and each group of each split edge becomes a sub-supernet
initialised from the parent. A config is served by the sub-supernet whose groups contain its
choices (:class:`SplitSupernet`); training continues round-robin over the sub-supernets, each
with its own sandwich drawn from its part of the space (:meth:`SplitPlan.subspace`).

``method="random"`` is the paper's control: random edges, random partitions, no gradients.

The training loop calls :func:`split_supernet` once, at :func:`split_step`. (This is the few-shot
split of the supernet; the data's label split is :mod:`matchnas.data.split`.)
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from matchnas.data import BatchStream
from matchnas.errors import MatchnasError
from matchnas.experiment import Experiment
from matchnas.nn import Supernet
from matchnas.nn.fewshot import DIMENSIONS, Edge, Partition, SplitPlan, SplitSupernet
from matchnas.run import RunData
from matchnas.space import SearchSpace, SubnetConfig
from matchnas.train.batches import make_batch
from matchnas.train.distributed import Placement
from matchnas.train.optimizer import carry_over, momentum_by_name
from matchnas.train.step import LossSettings, train_step

def candidate_edges(space: SearchSpace, dimension: str, groups: int) -> list[Edge]:
    """Edges of ``dimension`` with at least ``groups`` choices, in stage order."""
    if dimension not in DIMENSIONS:
        raise MatchnasError(f"split.dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    return [e for e in (Edge(i, dimension) for i in range(len(space.stages))) if len(e.choices(space)) >= groups]


def set_partitions(items: tuple, groups: int) -> Iterator[tuple[tuple, ...]]:
    """Every partition of ``items`` into ``groups`` non-empty groups, each once."""
    for labels in itertools.product(range(groups), repeat=len(items)):
        # canonical labelling: group g first appears before group g + 1
        firsts = [labels.index(g) if g in labels else None for g in range(groups)]
        if None in firsts or firsts != sorted(firsts):
            continue
        yield tuple(tuple(x for x, label in zip(items, labels) if label == g) for g in range(groups))


def best_partition(similarity: np.ndarray, choices: tuple, groups: int) -> tuple[tuple[tuple, ...], float]:
    """The partition of ``choices`` maximising the summed within-group similarity (equivalently,
    the minimum cut of the similarity graph) and the mean similarity across its groups."""
    index = {c: i for i, c in enumerate(choices)}
    best, best_within, best_across = None, -math.inf, 0.0
    for partition in set_partitions(choices, groups):
        within = sum(similarity[index[a], index[b]] for g in partition for a, b in itertools.combinations(g, 2))
        across = [similarity[index[a], index[b]] for g, h in itertools.combinations(partition, 2) for a in g for b in h]
        if within > best_within + 1e-12:
            best, best_within, best_across = partition, within, float(np.mean(across))
    return best, best_across


def gradient_matching(
    supernet: nn.Module,
    space: SearchSpace,
    edge: Edge,
    batches: list[Any],
    gradient_of: Callable[[nn.Module, SubnetConfig, Any], None],
    seed: int,
) -> np.ndarray:
    """Cosine similarity between the choices of ``edge``: for each batch a random config is drawn
    and every choice of the edge is put into it, so the gradients compared differ only in that
    choice; each choice's gradient over all shared weights is averaged over the batches.
    ``gradient_of(model, config, batch)`` must leave the gradients of one subnet's loss in
    ``model``'s parameters."""
    choices = edge.choices(space)
    params = [p for p in supernet.parameters() if p.requires_grad]
    sums = [torch.zeros(sum(p.numel() for p in params), dtype=torch.float64) for _ in choices]
    rng = np.random.default_rng([seed, edge.stage, DIMENSIONS.index(edge.dimension), 0x6D])
    for batch in batches:
        base = space.sample(rng)
        for c, choice in enumerate(choices):
            for p in params:
                p.grad = None
            gradient_of(supernet, edge.with_value(space, base, choice), batch)
            sums[c] += torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double() for p in params])
    for p in params:
        p.grad = None
    stacked = torch.stack(sums)
    unit = stacked / stacked.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (unit @ unit.T).numpy()


def plan_split(
    method: str,
    supernet: Supernet,
    edges: int,
    dimension: str,
    groups: int,
    step: int,
    seed: int,
    batches: list[Any],
    gradient_of: Callable[[nn.Module, SubnetConfig, Any], None],
) -> SplitPlan:
    """Choose the edges and their partitions. ``gm``: score every candidate edge and split the
    ``edges`` edges whose best partition leaves the least similarity across groups (the choices
    that disagree most stop sharing weights); ``random``: random edges and random partitions."""
    space = supernet.space
    candidates = candidate_edges(space, dimension, groups)
    if len(candidates) < edges:
        raise MatchnasError(
            f"split.edges={edges} but the space has only {len(candidates)} stages whose first block has "
            f"at least {groups} {dimension} choices"
        )
    if method == "random":
        rng = np.random.default_rng([seed, 0x5B1])
        chosen = sorted((candidates[int(i)] for i in rng.choice(len(candidates), size=edges, replace=False)),
                        key=lambda e: e.stage)
        partitions = []
        for edge in chosen:
            options = list(set_partitions(edge.choices(space), groups))
            partitions.append(Partition(edge, options[int(rng.integers(len(options)))]))
        return SplitPlan("random", step, tuple(partitions))
    if method != "gm":
        raise MatchnasError(f"split.method must be one of none, gm, random, got {method!r}")
    scored = []
    scores: dict[str, Any] = {}
    scratch = copy.deepcopy(supernet)  # the scoring passes must not move the run's BN statistics
    scratch.train()
    for edge in candidates:
        similarity = gradient_matching(scratch, space, edge, batches, gradient_of, seed)
        partition, across = best_partition(similarity, edge.choices(space), groups)
        scored.append((across, edge.stage, Partition(edge, partition)))
        scores[str(edge)] = {"choices": list(edge.choices(space)), "similarity": similarity.round(4).tolist(),
                             "best_groups": [list(g) for g in partition], "across_similarity": round(across, 4)}
    chosen = sorted(sorted(scored, key=lambda s: s[:2])[:edges], key=lambda s: s[1])
    return SplitPlan("gm", step, tuple(p for _, _, p in chosen), scores)


def restrict_pool(pool: tuple[SubnetConfig, ...] | None, plan: SplitPlan, part: int) -> tuple[SubnetConfig, ...] | None:
    """The narrowed pool's configs that ``part`` serves (None when there is no pool or none)."""
    if not pool:
        return None
    mine = tuple(c for c in pool if plan.part_of(c) == part)
    return mine or None


def part_schedule(plan: SplitPlan, step: int) -> int:
    """The sub-supernet that trains at ``step`` (round-robin from the split step)."""
    return (step - plan.step) % plan.num_parts


def split_step(experiment: Experiment) -> int | None:
    """The step at which the one-shot supernet is split (None: it never is)."""
    sp = experiment.split
    if sp.method == "none" or experiment.train.single is not None:
        return None
    return max(1, round(sp.at * experiment.train.steps))


def split_supernet(supernet: Supernet, optimizer, schedule, experiment: Experiment, data: RunData,
                   labelled: BatchStream, unlabelled: BatchStream | None, settings: LossSettings, step: int,
                   autocast) -> tuple[SplitSupernet, torch.optim.Optimizer, object, SplitPlan]:
    """Plan the split on the warmed-up supernet, copy it into the sub-supernets, and carry the
    optimizer over (momentum per parameter, the current learning rate, the schedule's position).

    Each choice's gradient is that of the run's loss for one subnet (labelled + FixMatch with the
    subnet's own pseudo-labels; distillation needs a teacher, so it is left out), taken on whole
    global batches drawn past the run's last step: every rank of a distributed run computes the
    same plan."""
    sp, t = experiment.split, experiment.train
    scoring = dataclasses.replace(settings, loss="sup" if settings.loss == "kd" else settings.loss,
                                  pseudo_labels="self", lambda_kd=0.0)
    batches = [make_batch(data, experiment, t.steps + 1 + i, labelled, unlabelled,
                          Placement(device=next(supernet.parameters()).device)) for i in range(sp.batches)]

    def gradient_of(model, config, batch):
        torch.manual_seed(t.seed)
        with autocast:
            train_step(model, [config], batch, scoring)

    plan = plan_split(sp.method, supernet, sp.edges, sp.dimension, sp.groups, step, t.seed, batches, gradient_of)
    momentum = momentum_by_name(optimizer, supernet)
    split = SplitSupernet.from_parent(supernet, plan)
    new_optimizer, new_schedule = carry_over(optimizer, schedule, momentum, split, experiment)
    return split, new_optimizer, new_schedule, plan
