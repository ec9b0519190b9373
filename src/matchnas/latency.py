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
pure function of the config (METHOD.md, "Choosing subnets": budget metrics are functions of the
config alone); it never runs a network.

Measured (docs/benchmarks.md, issue 4; Lite0 space at 24-32 px, 1 thread): with onnxruntime 98-100%
of 52 subnets are predicted within +-10% (median |error| 1.0-1.6%); with torch eager 58-92%, no
better than two measurements of the same subnet agree with each other (90%).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_json, check_writable, read_json
from matchnas.nn.blocks import MBConv, hidden_channels
from matchnas.nn.ops import static_conv2d
from matchnas.space import SearchSpace, SubnetConfig

RUNTIMES = ("onnxruntime", "torch")
FORMAT = "matchnas-latency-table/1"


# -- the shapes a subnet is made of ---------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Part:
    """One timed piece of a subnet; ``size`` is the input side in pixels.

    ``kind`` is ``"stem"`` (conv 3x3 stride 2 + BN + ReLU6), ``"block"`` (an MBConv:
    ``in_channels -> hidden -> out_channels``, depthwise ``kernel``/``stride``, with a 1x1
    expansion conv when ``expansion``, a residual addition when ``residual``) or ``"head"``
    (conv 1x1 to ``out_channels`` + BN + ReLU6, global average pool, linear to ``classes``).
    Fields a kind does not use are 0 / False. ``padding`` is the space's convention ("same" adds an
    explicit pad before strided convs, so it is timed).
    """

    kind: str
    in_channels: int
    out_channels: int
    size: int
    hidden: int = 0
    kernel: int = 0
    stride: int = 0
    residual: bool = False
    expansion: bool = False
    classes: int = 0
    padding: str = "symmetric"

    def __str__(self) -> str:
        if self.kind == "block":
            extra = ("+res" if self.residual else "") + ("" if self.expansion else " no-pw")
            return (
                f"block {self.in_channels}>{self.hidden}>{self.out_channels} k{self.kernel} "
                f"s{self.stride} @{self.size}px{extra}"
            )
        return f"{self.kind} {self.in_channels}>{self.out_channels} @{self.size}px"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.size, self.size)

    def module(self) -> nn.Module:
        """A standalone eval-mode module of this shape with random weights."""

        def conv_bn(cin, cout, k=1, stride=1, groups=1):
            return static_conv2d(cin, cout, k, stride, groups, self.padding), nn.BatchNorm2d(cout)

        if self.kind == "stem":
            module = nn.Sequential(*conv_bn(self.in_channels, self.out_channels, 3, 2), nn.ReLU6())
        elif self.kind == "head":
            module = nn.Sequential(
                *conv_bn(self.in_channels, self.out_channels), nn.ReLU6(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(self.out_channels, self.classes),
            )  # fmt: skip
        else:
            pw = conv_bn(self.in_channels, self.hidden) if self.expansion else (None, None)
            dw = conv_bn(self.hidden, self.hidden, self.kernel, self.stride, groups=self.hidden)
            module = MBConv(*pw, *dw, *conv_bn(self.hidden, self.out_channels), residual=self.residual)
        return module.eval()


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel k, padding k // 2 or "same" (as in matchnas.cost)


def enumerate_parts(space: SearchSpace, num_classes: int, in_chans: int = 3) -> list[Part]:
    """Every distinct part shape any config of ``space`` has, walked from the space's choices
    (not sampled), sorted. Blocks at different positions or resolutions with equal shapes count once."""
    parts: set[Part] = set()
    for resolution in space.resolutions:
        parts.add(Part("stem", in_chans, space.stem_width, resolution, padding=space.padding))
        size, widths_in = _out_size(resolution, 2), (space.stem_width,)
        for s in space.stages:
            size_out = _out_size(size, s.stride)
            for b in range(s.max_depth):
                expansion = max(s.expands[b]) != 1
                pairs = [(i, o) for i in widths_in for o in s.widths] if b == 0 else [(w, w) for w in s.widths]
                for (cin, cout), e, k in itertools.product(pairs, s.expands[b], s.kernels[b]):
                    hidden = hidden_channels(cin, e) if expansion else cin
                    stride, at = (s.stride, size) if b == 0 else (1, size_out)
                    parts.add(Part("block", cin, cout, at, hidden, k, stride, b > 0, expansion, padding=space.padding))
            size, widths_in = size_out, s.widths
        for cin in widths_in:
            parts.add(Part("head", cin, space.head_width, size, classes=num_classes, padding=space.padding))
    return sorted(parts)


def config_parts(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3) -> list[Part]:
    """The parts of subnet ``config`` in execution order, read off :func:`matchnas.cost.layers`
    (the subnet's exact layer list), so the table and the other cost models agree."""
    layers = cost.layers(space, config, num_classes, in_chans)
    by_name = {layer.name: layer for layer in layers}
    stem, head = by_name["stem"], by_name["head"]
    parts = [Part("stem", stem.in_channels, stem.out_channels, stem.size_in, padding=space.padding)]
    blocks = dict.fromkeys(name.rsplit(".", 1)[0] for name in by_name if name.startswith("stages."))
    for block in blocks:
        pw, dw, pwl = by_name.get(f"{block}.conv_pw"), by_name[f"{block}.conv_dw"], by_name[f"{block}.conv_pwl"]
        first = pw or dw
        residual = int(block.rsplit(".", 1)[1]) > 0  # every block of a stage but the first
        parts.append(
            Part("block", first.in_channels, pwl.out_channels, first.size_in, dw.in_channels, dw.kernel,
                 dw.stride, residual, pw is not None, padding=space.padding)
        )  # fmt: skip
    classes = by_name["classifier"].out_channels
    parts.append(Part("head", head.in_channels, head.out_channels, head.size_in, classes=classes, padding=space.padding))
    return parts


# -- timing ---------------------------------------------------------------------------------------
def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise MatchnasError(f"unknown latency runtime '{runtime}'; allowed: {', '.join(RUNTIMES)}")


def _threads(threads: int | None) -> int:
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
    optimisations (BN folded into convs, conv + clip fused, NCHWc layouts)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], runtime: str, threads: int | None = None):
        _check_runtime(runtime)
        self.runtime, self.threads = runtime, _threads(threads)
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
    _check_runtime(runtime)
    if repeats < 1 or warmup < 0:
        raise MatchnasError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    return Runner(module, (1, in_chans, resolution, resolution), runtime, threads).median_ms(warmup, repeats)


def measured_latency_cost(
    supernet: nn.Module, runtime: str = "onnxruntime", threads: int | None = None, warmup: int = 20, repeats: int = 200
) -> Callable[[SubnetConfig], float]:
    """A cost function config -> ms that extracts the subnet and measures it (cached per config).

    Latency depends on shapes, not on weight values, so no BN recalibration is needed."""
    _check_runtime(runtime)
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


def _load_average() -> float | None:
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


# -- the lookup table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyTable:
    """Latency in ms of every part shape of ``space`` on one machine and runtime, plus the
    calibration ``intercept_ms`` and per-part ``overhead_ms`` (see the module docstring).

    ``predict(config)`` (also ``table(config)``) is a pure function of the config."""

    space: SearchSpace
    num_classes: int
    runtime: str
    threads: int
    entries: dict[Part, float]
    intercept_ms: float = 0.0
    overhead_ms: float = 0.0
    in_chans: int = 3
    meta: dict[str, Any] | None = None

    def parts_sum(self, config: SubnetConfig) -> tuple[float, int]:
        """The sum of the table's entries for ``config``'s parts (ms) and the number of parts."""
        parts = config_parts(self.space, config, self.num_classes, self.in_chans)
        total = 0.0
        for part in parts:
            if part not in self.entries:
                raise MatchnasError(
                    f"latency table has no entry for {part} (config {config.id}); "
                    f"rebuild it for space '{self.space.name}' with {self.num_classes} classes"
                )
            total += self.entries[part]
        return total, len(parts)

    def predict(self, config: SubnetConfig) -> float:
        """Predicted latency of ``config`` in ms: intercept + sum(entry - overhead)."""
        total, n = self.parts_sum(config)
        return self.intercept_ms + total - self.overhead_ms * n

    __call__ = predict

    def calibrated(self, measured: list[tuple[SubnetConfig, float]]) -> LatencyTable:
        """A copy with ``intercept_ms`` and ``overhead_ms`` fitted on configs measured whole:
        ``measured - sum(entries) = intercept - overhead * n_parts``, by least squares on the
        *relative* error (each row weighted by 1 / measured), the error the predictor is judged by;
        an absolute fit lets the largest configs decide and misses the smallest by 10-20%. With
        one distinct part count only the intercept is fitted."""
        if not measured:
            raise MatchnasError("calibration needs at least one measured config")
        sums = [self.parts_sum(config) for config, _ in measured]
        gap = np.array([ms - s for (_, ms), (s, _) in zip(measured, sums)])
        n = np.array([float(k) for _, k in sums])
        weight = 1.0 / np.array([ms for _, ms in measured])
        design = np.stack([np.ones_like(n), -n], axis=1) if len(set(n)) > 1 else np.ones((len(n), 1))
        solution = np.linalg.lstsq(design * weight[:, None], gap * weight, rcond=None)[0]
        intercept, overhead = float(solution[0]), float(solution[1]) if len(solution) > 1 else 0.0
        meta = dict(self.meta or {})
        meta["calibration"] = [
            {"config": c.to_dict(), "measured_ms": ms, "parts_sum_ms": s, "parts": k}
            for (c, ms), (s, k) in zip(measured, sums)
        ]
        return LatencyTable(
            self.space, self.num_classes, self.runtime, self.threads, self.entries,
            intercept, overhead, self.in_chans, meta,
        )  # fmt: skip

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "space": self.space.name,
            "space_digest": self.space.digest,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "runtime": self.runtime,
            "threads": self.threads,
            "batch": 1,
            "unit": "ms",
            "intercept_ms": self.intercept_ms,
            "overhead_ms": self.overhead_ms,
            "meta": self.meta or {},
            "entries": [{**asdict(part), "ms": ms} for part, ms in sorted(self.entries.items())],
        }

    def save(self, path: str | Path) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> LatencyTable:
        """Read a table saved by :meth:`save`; refuse one made for another space."""
        data = read_json(path, "latency table")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise MatchnasError(f"{path}: not a matchnas latency table (expected format {FORMAT})")
        if data.get("space_digest") != space.digest:
            raise MatchnasError(
                f"{path}: made for space '{data.get('space')}' ({data.get('space_digest')}), "
                f"not for '{space.name}' ({space.digest})"
            )
        names = {f.name for f in fields(Part)} - {"padding"}  # tables made before it are symmetric
        try:
            entries = {Part(**{k: e[k] for k in names}, padding=e.get("padding", "symmetric")): float(e["ms"])
                       for e in data["entries"]}
            return cls(
                space, int(data["num_classes"]), data["runtime"], int(data["threads"]), entries,
                float(data["intercept_ms"]), float(data["overhead_ms"]), int(data["in_chans"]), data["meta"],
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise MatchnasError(f"{path}: malformed latency table ({err!r})") from None


def build_lut(
    space: SearchSpace,
    num_classes: int,
    runtime: str = "onnxruntime",
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 100,
    rounds: int = 3,
    calibration: int = 20,
    seed: int = 0,
    in_chans: int = 3,
    progress: bool = True,
) -> LatencyTable:
    """Time every part shape of ``space`` (:func:`enumerate_parts`) on this machine, then fit the
    intercept and per-part overhead on ``calibration`` whole configs (max, min, then random ones
    drawn with ``seed``; at least one) of a random-weight supernet: latency depends on shapes, not on
    weight values. Parts and whole configs are timed alike, by :func:`measure_interleaved`."""
    from matchnas.nn import Supernet  # needed to build a table, not to predict

    _check_runtime(runtime)
    threads = _threads(threads)
    start = time.perf_counter()
    parts = enumerate_parts(space, num_classes, in_chans)
    torch.manual_seed(seed)
    load_before = _load_average()
    prepare = tqdm(parts, "export parts", disable=not progress)
    runners = [Runner(p.module(), p.input_shape, runtime, threads) for p in prepare]
    with tqdm(total=len(parts) * rounds, desc=f"time parts ({runtime})", disable=not progress) as bar:
        times = measure_interleaved(runners, warmup, repeats, rounds, bar)
    del runners
    table = LatencyTable(space, num_classes, runtime, threads, dict(zip(parts, times)), in_chans=in_chans)
    rng = np.random.default_rng(seed)
    configs = [space.max(), space.min()] + [space.sample(rng) for _ in range(max(calibration - 2, 0))]
    configs = list(dict.fromkeys(configs))[: max(calibration, 1)]
    supernet = Supernet(space, num_classes, in_chans).eval()
    whole = [Runner(supernet.extract(c), (1, in_chans, c.resolution, c.resolution), runtime, threads) for c in configs]
    # whole subnets are timed exactly as the parts were, so the fit sees one measurement protocol
    with tqdm(total=len(whole) * rounds, desc="calibrate", disable=not progress) as bar:
        measured = measure_interleaved(whole, warmup, repeats, rounds, bar)
    table = table.calibrated(list(zip(configs, measured)))
    table.meta.update(
        machine=machine_description(),
        build={"seconds": round(time.perf_counter() - start, 1), "warmup": warmup, "repeats": repeats,
               "rounds": rounds, "seed": seed, "parts": len(parts),
               "load_average_1m": [load_before, _load_average()]},
    )  # fmt: skip
    return table


def build_lut_command(
    space: SearchSpace | str, num_classes: int, runtime: str, out_path: str | Path, threads: int | None = None
) -> str:
    """``matchnas latency build``: build, save, and return a one-paragraph summary."""
    from matchnas.space import load_space

    space = load_space(space) if isinstance(space, str) else space
    _check_runtime(runtime)
    check_writable(out_path, "--out")
    table = build_lut(space, num_classes, runtime, threads)
    table.save(out_path)
    kinds = {k: sum(p.kind == k for p in table.entries) for k in ("stem", "block", "head")}
    calibration = [(SubnetConfig.from_dict(c["config"]), c["measured_ms"]) for c in table.meta["calibration"]]
    errors = [abs(table.predict(config) / ms - 1) * 100 for config, ms in calibration]
    machine = table.meta["machine"]
    return (
        f"Latency table for space '{space.name}' ({space.digest}), {num_classes} classes: "
        f"{len(table.entries)} part shapes ({kinds['stem']} stems, {kinds['block']} blocks, "
        f"{kinds['head']} heads) "
        f"timed with {runtime} at batch 1, {table.threads} intra-op thread(s), on {machine['cpu']} "
        f"({machine['cpu_count']} cores) in {table.meta['build']['seconds']:.0f} s. Calibrated on "
        f"{len(errors)} whole configs: intercept {table.intercept_ms:.4f} ms, per-part overhead "
        f"{table.overhead_ms:.4f} ms, in-sample |error| median {statistics.median(errors):.1f}% "
        f"(max {max(errors):.1f}%). "
        f"Predicted min/max subnet: {table.predict(space.min()):.3f} / {table.predict(space.max()):.3f} ms. "
        f"Saved to {out_path}."
    )
