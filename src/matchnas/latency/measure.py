"""Timing a module on this machine: batch 1, the median of repeated runs after warm-up, through
onnxruntime or eager torch, with an explicit thread count (see :mod:`matchnas.latency`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from matchnas.errors import MatchnasError
from matchnas.space import SubnetConfig

RUNTIMES = ("onnxruntime", "torch")
PRECISIONS = ("float32", "int8")


def check_precision(runtime: str, quantize: str | None) -> str:
    """The precision a runner times: ``"float32"``, or ``"int8"`` (static QDQ, onnxruntime only)."""
    precision = "float32" if quantize in (None, "float32") else str(quantize)
    if precision not in PRECISIONS:
        raise MatchnasError(f"unknown --quantize '{quantize}': choose from int8")
    if precision == "int8" and runtime != "onnxruntime":
        raise MatchnasError(f"int8 latency is timed in onnxruntime (static QDQ), not in {runtime}")
    return precision


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise MatchnasError(f"unknown latency runtime '{runtime}'; allowed: {', '.join(RUNTIMES)}")


def thread_count(threads: int | None) -> int:
    if threads is None:
        return 1
    if not isinstance(threads, int) or threads < 1:
        raise MatchnasError(f"threads must be a positive integer, got {threads!r}")
    return threads


@contextlib.contextmanager
def _torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Runner:
    """A module ready to run on a fixed random input of ``input_shape`` through ``runtime``.

    ``runner()`` runs once on the fixed input (what is timed); ``runner.outputs(x)`` returns the
    output for ``x`` (a NumPy array), for parity checks. For onnxruntime the module is exported to a
    temporary ONNX file (deleted once the session has loaded it) and the session uses exactly
    ``threads`` intra-op threads and one inter-op thread, sequential execution, all graph
    optimisations (BN folded into convs, conv + clip fused, NCHWc layouts). With ``quantize="int8"``
    the ONNX file is first quantized as ``matchnas export --quantize int8`` does (static QDQ,
    per-channel weights), its ranges calibrated on random inputs: the int8 kernels' speed depends
    on shapes, not on the ranges."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], runtime: str, threads: int | None = None,
                 quantize: str | None = None):
        check_runtime(runtime)
        self.precision = check_precision(runtime, quantize)
        self.runtime, self.threads = runtime, thread_count(threads)
        module = module.eval()
        self.x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        if runtime == "torch":
            self.module = module
            return
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="matchnas-latency-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (self.x,), path, input_names=["images"], output_names=["logits"],
                    dynamic_axes={"images": {0: "batch"}}, dynamo=False,
                )  # fmt: skip
            if self.precision == "int8":
                from matchnas.onnx_int8 import quantize_onnx_file  # onnx and onnxruntime's quantizer only when needed

                calibration = torch.randn(8, *input_shape[1:], generator=torch.Generator().manual_seed(1)).numpy()
                quantize_onnx_file(path, os.path.join(tmp, "int8.onnx"), calibration)
                path = os.path.join(tmp, "int8.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        module.eval()  # the exporter restores the mode it found, recursively
        self.feed = {"images": self.x.numpy()}

    def __call__(self) -> None:
        if self.runtime == "torch":
            with torch.inference_mode():
                self.module(self.x)
        else:
            self.session.run(None, self.feed)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "torch":
            with torch.inference_mode(), _torch_threads(self.threads):
                return self.module(torch.from_numpy(x)).numpy()
        return self.session.run(None, {"images": x.astype(np.float32)})[0]

    def median_ms(self, warmup: int, repeats: int) -> float:
        """Median wall time of one run in ms, after ``warmup`` runs (garbage collection paused)."""
        with _torch_threads(self.threads) if self.runtime == "torch" else contextlib.nullcontext():
            for _ in range(warmup):
                self()
            times = []
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                for _ in range(repeats):
                    start = time.perf_counter_ns()
                    self()
                    times.append(time.perf_counter_ns() - start)
            finally:
                if gc_was_on:
                    gc.enable()
        return statistics.median(times) / 1e6


def measure_latency(
    module: nn.Module,
    resolution: int,
    runtime: str = "onnxruntime",
    warmup: int = 20,
    repeats: int = 200,
    threads: int | None = None,
    in_chans: int = 3,
) -> float:
    """Median latency in ms of ``module`` on one ``1 x in_chans x resolution x resolution`` input
    (see the module docstring for the runtimes; ``threads=None`` means 1 intra-op thread)."""
    check_runtime(runtime)
    if repeats < 1 or warmup < 0:
        raise MatchnasError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    return Runner(module, (1, in_chans, resolution, resolution), runtime, threads).median_ms(warmup, repeats)


def measured_latency_cost(
    supernet: nn.Module, runtime: str = "onnxruntime", threads: int | None = None, warmup: int = 20, repeats: int = 200
) -> Callable[[SubnetConfig], float]:
    """A cost function config -> ms that extracts the subnet and measures it (cached per config).

    Latency depends on shapes, not on weight values, so no BN recalibration is needed."""
    check_runtime(runtime)
    cache: dict[SubnetConfig, float] = {}

    def latency(config: SubnetConfig) -> float:
        if config not in cache:
            static = supernet.extract(config).eval()
            in_chans = getattr(supernet, "in_chans", 3)
            cache[config] = measure_latency(static, config.resolution, runtime, warmup, repeats, threads, in_chans)
        return cache[config]

    return latency


def measure_interleaved(
    runners: list[Runner], warmup: int, repeats: int, rounds: int, bar: tqdm | None = None
) -> list[float]:
    """Each runner's latency in ms: ``rounds`` interleaved rounds (every runner once per round),
    each a ``repeats``-run median after ``warmup`` runs; the result is the fastest round's median.
    Other processes on the machine only ever add time, and a burst of their load then spoils one
    round of a few runners, not the result."""
    per_round: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            per_round[i].append(runner.median_ms(warmup, repeats))
            if bar is not None:
                bar.update()
    return [min(times) for times in per_round]


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): above the core count, other
    processes preempt the timed one and long runs read slow."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_description() -> dict[str, Any]:
    """Where a table was built: ``platform`` fields, the CPU model and count, library versions."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }
