"""Budgets checked on the shipped file: each exported file's measured cost next to the budget its
pick answers, and a verdict.

A search picks a subnet whose *predicted* cost (:mod:`matchnas.cost`, or a latency table) fits a
budget; this module measures the file that ships and says whether it still fits:

- **latency**: the file's own median batch-1 latency in its runtime on this machine (timed by its
  exporter after warm-up runs: ``record["latency"]``);
- **size**: the file's bytes (weights, graph and metadata);
- **peak activation memory**: from the exported graph. ONNX and ``.tflite``: every tensor that is
  not a constant lives from the operator that writes it to the last operator that reads it (graph
  inputs from the start, outputs to the end), in the file's own operator order, at batch 1; the
  peak is the largest sum of live tensors' bytes at one operator, at the tensor's stored dtype
  (1 byte for int8/uint8). No in-place reuse is assumed, so it bounds a runtime's arena from
  above. ExecuTorch: the sizes of the memory planner's buffers in the ``.pte`` (only what lies
  outside the XNNPACK delegate: its input and output; XNNPACK's own workspace is not in the file),
  recorded as ``planned_buffer_bytes`` and not judged against a memory budget.

Which measurement judges which budget (``metric`` of the selections): ``latency`` / ``latency:...``
-> each file's latency; ``memory`` -> the float32 files' peak activation bytes; ``memory:int8``
-> the int8 files'; ``flash`` -> the float32 files' size; ``flash:int8`` -> the int8 files' size.
FLOPs and parameter budgets have nothing to measure on a file (verdict ``null``). A file misses its
budget when its measured cost is above ``budget * (1 + tolerance)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matchnas.errors import MatchnasError

BUDGET_TOLERANCE = 0.10  # a measured cost may exceed its budget by this fraction before it misses


def liveness_peak(ops: list[tuple[list[str], list[str]]], sizes: dict[str, int], inputs: list[str],
                  outputs: list[str]) -> int:
    """Peak bytes of live tensors over ``ops`` (in order; each ``(inputs, outputs)`` by tensor
    name). ``sizes`` holds every non-constant tensor's bytes; names not in it are constants."""
    last = {name: 0 for name in inputs}
    for i, (ins, outs) in enumerate(ops):
        for name in (*ins, *outs):
            if name in sizes:
                last[name] = i
    for name in outputs:
        last[name] = len(ops)
    first = {name: 0 for name in inputs}
    for i, (_, outs) in enumerate(ops):
        for name in outs:
            first.setdefault(name, i)
    peak = 0
    for i in range(max(1, len(ops))):
        live = sum(sizes[n] for n in first if n in sizes and first[n] <= i <= last.get(n, first[n]))
        peak = max(peak, live)
    return peak


def onnx_peak_bytes(path: Path) -> int:
    """Peak activation bytes of an ONNX file at batch 1 (shapes by onnxruntime's symbolic shape
    inference, which, unlike ONNX's own, follows the shape arithmetic of "same" padding)."""
    import onnx
    from onnx import helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    del model.graph.value_info[:]  # the exporter's shapes keep the symbolic batch axis: infer again at 1
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    graph = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
    constants = {t.name for t in graph.initializer} | {
        out for node in graph.node if node.op_type == "Constant" for out in node.output}
    sizes = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if value.name in constants or not tensor.HasField("shape"):
            continue
        dims = [d.dim_value for d in tensor.shape.dim]
        if all(d > 0 for d in dims):
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
            sizes[value.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    alias = _qdq_as_int8(nodes, sizes)
    ops = [([alias.get(i, i) for i in n.input], [o for o in n.output if o not in alias]) for n in nodes]
    return liveness_peak(ops, sizes, [v.name for v in graph.input if v.name not in constants],
                         [alias.get(v.name, v.name) for v in graph.output])


def _qdq_as_int8(nodes, sizes: dict[str, int]) -> dict[str, str]:
    """A QDQ file as an int8 runtime runs it (onnxruntime fuses ``DQ -> op -> Q`` into one int8
    op): a tensor that is quantized is held at its quantized size, and a dequantized tensor is its
    int8 source read by the next op. Returns the dequantized name -> int8 name aliases."""
    alias = {}
    for n in nodes:
        if n.op_type == "QuantizeLinear" and n.input[0] in sizes and n.output[0] in sizes:
            sizes[n.input[0]] = sizes[n.output[0]]
        if n.op_type == "DequantizeLinear" and n.input[0] in sizes:
            alias[n.output[0]] = n.input[0]
        elif n.op_type == "DequantizeLinear":  # a weight: a constant the int8 op reads as it is
            sizes.pop(n.output[0], None)
    return alias


def pte_planned_bytes(path: Path) -> int | None:
    """The ExecuTorch memory planner's buffer bytes recorded in a ``.pte``; None if unreadable."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary
    except ImportError:
        return None
    pte = deserialize_pte_binary(Path(path).read_bytes())
    program = getattr(pte, "program", pte)
    return int(sum(program.execution_plan[0].non_const_buffer_sizes))


def tflite_peak_bytes(path: Path) -> int:
    """Peak activation bytes of a ``.tflite`` file (its operators in the interpreter's order)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [([str(i) for i in op["inputs"] if i >= 0], [str(i) for i in op["outputs"]])
           for op in interpreter._get_ops_details()]
    produced = {name for _, outs in ops for name in outs}
    inputs = [str(d["index"]) for d in interpreter.get_input_details()]
    sizes = {}
    for index, t in tensors.items():
        if str(index) in produced or str(index) in inputs:
            sizes[str(index)] = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize
    return liveness_peak(ops, sizes, inputs, [str(d["index"]) for d in interpreter.get_output_details()])


def peak_bytes(path: Path) -> dict[str, Any]:
    """The peak activation record of one exported file (see the module docstring)."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return {"peak_activation_bytes": onnx_peak_bytes(path), "peak_source": "ONNX graph liveness, batch 1"}
    if suffix == ".tflite":
        return {"peak_activation_bytes": tflite_peak_bytes(path), "peak_source": "LiteRT graph liveness, batch 1"}
    if suffix == ".pte":
        return {"peak_activation_bytes": None, "planned_buffer_bytes": pte_planned_bytes(path),
                "peak_source": "ExecuTorch memory plan (outside the XNNPACK delegate only)"}
    return {"peak_activation_bytes": None, "peak_source": None}


def measured_value(metric: str, key: str, record: dict) -> float | None:
    """The measured cost of file ``key`` (e.g. ``onnx``, ``onnx-int8``) that judges a ``metric``
    budget, or None where this file says nothing about it."""
    name, _, precision = metric.partition(":")
    int8_file = key.endswith("-int8")
    if name == "latency":
        return float(record["latency"]["ms_median"])
    if name in ("memory", "flash") and int8_file == (precision == "int8"):
        return record["measured"]["peak_activation_bytes"] if name == "memory" else float(record["bytes"])
    return None


def record_measurements(models: list[dict], work: Path, metric: str | None, tolerance: float,
                        strict: bool = False) -> list[str]:
    """Add ``measured`` and ``budget_check`` to every file record of ``models`` (written in
    ``work``); return one line per file whose measured cost misses its budget (``strict``: raise
    the first as an error instead)."""
    misses = []
    for entry in models:
        for key, record in entry["files"].items():
            record["measured"] = {"latency_ms": record["latency"]["ms_median"], "bytes": record["bytes"],
                                  **peak_bytes(work / record["file"])}
            budget = entry["budget"]
            value = measured_value(metric, key, record) if metric and budget is not None else None
            if value is None:
                record["budget_check"] = None
                continue
            within = value <= budget * (1 + tolerance)
            record["budget_check"] = {"metric": metric, "budget": budget, "measured": value,
                                      "ratio": value / budget, "tolerance": tolerance, "within": within}
            if not within:
                misses.append(f"{record['file']} misses its {metric} budget: measured {_show(value, metric)} against "
                              f"{_show(budget, metric)} (+{100 * (value / budget - 1):.0f}%, tolerance {100 * tolerance:.0f}%)")
    if strict and misses:
        raise MatchnasError(f"{misses[0]} (--strict; {len(misses)} file(s) miss): nothing written")
    return misses


def check_tolerance(tolerance: float) -> float:
    if not 0 <= tolerance < float("inf"):
        raise MatchnasError(f"budget tolerance must be a fraction >= 0 (0.1 is 10%), got {tolerance}")
    return tolerance


def _show(value: float, metric: str) -> str:
    from matchnas.search.budgets import format_cost

    return format_cost(value, metric)
