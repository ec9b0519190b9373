"""Latency: measurement through both runtimes, the lookup table's shapes, prediction, files."""

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from matchnas import latency
from matchnas.errors import MatchnasError
from matchnas.latency import (
    LatencyTable,
    Part,
    Runner,
    build_lut,
    build_lut_command,
    config_parts,
    enumerate_parts,
    measure_interleaved,
    measure_latency,
    measured_latency_cost,
)
from matchnas.nn import Supernet
from matchnas.space import SearchSpace, StageConfig, SubnetConfig
from matchnas.space_file import load_space, space_from_dict
from tests.conftest import randomize_batch_norms

MICRO_SPACE = {  # 8 part shapes: enough to run the whole build through onnxruntime in a second
    "name": "micro",
    "backbone": "none",
    "resolutions": [16],
    "stem_width": 8,
    "head_width": 16,
    "stages": [
        {"stride": 2, "depth": [1, 2], "width": [8], "kernel": [3, 5], "expand": [1, 2]},
    ],
}


def all_configs(space: SearchSpace):
    """Every config of ``space``, by brute force over each stage's choices."""
    per_stage = []
    for s in space.stages:
        options = []
        for depth, width in itertools.product(s.depths, s.widths):
            if s.per_block:
                blocks = [list(itertools.product(s.kernels[b], s.expands[b])) for b in range(depth)]
                choices = itertools.product(*blocks)
            else:
                choices = (((k, e),) * depth for k, e in itertools.product(s.kernels[0], s.expands[0]))
            for chosen in choices:
                kernel, expand = tuple(k for k, _ in chosen), tuple(e for _, e in chosen)
                options.append(StageConfig(depth, width, kernel, expand))
        per_stage.append(options)
    for resolution in space.resolutions:
        for stages in itertools.product(*per_stage):
            yield SubnetConfig(resolution, tuple(stages))


def synthetic_table(space: SearchSpace, num_classes: int, intercept=0.25, overhead=0.004) -> LatencyTable:
    entries = {p: 0.01 + 1e-6 * (p.in_channels * p.out_channels + p.hidden * p.kernel**2) * p.size
               for p in enumerate_parts(space, num_classes)}  # fmt: skip
    return LatencyTable(space, num_classes, "onnxruntime", 1, entries, intercept, overhead, meta={"note": "synthetic"})


# -- measurement ----------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_measure_latency_returns_positive_finite_median(tiny_supernet, tiny_space, runtime):
    static = tiny_supernet.extract(tiny_space.min())
    threads_before = torch.get_num_threads()
    ms = measure_latency(static, tiny_space.min().resolution, runtime, warmup=2, repeats=5, threads=1)
    assert math.isfinite(ms) and ms > 0
    assert torch.get_num_threads() == threads_before  # the torch runtime restores the thread count


def test_onnx_model_used_for_timing_gives_the_module_logits(tiny_supernet, tiny_space, rng):
    config = tiny_space.sample(rng)
    static = tiny_supernet.extract(config).eval()
    runner = Runner(static, (2, 3, config.resolution, config.resolution), "onnxruntime")
    x = torch.randn(2, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = static(x).numpy()
    assert not static.training  # export must not leave the module in training mode
    assert np.abs(runner.outputs(x.numpy()) - expected).max() < 1e-4


@pytest.mark.parametrize("resolution", [24, 28, 32])
def test_onnx_model_of_a_same_padded_lite0_subnet_gives_the_module_logits(resolution):
    space = load_space("efficientnet-lite0")  # TensorFlow "same" padding
    torch.manual_seed(0)
    supernet = Supernet(space, num_classes=10, bn_eps=1e-3)
    randomize_batch_norms(supernet, torch.Generator().manual_seed(0))
    config = replace(space.sample(np.random.default_rng(resolution)), resolution=resolution)
    static = supernet.eval().extract(config).eval()
    runner = Runner(static, (2, 3, resolution, resolution), "onnxruntime")
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = static(x).numpy()
    assert np.abs(runner.outputs(x.numpy()) - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("kind", ["stem", "block", "head"])
def test_part_modules_run_at_their_input_shape_in_onnxruntime(tiny_space, kind, padding):
    space = replace(tiny_space, padding=padding)
    part = next(p for p in enumerate_parts(space, 5) if p.kind == kind and p.stride != 1)
    assert part.padding == padding
    module = part.module()
    runner = Runner(module, part.input_shape, "onnxruntime")
    x = np.random.default_rng(0).standard_normal(part.input_shape).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert np.abs(runner.outputs(x) - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_measure_interleaved_runs_every_runner_once_per_round_and_keeps_the_fastest():
    class Fake:
        def __init__(self, times, log, name):
            self.times, self.log, self.name = iter(times), log, name

        def median_ms(self, warmup, repeats):
            self.log.append(self.name)
            return next(self.times)

    log = []
    runners = [Fake([3.0, 1.0, 2.0], log, "a"), Fake([5.0, 6.0, 4.0], log, "b")]
    assert measure_interleaved(runners, warmup=1, repeats=1, rounds=3) == [1.0, 4.0]
    assert log == ["a", "b"] * 3  # interleaved, so a burst of load spoils one round, not one runner


def test_unknown_runtime_raises_naming_the_allowed_ones(tiny_supernet, tiny_space):
    static = tiny_supernet.extract(tiny_space.min())
    with pytest.raises(MatchnasError, match="onnxruntime, torch"):
        measure_latency(static, 16, runtime="tflite")
    with pytest.raises(MatchnasError, match="unknown latency runtime"):
        build_lut(tiny_space, 5, runtime="tflite")


def test_measured_latency_cost_measures_each_config_once(tiny_supernet, tiny_space, monkeypatch):
    calls = []
    monkeypatch.setattr(latency.measure, "measure_latency", lambda module, resolution, *args: calls.append(resolution) or 1.5)
    cost_fn = measured_latency_cost(tiny_supernet, "torch")
    config = tiny_space.max()
    same = SubnetConfig.from_dict(json.loads(config.to_json()))
    assert cost_fn(config) == cost_fn(same) == 1.5
    assert calls == [config.resolution]


# -- the table's shapes ---------------------------------------------------------------------------
def test_enumerate_parts_finds_exactly_the_distinct_shapes_of_all_configs(tiny_space):
    enumerated = enumerate_parts(tiny_space, 5)
    assert len(enumerated) == len(set(enumerated))
    seen = set()
    for config in all_configs(tiny_space):
        seen.update(config_parts(tiny_space, config, 5))
    assert set(enumerated) == seen
    # by hand: 2 stems; stage 0: 2 sizes x 2 widths x 2 kernels = 8; stage 1 block 0: 2 sizes x
    # 2 x 2 widths x 2 expands x 2 kernels = 32, blocks 1-2: 2 sizes x 2 widths x 2 x 3 = 24
    # (block 2's kernel-3 shapes repeat block 1's); stage 2: 32 + 16; heads: 2 widths x 2 sizes = 4
    assert len(enumerated) == 2 + 8 + 32 + 24 + 32 + 16 + 4 == 118


def test_config_parts_follow_the_extracted_module(tiny_supernet, tiny_space, rng):
    config = tiny_space.sample(rng)
    static = tiny_supernet.extract(config)
    parts = config_parts(tiny_space, config, 5)
    assert [p.kind for p in parts] == ["stem"] + ["block"] * len(static.blocks) + ["head"]
    for part, block in zip(parts[1:-1], static.blocks):
        first = block.conv_pw if block.conv_pw is not None else block.conv_dw
        assert (part.in_channels, part.out_channels) == (first.in_channels, block.conv_pwl.out_channels)
        assert (part.hidden, part.kernel, part.stride) == (block.conv_dw.in_channels, *block.conv_dw.kernel_size[:1],
                                                           block.conv_dw.stride[0])  # fmt: skip
        assert (part.residual, part.expansion) == (block.residual, block.conv_pw is not None)


# -- prediction -----------------------------------------------------------------------------------
def test_predict_is_a_pure_function_equal_to_the_sum_of_entries(tiny_space, rng, monkeypatch):
    table = synthetic_table(tiny_space, 5)
    monkeypatch.setattr(latency.table, "Runner", None)  # predicting must never build or run a network
    monkeypatch.setattr(latency.measure, "Runner", None)
    for config in [tiny_space.sample(rng) for _ in range(5)] + [tiny_space.max(), tiny_space.min()]:
        parts = config_parts(tiny_space, config, 5)
        expected = 0.25 + sum(table.entries[p] - 0.004 for p in parts)
        same = SubnetConfig.from_dict(json.loads(config.to_json()))
        assert table.predict(config) == pytest.approx(expected, rel=1e-12)
        assert table.predict(config) == table.predict(same) == table(config)


def test_calibration_with_one_part_count_fits_the_intercept_only(tiny_space):
    table = synthetic_table(tiny_space, 5, intercept=0.0, overhead=0.0)
    config = tiny_space.max()
    fitted = table.calibrated([(config, table.parts_sum(config)[0] + 0.5)])
    assert (fitted.intercept_ms, fitted.overhead_ms) == (pytest.approx(0.5), 0.0)


def test_calibration_recovers_intercept_and_per_part_overhead(tiny_space, rng):
    table = synthetic_table(tiny_space, 5, intercept=0.0, overhead=0.0)
    configs = [tiny_space.max(), tiny_space.min()] + [tiny_space.sample(rng) for _ in range(6)]
    measured = [(c, 0.3 + table.parts_sum(c)[0] - 0.002 * table.parts_sum(c)[1]) for c in configs]
    fitted = table.calibrated(measured)
    assert fitted.intercept_ms == pytest.approx(0.3) and fitted.overhead_ms == pytest.approx(0.002)
    assert all(fitted.predict(c) == pytest.approx(ms) for c, ms in measured)
    assert len(fitted.meta["calibration"]) == len(configs)


def test_predict_raises_for_a_shape_the_table_lacks(tiny_space):
    table = synthetic_table(tiny_space, 5)
    missing = config_parts(tiny_space, tiny_space.max(), 5)[2]
    entries = {p: ms for p, ms in table.entries.items() if p != missing}
    with pytest.raises(MatchnasError, match="no entry for block"):
        replace(table, entries=entries).predict(tiny_space.max())


# -- files ----------------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_every_prediction(tiny_space, rng, tmp_path):
    table = synthetic_table(tiny_space, 5)
    table.save(tmp_path / "lut.json")
    loaded = LatencyTable.load(tmp_path / "lut.json", tiny_space)
    assert loaded.entries == table.entries and loaded.meta == table.meta
    assert (loaded.runtime, loaded.threads, loaded.num_classes) == ("onnxruntime", 1, 5)
    for config in [tiny_space.sample(rng) for _ in range(5)]:
        assert loaded.predict(config) == table.predict(config)
    data = json.loads((tmp_path / "lut.json").read_text())
    assert data["space_digest"] == tiny_space.digest and data["unit"] == "ms"


def test_loading_a_table_made_for_another_space_raises(tiny_space, tmp_path):
    synthetic_table(tiny_space, 5).save(tmp_path / "lut.json")
    other = space_from_dict({**tiny_space.to_dict(), "resolutions": [16, 24]})
    with pytest.raises(MatchnasError, match="made for space 'tiny'"):
        LatencyTable.load(tmp_path / "lut.json", other)


def test_loading_a_file_that_is_not_a_table_raises(tiny_space, tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(MatchnasError, match="not a matchnas latency table"):
        LatencyTable.load(tmp_path / "x.json", tiny_space)
    with pytest.raises(MatchnasError, match="not found"):
        LatencyTable.load(tmp_path / "missing.json", tiny_space)


# -- building -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_build_lut_times_every_shape_and_calibrates(runtime):
    space = space_from_dict(MICRO_SPACE)
    table = build_lut(space, 3, runtime, warmup=1, repeats=3, rounds=1, calibration=3, progress=False)
    assert set(table.entries) == set(enumerate_parts(space, 3))
    assert all(math.isfinite(ms) and ms > 0 for ms in table.entries.values())
    assert math.isfinite(table.intercept_ms) and math.isfinite(table.overhead_ms)
    assert table.meta["machine"]["versions"]["torch"] == torch.__version__
    assert table.meta["build"]["parts"] == len(table.entries)


def test_build_lut_command_saves_the_table_and_summarises_it(tmp_path, monkeypatch):
    space = space_from_dict(MICRO_SPACE)
    fast = build_lut
    monkeypatch.setattr(latency.table, "build_lut", lambda *a, **k: fast(*a, warmup=1, repeats=3, rounds=1, progress=False))
    summary = build_lut_command(space, 3, "torch", tmp_path / "lut.json")
    assert LatencyTable.load(tmp_path / "lut.json", space).runtime == "torch"
    assert f"{len(enumerate_parts(space, 3))} part shapes" in summary and "lut.json" in summary


def test_part_is_printable_and_orderable():
    part = Part("block", 8, 8, 4, 16, 3, 1, True, True)
    assert str(part) == "block 8>16>8 k3 s1 @4px+res"
    assert min(part, Part("stem", 3, 8, 16)).kind == "block"


def test_int8_lut_times_static_int8_parts_and_keeps_its_precision_on_disk(tmp_path):
    space = space_from_dict(MICRO_SPACE)
    table = build_lut(space, 3, "onnxruntime", warmup=1, repeats=3, rounds=1, calibration=3, progress=False, quantize="int8")
    assert table.precision == "int8" and set(table.entries) == set(enumerate_parts(space, 3))
    table.save(tmp_path / "lut.json")
    assert LatencyTable.load(tmp_path / "lut.json", space).precision == "int8"
    assert json.loads((tmp_path / "lut.json").read_text())["precision"] == "int8"
    part = max(table.entries)  # the int8 runner really runs a quantized graph: its outputs are close, not equal
    module = part.module()
    x = torch.randn(*part.input_shape).numpy()
    fp32, int8 = Runner(module, part.input_shape, "onnxruntime"), Runner(module, part.input_shape, "onnxruntime", quantize="int8")
    diff = np.abs(fp32.outputs(x) - int8.outputs(x)).max()
    assert 0 < diff < 0.2 * np.abs(fp32.outputs(x)).max()


def test_int8_latency_needs_onnxruntime_and_a_known_precision():
    space = space_from_dict(MICRO_SPACE)
    with pytest.raises(MatchnasError, match="int8 latency is timed in onnxruntime"):
        build_lut(space, 3, "torch", quantize="int8")
    with pytest.raises(MatchnasError, match="unknown --quantize 'int4'"):
        build_lut(space, 3, "onnxruntime", quantize="int4")
