"""Selection strategies: one protocol, one registry (docs/method.md, "Choosing subnets after
training: no retraining, any number of budgets").

A strategy gets a :class:`~matchnas.search.context.SearchContext` and a list of budgets, and
returns a :class:`~matchnas.search.context.SearchResult`: one ``Pick`` per budget plus every config
it evaluated (for the plot). Strategies:

- ``fixed``: TOFA's Algorithm 2 on the selection index, within the budget's own size range
  (``fixed:LAMBDA``: indexed subnets costing ``[LAMBDA * b, b]``, 0.7 by default); no data, no
  network run. ``fixed-literal`` is the paper's rule as written.
- ``zeroshot:<proxy>``: MatchNAS's zero-shot search: the best proxy score among candidates that
  meet the budget, with the trained weights, on a batch of unlabelled images.
- ``evolution``: NSGA-II (pymoo) on validation accuracy vs cost (TOFA eq. 5), see
  :mod:`matchnas.search.evolution`.
- ``random``: the best of N random configs under each budget on the validation split.
- ``agreement[:kl]``: the label-free score (:mod:`matchnas.search.agreement`): the subnet that
  best reproduces the maxnet's predictions on unlabelled images.

Every strategy also considers the candidates that spend the budget
(:mod:`matchnas.search.candidates`: the maxnet at each resolution and its least shrunk subnets
that fit); evolution starts from them. Evolution and random rank by validation top-1 when the run
has a validation split (or ``--val-dir``), else by the label-free score.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from matchnas.errors import MatchnasError
from matchnas.search.context import Pick, SearchContext, SearchResult
from matchnas.space import SubnetConfig


Strategy = Callable[[SearchContext, list[float], str], SearchResult]
STRATEGIES: dict[str, Strategy] = {}
# search, build and the Python API unless told: the smallest gaps to the best known subnet, two seeds (worst
# 0.42 points; fixed 0.84, random 0.97), for minutes of selection (docs/benchmarks.md, "Selection against ...")
DEFAULT_STRATEGY = "agreement"


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


def _random_candidates(ctx: SearchContext, n: int) -> list[SubnetConfig]:
    """``n`` seeded random configs (of the narrowed pool, if any) plus the min and max subnets, no duplicates."""
    rng = np.random.default_rng([ctx.seed, 0x5E])
    drawn = [ctx.pool[int(i)] for i in rng.integers(len(ctx.pool), size=n)] if ctx.pool else [ctx.space.sample(rng) for _ in range(n)]
    return list(dict.fromkeys([ctx.space.min(), *drawn, ctx.space.max()]))


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
    falls back to the literal rule.

    Then the candidates that spend the budget (:mod:`matchnas.search.candidates`): the rule has no
    accuracy signal, so "better" can only mean what it can measure, the cost: the band's pick
    stands when it costs at least as much as the most expensive fitting member of the family, else
    that member answers (docs/method.md, "TOFA's selection index and the fixed rule")."""
    band = _band(argument)
    literal = literal_fixed_rule(ctx, budgets, "")
    scores = ctx.index.scores
    picks, family = [], {}
    for pick in literal.picks:
        in_band = [(score, -c, config, c) for config, c, score in literal.evaluated if band * pick.budget <= c <= pick.budget]
        if pick.config != ctx.space.max() and in_band:
            score, _, config, c = max(in_band, key=lambda row: row[:2])
            pick = Pick(pick.budget, config, c, score)
        members = ctx.family.fitting(pick.budget)
        family.update((config, (config, c, scores.get(config, 0.0))) for config, c in members)
        spender = max(members, key=lambda m: m[1], default=None)
        if spender is not None and (pick.config is None or spender[1] > pick.cost):
            pick = Pick(pick.budget, spender[0], spender[1], scores.get(spender[0], 0.0))
        picks.append(pick)
    return SearchResult(picks, _merge(literal.evaluated, family.values()), score_name="I(a)")


def _merge(*groups) -> list[tuple[SubnetConfig, float, float]]:
    """Rows ``(config, cost, score)`` of several groups, the first row of each config kept."""
    rows: dict[SubnetConfig, tuple[SubnetConfig, float, float]] = {}
    for group in groups:
        for row in group:
            rows.setdefault(row[0], row)
    return list(rows.values())


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
    """Best zero-cost proxy score among ``candidates`` random configs (plus max and min, and the
    candidates that spend the budget) that meet each budget. Each candidate is extracted with the
    trained weights, its BN statistics are re-estimated on the proxy batch itself, and the proxy is
    computed on that batch."""
    from matchnas.proxies import get_proxy, proxy_input

    if not argument:
        raise MatchnasError("zeroshot needs a proxy: --strategy zeroshot:PROXY (e.g. zeroshot:synflow)")
    proxy = get_proxy(argument)
    if ctx.proxy_images is None:
        raise MatchnasError("strategy 'zeroshot' needs unlabelled images, and the run has none")
    candidates = _random_candidates(ctx, int(ctx.options.get("candidates") or 1000))
    candidates = list(dict.fromkeys([*candidates, *ctx.spending(budgets)]))
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
    return SearchResult(picks, scored, score_name=argument, higher_is_better=proxy.higher_is_better)


def _samples_under_budgets(ctx: SearchContext, budgets: list[float], n: int) -> list[SubnetConfig]:
    """For each budget, ``n`` seeded random configs that meet it (bounded rejection sampling; the
    minnet when none is found and it fits), then the candidates that spend it; no duplicates."""
    rng = np.random.default_rng([ctx.seed, 0x4A])
    chosen_all: dict[SubnetConfig, None] = {}  # ordered, no duplicates
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
        chosen += [config for config, _ in ctx.family.fitting(budget)]
        chosen_all.update(dict.fromkeys(chosen))
    return list(chosen_all)


RANDOM_SAMPLES = 20  # random configs drawn under each budget (random, and the label-free strategy)


@register_strategy("random")
def random_search(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """The baseline: for each budget, ``samples`` random configs that meet it (bounded rejection
    sampling) and the candidates that spend it, each scored by validation accuracy (the label-free
    score without a validation split); the best evaluated config under the budget wins (configs
    drawn for one budget compete for the others too)."""
    accuracy, score_name = ctx.objective("random")
    candidates = _samples_under_budgets(ctx, budgets, int(ctx.options.get("samples", RANDOM_SAMPLES)))
    evaluated = [(config, ctx.metric(config), accuracy(config))
                 for config in tqdm(candidates, desc=score_name, unit="subnet", leave=False)]
    scored = evaluated or [(ctx.space.min(), ctx.metric(ctx.space.min()), float("nan"))]
    picks = best_under_budgets(scored, budgets)  # draws for one budget compete for the others too
    return SearchResult(picks, evaluated, score_name=score_name)


@register_strategy("evolution")
def evolution(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    from matchnas.search.evolution import nsga2

    """NSGA-II on the objective (validation top-1, else the label-free score) against cost; the
    first population is the maxnet, the minnet and the candidates that spend the budgets, and every
    one of those candidates is evaluated even when the population is smaller."""
    objective, score_name = ctx.objective("evolution")
    seeds = ctx.spending(budgets)
    evaluated, front = nsga2(
        ctx,
        objective,
        population=int(ctx.options.get("population", 30)),
        generations=int(ctx.options.get("generations", 10)),
        seeds=seeds,
    )
    known = {config for config, *_ in evaluated}
    evaluated += [(config, ctx.metric(config), objective(config)) for config in seeds if config not in known]
    return SearchResult(best_under_budgets(evaluated, budgets), evaluated, front, score_name=score_name)


AGREEMENT_CANDIDATES = 300  # random candidates from the whole space the label-free strategy scores (as measured)


@register_strategy("agreement")
def agreement(ctx: SearchContext, budgets: list[float], argument: str) -> SearchResult:
    """The label-free score as a strategy (``agreement``, or ``agreement:kl`` for ``-KL``): the
    candidate that best reproduces the maxnet's predictions on unlabelled images
    (:mod:`matchnas.search.agreement`) under each budget. The candidates: ``candidates`` random
    configs from the whole space (plus max and min), ``samples`` random configs drawn under each
    budget (as ``random`` draws them) and the candidates that spend the budget (the score favours
    maxnet-like subnets). With both kinds of random candidates the picks were closer to the best
    known than with either (docs/benchmarks.md, "Selection against the best known subnet")."""
    from matchnas.search.agreement import MEASURES

    measure = argument or "agreement"
    if measure not in MEASURES:
        raise MatchnasError(f"agreement:MEASURE expects {' or '.join(MEASURES)}, got '{argument}'")
    score = ctx.require_label_free("agreement")
    if hasattr(score, "as_measure"):
        score = score.as_measure(measure)
    candidates = _random_candidates(ctx, int(ctx.options.get("candidates") or AGREEMENT_CANDIDATES))
    per_budget = _samples_under_budgets(ctx, budgets, int(ctx.options.get("samples", RANDOM_SAMPLES)))
    candidates = list(dict.fromkeys([*candidates, *per_budget]))
    largest = max(budgets)
    fitting = [(config, c) for config, c in ((cfg, ctx.metric(cfg)) for cfg in candidates) if c <= largest]
    scored = [(config, c, score(config)) for config, c in tqdm(fitting, desc="label-free score", unit="subnet", leave=False)]
    if not scored:
        cheapest = min(ctx.metric(c) for c in candidates)
        return SearchResult([Pick(b, None, cheapest) for b in budgets], [], score_name=measure)
    return SearchResult(best_under_budgets(scored, budgets), scored, score_name=getattr(score, "name", measure))
