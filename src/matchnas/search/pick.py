"""A subnet for one budget, straight from a trained run: ``subnet_for_budget(run, "8M")``.

The Python counterpart of ``matchnas search`` for a single budget: the strategy's pick (TOFA's
fixed rule by default) as a config, or extracted with BN re-calibrated as :meth:`Run.subnet`
does. It lives here, above :mod:`matchnas.run`, because choosing is search's job: a run only
extracts and measures the configs it is given.
"""

from __future__ import annotations

from matchnas.errors import MatchnasError
from matchnas.nn import StaticNet
from matchnas.run import Run
from matchnas.search.budgets import format_cost, parse_budgets
from matchnas.search.run import build_context
from matchnas.search.strategies import DEFAULT_STRATEGY, run_strategy
from matchnas.space import SubnetConfig


def config_for_budget(run: Run, budget: float | str, metric: str = "flops", strategy: str = DEFAULT_STRATEGY) -> SubnetConfig:
    """The config ``strategy`` picks for ``budget`` (``"8M"`` or a number, in ``metric``'s unit)."""
    ctx = build_context(run, metric)
    (value,) = parse_budgets(str(budget))
    (pick,) = run_strategy(strategy, ctx, [value]).picks
    if pick.config is None:
        raise MatchnasError(f"no config of {run.dir} fits {metric} budget {format_cost(value, metric)}: "
                            f"the cheapest costs {format_cost(pick.cost, metric)}")
    return pick.config


def subnet_for_budget(run: Run, budget: float | str, metric: str = "flops", strategy: str = DEFAULT_STRATEGY) -> StaticNet:
    """:func:`config_for_budget`'s config, extracted with BN re-calibrated, in eval mode."""
    return run.subnet(config_for_budget(run, budget, metric, strategy))
