"""Budget metrics and budget lists: ``--metric flops|params|memory[:int8]|flash[:int8]|latency[:LUT.json]``
and ``--budgets 4M,8M,12M`` (bytes metrics also ``256KB,1MB``). A metric resolves to a pure
function ``config -> cost``."""

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
# bytes only: KB/MB/GB are decimal like K/M/G; KiB/MiB are 1024-based (a "256 KB" microcontroller
# SRAM is 256 KiB)
_BYTE_SUFFIX = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 1024.0, "MIB": 1024.0**2, "GIB": 1024.0**3}
UNITS = {"flops": "FLOPs", "params": "params", "memory": "bytes", "flash": "bytes", "latency": "ms"}
BYTE_METRICS = ("memory", "flash")
METRIC_HELP = "use flops, params, memory, memory:int8, flash, flash:int8, latency or latency:LUT.json"


def parse_budgets(text: str, metric: str | None = None) -> list[float]:
    """``"4M,8M,12.5M"`` -> ``[4e6, 8e6, 12.5e6]`` (decimal K/M/G suffixes; plain numbers for ms);
    ``"256KB,1MiB"`` -> ``[256e3, 1048576.0]`` for a bytes ``metric`` (memory, flash) only."""
    budgets = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([KMG]?I?B|[KMG]?)\s*", item, flags=re.I)
        if not match or match.group(2).upper() in ("B", "IB"):
            raise MatchnasError(f"budget '{item.strip()}' is not a number with an optional K/M/G (or KB/MB, KiB/MiB) suffix")
        unit = match.group(2).upper()
        if unit in _BYTE_SUFFIX and metric is not None and metric.partition(":")[0] not in BYTE_METRICS:
            raise MatchnasError(f"budget '{item.strip()}' is in bytes but metric '{metric}' has no bytes: "
                                f"use memory, memory:int8, flash or flash:int8, or drop the B")
        budgets.append(float(match.group(1)) * (_BYTE_SUFFIX[unit] if unit in _BYTE_SUFFIX else _SUFFIX[unit]))
    if not budgets or any(not 0 < b < math.inf for b in budgets):
        raise MatchnasError(f"budgets must be positive and finite, got '{text}'")
    return sorted(budgets)


def format_cost(value: float, metric: str) -> str:
    if metric.partition(":")[0] == "latency":
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
    """``flops``, ``params``, ``memory`` (peak activation bytes at ``batch_size``, float32),
    ``memory:int8`` (the same at 1 byte an activation), ``flash`` / ``flash:int8`` (weight bytes,
    :func:`matchnas.cost.flash_bytes`), ``latency`` (measured in onnxruntime, batch 1, after
    extraction) or ``latency:LUT.json`` (predicted)."""
    check_metric(spec)
    name, _, argument = spec.partition(":")
    space, k = supernet.space, supernet.num_classes
    if name in BYTE_METRICS:
        size = 1 if argument == "int8" else 4
        fn = cost.peak_memory if name == "memory" else cost.flash_bytes
        batch = {"batch_size": batch_size} if name == "memory" else {}
        return Metric(spec, UNITS[name], lambda c: float(fn(space, c, k, dtype_bytes=size, **batch)))
    if name == "flops":
        return Metric(name, UNITS[name], lambda c: float(cost.flops(space, c, k)))
    if name == "params":
        return Metric(name, UNITS[name], lambda c: float(cost.params(space, c, k)))
    if name == "latency":
        from matchnas import latency

        if argument:
            table = latency.LatencyTable.load(Path(argument), space)
            return Metric(name, UNITS[name], table.predict)
        return Metric(name, UNITS[name], latency.measured_latency_cost(supernet, "onnxruntime"))
    raise MatchnasError(f"unknown metric '{spec}': {METRIC_HELP}")


def check_metric(spec: str) -> None:
    """Refuse an unknown metric or a precision a metric does not take, in one line."""
    name, _, argument = spec.partition(":")
    if name not in UNITS or (argument and name != "latency" and not (name in BYTE_METRICS and argument == "int8")):
        raise MatchnasError(f"unknown metric '{spec}': {METRIC_HELP}")
