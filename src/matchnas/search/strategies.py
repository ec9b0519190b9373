"""Selection strategies: one protocol, one registry (docs/method.md, "Choosing subnets after
training: no retraining, any number of budgets").

A strategy gets a :class:`SearchContext` (the trained supernet, a cost metric, the selection index,
the data it may use) and a list of budgets, and returns a :class:`SearchResult`: one
:class:`Pick` per budget plus every config it evaluated (for the plot). Strategies:

- ``fixed``: TOFA's Algorithm 2 on the selection index, within the budget's own size range
  (``fixed:LAMBDA``: indexed subnets costing ``[LAMBDA * b, b]``, 0.7 by default); no data, no
  network run. ``fixed-literal`` is the paper's rule as written.
- ``zeroshot:<proxy>``: MatchNAS's zero-shot search: the best proxy score among candidates that
  meet the budget, with the trained weights, on a batch of unlabelled images.
- ``evolution``: NSGA-II (pymoo) on validation accuracy vs cost (TOFA eq. 5), see
  :mod:`matchnas.search.evolution`.
- ``random``: the best of N random configs under each budget on the validation split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from matchnas.errors import MatchnasError
from matchnas.nn import Supernet
from matchnas.search.budgets import Metric
from matchnas.space import SubnetConfig

if TYPE_CHECKING:
    from matchnas.data import Normalisation
    from matchnas.run import Run
from matchnas.selection_index import SelectionIndex


@dataclass
class SearchContext:
    """What a strategy may use. ``validation_accuracy`` (config -> top-1 on the validation split
    after BN recalibration, cached) is None when the run has no validation data;
    ``proxy_images`` is a uint8 batch of unlabelled training images."""

    supernet: Supernet
    metric: Metric
    seed: int = 0
    index: SelectionIndex | None = None
    pool: tuple[SubnetConfig, ...] | None = None
    validation_accuracy: Callable[[SubnetConfig], float] | None = None
    proxy_images: torch.Tensor | None = None
    options: dict[str, float] = field(default_factory=dict)
    run: Run | None = None  # the trained run, when the context was built from one

    @property
    def normalisation(self) -> Normalisation | None:
        """The run's input normalisation (None without a run: EfficientNet-Lite's)."""
        return self.run.normalisation if self.run is not None else None

    @property
    def space(self):
        return self.supernet.space

    def require_validation(self, strategy: str) -> Callable[[SubnetConfig], float]:
        if self.validation_accuracy is None:
            raise MatchnasError(
                f"strategy '{strategy}' needs a validation split: train with data.val_per_class=N "
                "or pass --val-dir with labeled/<class>/ images"
            )
        return self.validation_accuracy


@dataclass(frozen=True)
class Pick:
    """The answer for one budget. ``config`` is None when no config meets the budget; then
    ``cost`` is the cheapest candidate's cost."""

    budget: float
    config: SubnetConfig | None
    cost: float
    score: float | None = None


@dataclass
class SearchResult:
    picks: list[Pick]
    evaluated: list[tuple[SubnetConfig, float, float]] = field(default_factory=list)  # config, cost, score
    front: list[tuple[SubnetConfig, float, float]] = field(default_factory=list)
    score_name: str = "score"
    seconds: float = 0.0


Strategy = Callable[[SearchContext, list[float], str], SearchResult]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str):
    def add(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy '{name}' is registered twice")
        STRATEGIES[name] = fn
        return fn

    return add


def run_strategy(spec: str, ctx: SearchContext, budgets: list[float]) -> SearchResult:
    """Run ``spec`` (``fixed``, ``zeroshot:synflow``, ``evolution``, ``random``)."""
    name, _, argument = spec.partition(":")
    if name not in STRATEGIES:
        raise MatchnasError(f"unknown strategy '{spec}'; known: {', '.join(sorted(STRATEGIES))}")
    began = time.perf_counter()
    result = STRATEGIES[name](ctx, sorted(budgets), argument)
    result.seconds = time.perf_counter() - began
    return result


def best_under_budgets(
    scored: list[tuple[SubnetConfig, float, float]], budgets: list[float], higher_is_better: bool = True
) -> list[Pick]:
    """For each budget, the best-scored candidate whose cost fits (ties: the cheaper one)."""
    picks = []
    cheapest = min(c for _, c, _ in scored) if scored else float("nan")
    for budget in budgets:
        fitting = [(s if higher_is_better else -s, -c, cfg, c, s) for cfg, c, s in scored if c <= budget]
        if not fitting:
            picks.append(Pick(budget, None, cheapest))
            continue
        *_, cfg, c, s = max(fitting, key=lambda t: (t[0], t[1]))
        picks.append(Pick(budget, cfg, c, s))
    return picks


def _with_extremes(ctx: SearchContext, configs) -> list[SubnetConfig]:
    """Candidates plus the max and min subnets, without duplicates, order kept."""
    return list(dict.fromkeys([ctx.space.min(), *configs, ctx.space.max()]))


def _random_candidates(ctx: SearchContext, n: int) -> list[SubnetConfig]:
    rng = np.random.default_rng([ctx.seed, 0x5E])
    if ctx.pool:
        return _with_extremes(ctx, [ctx.pool[int(i)] for i in rng.integers(len(ctx.pool), size=n)])
    return _with_extremes(ctx, [ctx.space.sample(rng) for _ in range(n)])


@register_strategy("fixed-literal")
def literal_fixed_rule(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """TOFA's Algorithm 2: ``a* = argmax_{a in S, c(a) <= b} I(a)``, ``S = {a : I(a) > 0}``
    (restricted to the narrowed pool when the run was narrowed).

    One departure, forced by the sandwich rule: ``a_max`` and ``a_min`` are sampled at every
    step, so ``I(a_min) = sum(t)`` dominates every random subnet and the literal rule answers
    ``a_min`` for every budget below ``c(a_max)``. The index therefore ranks the *random*
    subnets; ``a_max`` answers any budget it fits (it is the largest, best-trained subnet, the
    teacher), and ``a_min`` answers a budget no random subnet fits.
    """
    if ctx.index is None or not len(ctx.index):
        raise MatchnasError("strategy 'fixed' needs the run's selection index, and it is empty")
    allowed = set(ctx.pool) if ctx.pool else None
    largest, smallest = ctx.space.max(), ctx.space.min()
    scored = [
        (config, ctx.metric(config), score)
        for config, score in ctx.index.scores.items()
        if score > 0 and config not in (largest, smallest) and (allowed is None or config in allowed)
    ]
    picks = []
    for pick in best_under_budgets(scored, budgets):
        for extreme in (largest, smallest):
            extreme_cost = ctx.metric(extreme)
            if extreme_cost <= pick.budget and (extreme is largest or pick.config is None):
                pick = Pick(pick.budget, extreme, extreme_cost, ctx.index.scores.get(extreme))
                break
        if pick.config is None:
            pick = Pick(pick.budget, None, min(ctx.metric(smallest), pick.cost))
        picks.append(pick)
    return SearchResult(picks, scored, score_name="I(a)")


FIXED_BAND = 0.7  # lambda: the fixed rule's size range for budget b is [lambda * b, b]


@register_strategy("fixed")
def fixed_rule(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """TOFA's fixed rule within the budget's own size range (``fixed:LAMBDA``, default
    ``FIXED_BAND``): ``a* = argmax I(a)`` over the indexed subnets with ``lambda * b <= c(a) <= b``.

    Why: TOFA selects "a subnet within each size range", but in a space of ~1e14 configs almost
    every random subnet is sampled once, so ``I(a)`` is the step it was drawn at and the literal
    rule (``fixed-literal``) returns the most recently sampled subnet under the budget: the same
    small subnet for every budget (docs/benchmarks.md, "The fixed rule uses the budget"). Within
    the band the most recent (highest-index) subnet still wins, so the rule keeps TOFA's
    preference for late, well-trained subnets while the pick grows with the budget. ``a_max``
    answers any budget it fits, as in the literal rule; a budget whose band holds no indexed subnet
    falls back to the literal rule."""
    band = _band(argument)
    literal = literal_fixed_rule(ctx, budgets, "")
    picks = []
    for pick in literal.picks:
        in_band = [(score, -c, config, c) for config, c, score in literal.evaluated if band * pick.budget <= c <= pick.budget]
        if pick.config == ctx.space.max() or not in_band:
            picks.append(pick)
            continue
        score, _, config, c = max(in_band, key=lambda row: row[:2])
        picks.append(Pick(pick.budget, config, c, score))
    return SearchResult(picks, literal.evaluated, score_name="I(a)")


def _band(argument: str) -> float:
    if not argument:
        return FIXED_BAND
    try:
        band = float(argument)
    except ValueError:
        band = -1.0
    if not 0.0 <= band <= 1.0:
        raise MatchnasError(f"fixed:LAMBDA expects a fraction in [0, 1] (the budget band [LAMBDA*b, b]), got '{argument}'")
    return band


@register_strategy("zeroshot")
def zero_shot(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """Best zero-cost proxy score among ``candidates`` random configs (plus max and min) that
    meet each budget. Each candidate is extracted with the trained weights, its BN statistics are
    re-estimated on the proxy batch itself, and the proxy is computed on that batch."""
    from matchnas.proxies import get_proxy, proxy_input

    if not argument:
        raise MatchnasError("zeroshot needs a proxy: --strategy zeroshot:PROXY (e.g. zeroshot:synflow)")
    proxy = get_proxy(argument)
    if ctx.proxy_images is None:
        raise MatchnasError("strategy 'zeroshot' needs unlabelled images, and the run has none")
    candidates = _random_candidates(ctx, int(ctx.options.get("candidates", 1000)))
    costed = [(config, ctx.metric(config)) for config in candidates]
    largest = max(budgets)
    scored = []
    for config, c in costed:
        if c > largest:
            continue  # no budget can use it: don't spend a network run on it
        scored.append((config, c, float(proxy(proxy_input(ctx.supernet, config, ctx.proxy_images, ctx.seed, ctx.normalisation)))))
    picks = best_under_budgets(scored, budgets, proxy.higher_is_better)
    if not scored:
        cheapest = min(c for _, c in costed)
        picks = [Pick(b, None, cheapest) for b in budgets]
    return SearchResult(picks, scored, score_name=argument)


@register_strategy("random")
def random_search(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """The baseline: for each budget, ``samples`` random configs that meet it (bounded rejection
    sampling), each scored by validation accuracy; the best evaluated config under the budget wins
    (configs drawn for one budget compete for the others too)."""
    accuracy = ctx.require_validation("random")
    n = int(ctx.options.get("samples", 20))
    rng = np.random.default_rng([ctx.seed, 0x4A])
    evaluated = {}
    for budget in budgets:
        chosen = []
        for _ in range(200 * n):  # bounded rejection sampling
            if len(chosen) == n:
                break
            config = ctx.pool[int(rng.integers(len(ctx.pool)))] if ctx.pool else ctx.space.sample(rng)
            if ctx.metric(config) <= budget:
                chosen.append(config)
        if not chosen and ctx.metric(ctx.space.min()) <= budget:
            chosen.append(ctx.space.min())
        for config in chosen:
            if config not in evaluated:
                evaluated[config] = (config, ctx.metric(config), accuracy(config))
    scored = list(evaluated.values()) or [(ctx.space.min(), ctx.metric(ctx.space.min()), float("nan"))]
    picks = best_under_budgets(scored, budgets)  # draws for one budget compete for the others too
    return SearchResult(picks, list(evaluated.values()), score_name="val top-1")


@register_strategy("evolution")
def evolution(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    from matchnas.search.evolution import nsga2

    accuracy = ctx.require_validation("evolution")
    evaluated, front = nsga2(
        ctx,
        accuracy,
        population=int(ctx.options.get("population", 30)),
        generations=int(ctx.options.get("generations", 10)),
    )
    return SearchResult(best_under_budgets(evaluated, budgets), evaluated, front, score_name="val top-1")
