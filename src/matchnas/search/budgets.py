"""Budget metrics and budget lists: ``--metric flops|params|memory|latency[:LUT.json]`` and
``--budgets 4M,8M,12M``. A metric resolves to a pure function ``config -> cost``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.nn import Supernet
from matchnas.space import SubnetConfig

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
UNITS = {"flops": "FLOPs", "params": "params", "memory": "bytes", "latency": "ms"}


def parse_budgets(text: str) -> list[float]:
    """``"4M,8M,12.5M"`` -> ``[4e6, 8e6, 12.5e6]`` (decimal K/M/G suffixes; plain numbers for ms)."""
    budgets = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([KMG]?)\s*", item, flags=re.I)
        if not match:
            raise MatchnasError(f"budget '{item.strip()}' is not a number with an optional K/M/G suffix")
        budgets.append(float(match.group(1)) * _SUFFIX[match.group(2).upper()])
    if not budgets or any(not 0 < b < math.inf for b in budgets):
        raise MatchnasError(f"budgets must be positive and finite, got '{text}'")
    return sorted(budgets)


def format_cost(value: float, metric: str) -> str:
    if metric == "latency":
        return f"{value:.2f} ms"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


@dataclass(frozen=True)
class Metric:
    """A named cost: ``fn(config)`` in ``unit``."""

    name: str
    unit: str
    fn: Callable[[SubnetConfig], float]

    def __call__(self, config: SubnetConfig) -> float:
        return self.fn(config)


def resolve_metric(spec: str, supernet: Supernet, batch_size: int = 1) -> Metric:
    """``flops``, ``params``, ``memory`` (peak activation bytes at ``batch_size``), ``latency``
    (measured in onnxruntime, batch 1, after extraction) or ``latency:LUT.json`` (predicted)."""
    name, _, argument = spec.partition(":")
    space, k = supernet.space, supernet.num_classes
    if name == "flops":
        return Metric(name, UNITS[name], lambda c: float(cost.flops(space, c, k)))
    if name == "params":
        return Metric(name, UNITS[name], lambda c: float(cost.params(space, c, k)))
    if name == "memory":
        return Metric(name, UNITS[name], lambda c: float(cost.peak_memory(space, c, k, batch_size=batch_size)))
    if name == "latency":
        from matchnas import latency

        if argument:
            table = latency.LatencyTable.load(Path(argument), space)
            return Metric(name, UNITS[name], table.predict)
        return Metric(name, UNITS[name], latency.measured_latency_cost(supernet, "onnxruntime"))
    raise MatchnasError(f"unknown metric '{spec}': use flops, params, memory, latency or latency:LUT.json")
