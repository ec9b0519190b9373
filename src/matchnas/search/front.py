"""``front.json``: every subnet a search evaluated, with its cost and score, so a user sees what
each extra unit of cost buys (written by ``matchnas search`` next to ``selections.json``).

Each row is one evaluated config: its id and JSON form, its cost (in the metric's unit), its score
(the strategy's: validation top-1, the label-free score, a proxy, or the selection index), whether
it is on the Pareto front of the evaluated configs (no other costs at most as much and scores at
least as well, one of them strictly), whether it is one of the candidates that spend the budget,
and the budgets it was picked for.
"""

from __future__ import annotations

from pathlib import Path

from matchnas.io import atomic_write_json
from matchnas.space import SubnetConfig


def pareto(rows: list[tuple[SubnetConfig, float, float]], higher_is_better: bool = True) -> set[SubnetConfig]:
    """The configs of ``rows`` (config, cost, score) that no other row dominates."""
    sign = 1.0 if higher_is_better else -1.0
    ordered = sorted(rows, key=lambda r: (r[1], -sign * r[2]))  # cheapest first, best first at equal cost
    front, best = set(), float("-inf")
    for config, _, score in ordered:
        if sign * score > best:
            front.add(config)
            best = sign * score
    return front


def front_rows(result, family: set[SubnetConfig] = frozenset()) -> list[dict]:
    """One row per evaluated config of a :class:`~matchnas.search.SearchResult`, cheapest first."""
    rows = [r for r in result.evaluated if r[2] == r[2]]  # a NaN score ranks nothing
    on_front = pareto(rows, result.higher_is_better)
    picked: dict[SubnetConfig, list[float]] = {}
    for p in result.picks:
        if p.config is not None:
            picked.setdefault(p.config, []).append(p.budget)
    return [
        {"config_id": config.id, "cost": cost, "score": score, "pareto": config in on_front,
         "budget_spending": config in family, "picked_for": picked.get(config, []), "config": config.to_dict()}
        for config, cost, score in sorted(result.evaluated, key=lambda r: r[1])
    ]


def write_front(path: Path, run_dir: Path, strategy: str, metric: str, unit: str, result,
                family: set[SubnetConfig] = frozenset()) -> None:
    atomic_write_json(path, {
        "run": str(run_dir),
        "strategy": strategy,
        "metric": metric,
        "unit": unit,
        "score": result.score_name,
        "higher_is_better": result.higher_is_better,
        "configs": front_rows(result, family),
    })
