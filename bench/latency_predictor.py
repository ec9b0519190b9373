"""Lookup-table latency predictor vs whole-model measurement.

Usage: python bench/latency_predictor.py [--space efficientnet-lite0] [--runtime onnxruntime]
       [--configs 50] [--threads 1] [--out runs/latency]

Builds the table (or loads ``OUT/lut-RUNTIME.json`` with ``--reuse``), then measures ``--configs``
random configs (seed 1; the table is calibrated on max, min and draws with seed 0) plus max and min
whole, with the pre-trained Lite0 weights, batch 1, as the fastest of three interleaved rounds' medians
of 200 runs (:func:`matchnas.latency.measure_interleaved`, as the table itself is timed).
Then measures them all again through new sessions (the noise floor: how well a measurement predicts
a second measurement of the same subnet). Prints a Markdown table of the predictor's |error| and
writes every measurement to ``OUT/eval-RUNTIME.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from matchnas import cost
from matchnas.convert import from_pretrained
from matchnas.latency import LatencyTable, Runner, build_lut, measure_interleaved
from matchnas.space_file import load_space


def _measure(net, named, args) -> list[float]:
    """``named`` configs of ``net`` measured whole (``args.quantize``, when set: as static int8 models)."""
    runners = [
        Runner(net.extract(c).eval(), (1, 3, c.resolution, c.resolution), args.runtime, args.threads,
               getattr(args, "quantize", None))
        for _, c in tqdm(named, "export")
    ]
    with tqdm(total=len(runners) * args.rounds, desc="measure") as bar:
        return measure_interleaved(runners, 20, args.repeats, args.rounds, bar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="efficientnet-lite0")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    parser.add_argument("--configs", type=int, default=50, help="random configs measured whole")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=20, help="whole configs the table is fitted to")
    parser.add_argument("--out", default="runs/latency")
    parser.add_argument("--reuse", action="store_true", help="load the table from OUT instead of building it")
    parser.add_argument("--no-remeasure", dest="remeasure", action="store_false", help="skip the noise floor")
    args = parser.parse_args()
    out = Path(args.out)
    space = load_space(args.space)
    lut_path = out / f"lut-{args.runtime}.json"
    if args.reuse:
        table = LatencyTable.load(lut_path, space)
    else:
        table = build_lut(space, 10, args.runtime, args.threads, calibration=args.calibration)
        table.save(lut_path)
    build = table.meta["build"]

    net = from_pretrained(space.backbone, space=space, num_classes=10).eval()
    rng = np.random.default_rng(1)
    named = [("max", space.max()), ("min", space.min())]
    named += [(f"random {i}", space.sample(rng)) for i in range(args.configs)]
    start, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    measured = _measure(net, named, args)
    # the noise floor: the same configs measured again, through new sessions, a minute later
    remeasured = _measure(net, named, args) if args.remeasure else [float("nan")] * len(named)
    measure_s, load_after = time.perf_counter() - start, round(os.getloadavg()[0], 2)

    rows = []
    for (name, config), ms, again in zip(named, measured, remeasured):
        parts_sum, n = table.parts_sum(config)
        predicted = table.predict(config)
        rows.append(
            {"name": name, "config": config.to_dict(), "measured_ms": ms, "predicted_ms": predicted,
             "parts_sum_ms": parts_sum, "parts": n, "mflops": cost.flops(space, config, 10) / 1e6,
             "error_pct": 100 * (predicted / ms - 1), "remeasured_ms": again}
        )  # fmt: skip
    report = {"table": str(lut_path), "load_average_1m": [load_before, load_after], "rows": rows}
    (out / f"eval-{args.runtime}.json").write_text(json.dumps(report, indent=1))

    machine = table.meta["machine"]
    print(f"python {' '.join(sys.argv)}")
    print(f"{machine['cpu']}, {machine['cpu_count']} cores, {machine['platform']}; {machine['versions']}")
    print(f"runtime {args.runtime}, {table.threads} intra-op thread(s), batch 1, space {space.name}")
    print(
        f"table: {len(table.entries)} part shapes, built in {build['seconds']:.0f} s (warmup {build['warmup']}, "
        f"repeats {build['repeats']}, rounds {build['rounds']}, load average {build['load_average_1m']}); "
        f"intercept {table.intercept_ms:.4f} ms, per-part overhead {table.overhead_ms:.4f} ms"
    )
    print(f"measured {len(rows)} configs whole in {measure_s:.0f} s, load average {load_before} -> {load_after}\n")
    print("| config | MFLOPs | parts | measured ms | predicted ms | error |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows[:2]:
        cells = [r["name"], f"{r['mflops']:.2f}", r["parts"], f"{r['measured_ms']:.4f}", f"{r['predicted_ms']:.4f}"]
        print("| " + " | ".join(map(str, cells)) + f" | {r['error_pct']:+.1f}% |")
    print("\n| predictor | median abs error | p90 abs error | max abs error | within +-10% |")
    print("|---|---:|---:|---:|---:|")
    raw = [abs(100 * (r["parts_sum_ms"] / r["measured_ms"] - 1)) for r in rows]
    calibrated = [abs(r["error_pct"]) for r in rows]
    labelled = [("sum of table entries", raw), ("calibrated (intercept, per-part overhead)", calibrated)]
    if args.remeasure:
        again = [abs(100 * (r["remeasured_ms"] / r["measured_ms"] - 1)) for r in rows]
        labelled.append(("noise floor: 2nd measurement", again))
    for label, e in labelled:
        hits = sum(x <= 10 for x in e)
        print(
            f"| {label} | {statistics.median(e):.1f}% | {np.percentile(e, 90):.1f}% | {max(e):.1f}% "
            f"| {100 * hits / len(e):.0f}% ({hits}/{len(e)}) |"
        )
    ms = [r["measured_ms"] for r in rows]
    print(f"\nmeasured latency range: {min(ms):.4f} - {max(ms):.4f} ms")


if __name__ == "__main__":
    main()
