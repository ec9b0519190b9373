"""The latency lookup table: every part shape of a space timed once, a calibration fit, and the
pure prediction ``intercept + sum(entry - overhead)`` (see :mod:`matchnas.latency`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_json, check_writable, read_json
from matchnas.latency.measure import Runner, check_precision, check_runtime, load_average, thread_count, machine_description, measure_interleaved
from matchnas.latency.parts import Part, config_parts, enumerate_parts
from matchnas.space import SearchSpace, SubnetConfig

FORMAT = "matchnas-latency-table/1"


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
    precision: str = "float32"  # "int8": parts timed as static int8 models (build --quantize int8)

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
            intercept, overhead, self.in_chans, meta, self.precision,
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
            "precision": self.precision,
            "threads": self.threads,
            "batch": 1,
            "unit": "ms",
            "intercept_ms": self.intercept_ms,
            "overhead_ms": self.overhead_ms,
            "meta": self.meta or {},
            "entries": [{**_part_dict(part), "ms": ms} for part, ms in sorted(self.entries.items())],
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
        names = {f.name for f in fields(Part)} - {"padding", "act", "se", "features"}  # older tables: their defaults
        try:
            entries = {Part(**{k: e[k] for k in names}, padding=e.get("padding", "symmetric"), act=e.get("act", "relu6"),
                            se=float(e.get("se", 0.0)), features=int(e.get("features", 0))): float(e["ms"])
                       for e in data["entries"]}
            return cls(
                space, int(data["num_classes"]), data["runtime"], int(data["threads"]), entries,
                float(data["intercept_ms"]), float(data["overhead_ms"]), int(data["in_chans"]), data["meta"],
                str(data.get("precision", "float32")),  # tables made before int8 are float32
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
    quantize: str | None = None,
) -> LatencyTable:
    """Time every part shape of ``space`` (:func:`enumerate_parts`) on this machine, then fit the
    intercept and per-part overhead on ``calibration`` whole configs (max, min, then random ones
    drawn with ``seed``; at least one) of a random-weight supernet: latency depends on shapes, not on
    weight values. Parts and whole configs are timed alike, by :func:`measure_interleaved`.
    ``quantize="int8"``: parts and calibration configs are timed as static int8 ONNX models."""
    from matchnas.nn import Supernet  # needed to build a table, not to predict

    check_runtime(runtime)
    precision = check_precision(runtime, quantize)
    threads = thread_count(threads)
    start = time.perf_counter()
    parts = enumerate_parts(space, num_classes, in_chans)
    torch.manual_seed(seed)
    load_before = load_average()
    prepare = tqdm(parts, "export parts", disable=not progress)
    runners = [Runner(p.module(), p.input_shape, runtime, threads, quantize) for p in prepare]
    with tqdm(total=len(parts) * rounds, desc=f"time parts ({runtime})", disable=not progress) as bar:
        times = measure_interleaved(runners, warmup, repeats, rounds, bar)
    del runners
    table = LatencyTable(space, num_classes, runtime, threads, dict(zip(parts, times)), in_chans=in_chans, precision=precision)
    rng = np.random.default_rng(seed)
    configs = [space.max(), space.min()] + [space.sample(rng) for _ in range(max(calibration - 2, 0))]
    configs = list(dict.fromkeys(configs))[: max(calibration, 1)]
    # random weights, timed only: the BN epsilon changes no arithmetic (the exports fold BN into
    # the convolutions); 1e-5, as the parts' nn.BatchNorm2d
    supernet = Supernet(space, num_classes, in_chans, bn_eps=1e-5).eval()
    whole = [Runner(supernet.extract(c), (1, in_chans, c.resolution, c.resolution), runtime, threads, quantize)
             for c in configs]
    # whole subnets are timed exactly as the parts were, so the fit sees one measurement protocol
    with tqdm(total=len(whole) * rounds, desc="calibrate", disable=not progress) as bar:
        measured = measure_interleaved(whole, warmup, repeats, rounds, bar)
    table = table.calibrated(list(zip(configs, measured)))
    table.meta.update(
        machine=machine_description(),
        build={"seconds": round(time.perf_counter() - start, 1), "warmup": warmup, "repeats": repeats,
               "rounds": rounds, "seed": seed, "parts": len(parts),
               "load_average_1m": [load_before, load_average()]},
    )  # fmt: skip
    return table


def build_lut_command(
    space: SearchSpace | str, num_classes: int, runtime: str, out_path: str | Path, threads: int | None = None,
    quantize: str | None = None,
) -> str:
    """``matchnas latency build``: build, save, and return a one-paragraph summary."""
    from matchnas.space_file import load_space

    space = load_space(space) if isinstance(space, str) else space
    check_runtime(runtime)
    check_precision(runtime, quantize)
    check_writable(out_path, "--out", folder=False)
    table = build_lut(space, num_classes, runtime, threads, quantize=quantize)
    table.save(out_path)
    kinds = {k: sum(p.kind == k for p in table.entries) for k in ("stem", "block", "head")}
    calibration = [(SubnetConfig.from_dict(c["config"]), c["measured_ms"]) for c in table.meta["calibration"]]
    errors = [abs(table.predict(config) / ms - 1) * 100 for config, ms in calibration]
    machine = table.meta["machine"]
    return (
        f"Latency table for space '{space.name}' ({space.digest}), {num_classes} classes: "
        f"{len(table.entries)} part shapes ({kinds['stem']} stems, {kinds['block']} blocks, "
        f"{kinds['head']} heads) "
        f"timed with {runtime} ({table.precision}) at batch 1, {table.threads} intra-op thread(s), on {machine['cpu']} "
        f"({machine['cpu_count']} cores) in {table.meta['build']['seconds']:.0f} s. Calibrated on "
        f"{len(errors)} whole configs: intercept {table.intercept_ms:.4f} ms, per-part overhead "
        f"{table.overhead_ms:.4f} ms, in-sample |error| median {statistics.median(errors):.1f}% "
        f"(max {max(errors):.1f}%). "
        f"Predicted min/max subnet: {table.predict(space.min()):.3f} / {table.predict(space.max()):.3f} ms. "
        f"Saved to {out_path}."
    )


def _part_dict(part: Part) -> dict:
    """A part as JSON; squeeze-excite and the MobileNetV3 head only when present, so tables of
    spaces without them are written as before."""
    data = asdict(part)
    for key in ("se", "features"):
        if not data[key]:
            data.pop(key)
    return data
