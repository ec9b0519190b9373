"""Budgets checked on the exported file: graph-liveness peak memory, the measured cost of every file
next to its budget, a miss reported in one line, and ``strict`` refusing the export."""

import json

import onnx
import pytest
from onnx import TensorProto, helper

from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.export import export_run
from matchnas.export.measured import liveness_peak, measured_value, onnx_peak_bytes

from .test_export import FAST, run  # noqa: F401 (run: the tiny digits run fixture)


def test_liveness_peak_of_a_chain_and_a_residual():
    # a -> b -> c: at most two tensors are alive at once
    chain = [(["a"], ["b"]), (["b"], ["c"])]
    assert liveness_peak(chain, {"a": 10, "b": 20, "c": 30}, ["a"], ["c"]) == 50
    # a -> b -> c, then add(a, c): a stays alive to the end, so all three meet at the second op
    residual = [(["a"], ["b"]), (["b"], ["c"]), (["a", "c"], ["d"])]
    assert liveness_peak(residual, {"a": 10, "b": 20, "c": 30, "d": 10}, ["a"], ["d"]) == 60
    # a weight (not in sizes) costs nothing
    assert liveness_peak([(["a", "w"], ["b"])], {"a": 4, "b": 4}, ["a"], ["b"]) == 8


def test_onnx_peak_bytes_counts_each_tensor_at_its_dtype(tmp_path):
    """Conv (3 -> 4 channels, 8x8) then Relu at batch 1 (the batch axis left dynamic): input 768 B,
    conv output 1024 B, relu output 1024 B; the peak is conv output + relu output = 2048 B."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.0] * 108)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4, 8, 8])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert onnx_peak_bytes(path) == 2048


def test_measured_value_matches_metric_to_file():
    record = {"latency": {"ms_median": 2.5}, "bytes": 1000, "measured": {"peak_activation_bytes": 300}}
    assert measured_value("latency", "onnx-int8", record) == 2.5
    assert measured_value("latency:lut.json", "onnx", record) == 2.5
    assert measured_value("memory", "onnx", record) == 300 and measured_value("memory", "onnx-int8", record) is None
    assert measured_value("memory:int8", "onnx-int8", record) == 300 and measured_value("memory:int8", "onnx", record) is None
    assert measured_value("flash:int8", "onnx-int8", record) == 1000.0 and measured_value("flops", "onnx", record) is None


def _selections(run, metric, budget):
    run_dir, _, supernet, data = run
    space, small = supernet.space, supernet.space.min()
    body = json.loads((run_dir / "selections.json").read_text())
    body.update(metric=metric, picks=[{"budget": budget, "config_id": small.id, "config": small.to_dict(),
                                       "cost": cost.flops(space, small, 10), "score": None, "test_top1": None}])
    path = run_dir.parent / f"selections-{metric}.json"
    path.write_text(json.dumps(body))
    return path


def test_every_file_records_its_measured_cost_and_a_missed_budget_is_one_line(run, tmp_path):  # noqa: F811
    out = tmp_path / "b"
    summary = export_run(run[0], out, "onnx", selections=_selections(run, "latency", 1e-6), **FAST)
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["models"][0]["files"]["onnx"]
    measured = record["measured"]
    assert measured["latency_ms"] == record["latency"]["ms_median"] and measured["bytes"] == (out / record["file"]).stat().st_size
    assert measured["peak_activation_bytes"] == onnx_peak_bytes(out / record["file"]) > 0
    check = record["budget_check"]
    assert check["within"] is False and check["measured"] == measured["latency_ms"] and check["tolerance"] == 0.1
    lines = [line for line in summary.splitlines() if "misses its latency budget" in line]
    assert len(lines) == 1 and record["file"] in lines[0] and manifest["budget_misses"] == lines


def test_strict_refuses_a_missed_budget_and_writes_nothing(run, tmp_path):  # noqa: F811
    out = tmp_path / "b"
    with pytest.raises(MatchnasError, match=r"misses its latency budget.*--strict.*nothing written"):
        export_run(run[0], out, "onnx", selections=_selections(run, "latency", 1e-6), strict=True, **FAST)
    assert not out.exists()


def test_a_budget_the_file_meets_passes_strict(run, tmp_path):  # noqa: F811
    out = tmp_path / "b"
    export_run(run[0], out, "onnx", selections=_selections(run, "memory", 1e9), strict=True, **FAST)
    record = json.loads((out / "manifest.json").read_text())["models"][0]["files"]["onnx"]
    assert record["budget_check"]["within"] is True and record["budget_check"]["measured"] == record["measured"]["peak_activation_bytes"]


def test_graph_peak_is_at_least_the_cost_model_s_largest_layer(run, tmp_path):  # noqa: F811
    """The file's liveness (no in-place reuse, BN folded) never claims less than one layer's input
    plus output, which is what :func:`matchnas.cost.peak_memory` counts."""
    out = tmp_path / "b"
    export_run(run[0], out, "onnx", subnet="max", **FAST)
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    predicted = model["peak_memory_bytes"]
    measured = model["files"]["onnx"]["measured"]["peak_activation_bytes"]
    assert predicted <= measured <= 3 * predicted


def test_an_int8_file_peak_is_about_a_quarter_of_its_float_peak(run, tmp_path):  # noqa: F811
    """A QDQ file read as an int8 runtime runs it: activations held at 1 byte, not as float copies."""
    out = tmp_path / "b"
    export_run(run[0], out, "onnx", subnet="max", quantize="int8", int8_tolerance=100.0, calibration_images=16, **FAST)
    files = json.loads((out / "manifest.json").read_text())["models"][0]["files"]
    float_peak, int8_peak = (files[k]["measured"]["peak_activation_bytes"] for k in ("onnx", "onnx-int8"))
    assert 0.2 * float_peak <= int8_peak <= 0.35 * float_peak
