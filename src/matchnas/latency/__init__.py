"""Latency: measured on this machine, and predicted from a lookup table (nn-Meter / OFA style).

Units: milliseconds for one image (batch 1, input ``1 x C x R x R``), the **median** of repeated
runs after warm-up. Two runtimes: ``"onnxruntime"`` (the module exported to ONNX, timed through
``InferenceSession.run`` on the CPU provider, default graph optimisations) and ``"torch"`` (eager,
``torch.inference_mode()``, eval mode). Threads are always set explicitly: ``threads=None`` means
**one intra-op thread** (and one inter-op thread), because single-thread timings are the least noisy
on a shared machine and the table and the whole-model measurement must use the same setting.

Lookup table (:func:`build_lut`): a subnet is a stem, a chain of MBConv blocks and a head, and each
part's latency depends only on its shape (:class:`Part`). The table times every distinct part shape
of the space once, as a small standalone module with random weights made of exactly the layers a
subnet has. A standalone run pays a fixed cost a whole model pays once, not per part (the runtime
call, copying the input and output, and for onnxruntime the NCHWc layout reorders at the graph's
edges). So a prediction is

    predict(a) = intercept + sum over parts p of a of (table[p] - overhead)

with ``intercept`` and ``overhead`` (ms per part) fitted on a few calibration configs measured
whole (``measured - sum(table) = intercept - overhead * n_parts``, least squares on the relative
error; :meth:`LatencyTable.calibrated`). The cost is a
pure function of the config (docs/method.md, "Choosing subnets": budget metrics are functions of the
config alone); it never runs a network.

Measured (docs/benchmarks.md, "Latency: lookup-table predictor vs measurement"; Lite0 space at
24-32 px, 1 thread): with onnxruntime 98-100% of 52 subnets are predicted within +-10% (median
|error| 1.0-1.6%); with torch eager 58-92%, no better than two measurements of the same subnet
agree with each other (90%).

Files: :mod:`~matchnas.latency.parts` (the shapes), :mod:`~matchnas.latency.measure` (timing),
:mod:`~matchnas.latency.table` (the lookup table and its build).
"""

from matchnas.latency.measure import (
    RUNTIMES,
    Runner,
    machine_description,
    measure_interleaved,
    measure_latency,
    measured_latency_cost,
)
from matchnas.latency.parts import Part, config_parts, enumerate_parts
from matchnas.latency.table import FORMAT, LatencyTable, build_lut, build_lut_command

__all__ = [
    "FORMAT", "RUNTIMES", "LatencyTable", "Part", "Runner", "build_lut", "build_lut_command", "config_parts",
    "enumerate_parts", "machine_description", "measure_interleaved", "measure_latency", "measured_latency_cost",
]  # fmt: skip
