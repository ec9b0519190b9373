"""Choosing subnets after training: budgets, strategies (one registry), the search command."""

from matchnas.search.budgets import Metric, parse_budgets, resolve_metric
from matchnas.search.context import Pick, SearchContext, SearchResult
from matchnas.search.strategies import DEFAULT_STRATEGY, STRATEGIES, register_strategy, run_strategy

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Metric",
    "Pick",
    "SearchContext",
    "SearchResult",
    "parse_budgets",
    "register_strategy",
    "resolve_metric",
    "run_strategy",
]
