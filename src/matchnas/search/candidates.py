"""Candidates that spend the budget: the maxnet at each resolution and the least shrunk subnets of
the maxnet that fit a budget (docs/method.md, "Candidates that spend the budget").

A *one-step shrink* of a config changes one choice to the next smaller one of its space: one
stage's depth (its last block dropped) or width, or one block's kernel size or expansion ratio
(the whole stage's for ``per_block: false``). The resolution is not shrunk: each resolution has a
family of its own.

For a budget ``b`` and each resolution ``r`` the family walks down from ``a_max`` at ``r``:

1. if the current config fits ``b``, it is the member for ``r`` (at the top: the maxnet at ``r``);
2. else, if some of its one-step shrinks fit ``b``, the ``width`` most expensive of them are the
   members for ``r`` (the ones that leave the least of the budget unspent);
3. else the walk moves to the shrink that saves the most cost (the fewest changes to the maxnet
   on the way down) and repeats; a resolution whose minnet does not fit adds nothing.

Just under the maxnet's cost the members are the maxnet's own one-step shrinks (one block fewer,
one width or expansion step less); at smaller budgets they stay as close to the maxnet as the
budget allows. Everything here is a pure function of the space and the cost metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from matchnas.space import SearchSpace, StageConfig, SubnetConfig

FAMILY_WIDTH = 3  # shrinks kept per resolution and budget when the maxnet at that resolution does not fit


def _smaller(choices: Iterable, value):
    """The next smaller choice than ``value``, or None."""
    below = [c for c in choices if c < value]
    return max(below) if below else None


def _with_stage(config: SubnetConfig, i: int, stage: StageConfig) -> SubnetConfig:
    stages = list(config.stages)
    stages[i] = stage
    return replace(config, stages=tuple(stages))


def _stage_shrinks(space: SearchSpace, config: SubnetConfig, i: int) -> list[SubnetConfig]:
    s, c = space.stages[i], config.stages[i]
    out = []
    depth = _smaller(s.depths, c.depth)
    if depth is not None:
        out.append(_with_stage(config, i, replace(c, depth=depth, kernel=c.kernel[:depth], expand=c.expand[:depth])))
    width = _smaller(s.widths, c.width)
    if width is not None:
        out.append(_with_stage(config, i, replace(c, width=width)))
    blocks = range(c.depth) if s.per_block else range(1)
    for field, options in (("kernel", s.kernels), ("expand", s.expands)):
        values = getattr(c, field)
        for b in blocks:
            smaller = _smaller(options[b], values[b])
            if smaller is None:
                continue
            new = tuple(smaller if (j == b or not s.per_block) else v for j, v in enumerate(values))
            out.append(_with_stage(config, i, replace(c, **{field: new})))
    return out


def one_step_shrinks(space: SearchSpace, config: SubnetConfig) -> list[SubnetConfig]:
    """Every config that differs from ``config`` by one choice made one step smaller (stage depth,
    stage width, a block's kernel or expansion), resolution kept. Empty for the minnet."""
    space.validate(config)
    return [shrunk for i in range(len(space.stages)) for shrunk in _stage_shrinks(space, config, i)]


@dataclass(frozen=True)
class Step:
    """One config on a resolution's walk down from the maxnet, its cost and its one-step shrinks
    with their costs."""

    config: SubnetConfig
    cost: float
    shrinks: tuple[tuple[SubnetConfig, float], ...]


@dataclass(frozen=True)
class BudgetFamily:
    """The walks of every resolution (highest first), computed once; :meth:`fitting` answers a budget."""

    walks: tuple[tuple[Step, ...], ...]
    width: int = FAMILY_WIDTH

    def fitting(self, budget: float) -> list[tuple[SubnetConfig, float]]:
        """The members for ``budget`` as ``(config, cost)``, each costing at most ``budget``."""
        members: dict[SubnetConfig, float] = {}
        for walk in self.walks:
            for step in walk:
                if step.cost <= budget:
                    members.setdefault(step.config, step.cost)
                    break
                fit = sorted((sc for sc in step.shrinks if sc[1] <= budget), key=lambda sc: -sc[1])
                if fit:
                    for config, c in fit[: self.width]:
                        members.setdefault(config, c)
                    break
        return list(members.items())

    def union(self, budgets: Iterable[float]) -> list[tuple[SubnetConfig, float]]:
        """The members of every budget, without duplicates, in order."""
        members: dict[SubnetConfig, float] = {}
        for budget in budgets:
            for config, c in self.fitting(budget):
                members.setdefault(config, c)
        return list(members.items())


def budget_family(space: SearchSpace, cost: Callable[[SubnetConfig], float], width: int = FAMILY_WIDTH,
                  allowed: Callable[[SubnetConfig], bool] | None = None) -> BudgetFamily:
    """The walks down from the maxnet at every resolution (module docstring). ``cost`` is called
    once per distinct config; ``allowed`` (e.g. membership of a narrowed pool) filters members."""
    costs: dict[SubnetConfig, float] = {}

    def price(config: SubnetConfig) -> float:
        if config not in costs:
            costs[config] = float(cost(config))
        return costs[config]

    walks = []
    for resolution in sorted(space.resolutions, reverse=True):
        current, walk = replace(space.max(), resolution=resolution), []
        while True:
            shrinks = [(s, price(s)) for s in one_step_shrinks(space, current)]
            usable = tuple(sc for sc in shrinks if allowed is None or allowed(sc[0]))
            if allowed is None or allowed(current):
                walk.append(Step(current, price(current), usable))
            else:
                walk.append(Step(current, float("inf"), usable))
            if not shrinks:
                break
            current = min(shrinks, key=lambda sc: sc[1])[0]  # the biggest saving: fewest changes on the way down
        walks.append(tuple(walk))
    return BudgetFamily(tuple(walks), width)
