"""Every export format, float32 and int8, for a trained run's picks, checked on the files; the latency
table's predictions against the files; the microcontroller pick.

Usage: python bench/deploy_formats.py [RUN] [--out /tmp/deploy-formats] [--configs 50] [--quick]
       [--name NAME] [--results bench/results]

RUN (default: the 64 px Fashion-MNIST protocol run) is copied to ``OUT/run`` first (search and
export only read it, but other processes may read the original). Then, each step skipped when its
output is in OUT already (delete it to redo the step):

1. ``matchnas search RUN --budgets B1,..,B5`` with the default strategy: FLOPs budgets at 0, 25, 50,
   75 and 99% of the way from the minnet to the maxnet (``selection_reference.five_budgets``);
2. ``matchnas export RUN --selections S --format onnx,executorch,litert --quantize int8``
   (ExecuTorch / LiteRT only where installed): one table per format from the manifest (the
   exporter's measured latency, size, peak activation memory, top-1, budget verdict); then every
   file timed again, all interleaved (``int8_deploy``'s timers, :func:`matchnas.latency.measure_interleaved`);
3. the onnxruntime latency tables of the run's space (float32 and ``quantize="int8"``, 1 thread):
   predicted vs measured on each pick's ``onnx`` / ``onnx-int8`` file (the manifest's number and
   the re-timed one), and over ``--configs`` seeded random subnets measured whole
   (``latency_predictor._measure``): Spearman's rho and median |error|;
4. the MCU pick: ``matchnas search RUN --metric flash:int8 --budgets 1MB``, its int8 peak activations
   (:func:`matchnas.cost.peak_memory`, 1 byte) against 256 KB, exported ``--format litert --quantize int8``.
Prints Markdown tables and writes ``RESULTS/deploy_formats-NAME.json``. ``--quick``: few repeats,
configs and images, a quick latency table: an end-to-end check on a tiny run, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from int8_deploy import _FileTimer, _onnx_timer, _pte_timer
from latency_predictor import _measure
from scipy import stats
from selection_reference import five_budgets

from matchnas import cost
from matchnas.cli import main as matchnas
from matchnas.io import atomic_write_json
from matchnas.latency import LatencyTable, build_lut, measure_interleaved
from matchnas.run import open_run
from matchnas.search.budgets import parse_budgets
from matchnas.space import SubnetConfig

RESULTS = Path(__file__).resolve().parent / "results"
FORMATS = ("onnx", "executorch", "litert")
COUNTS = {  # timing protocol: latency_predictor's (warm-up 20, repeats, rounds); the table's build_lut settings
    "full": {"repeats": 200, "rounds": 3, "lut": {}, "search": [], "export": []},
    "quick": {"repeats": 10, "rounds": 1, "lut": {"warmup": 2, "repeats": 5, "rounds": 1, "calibration": 3},
              "search": ["--agreement-images", "64"], "export": ["--parity-images", "16", "--latency-runs", "5"]},
}


def _tflite_timer(path: Path, shape: tuple[int, ...]) -> _FileTimer:
    """A ``.tflite`` file timed as its exporter times it: one image through ``run_images`` (an int8
    file's input quantized and its logits dequantized in the call), 1 thread."""
    from matchnas.litert_runtime import open_interpreter, run_images

    model = open_interpreter(path, 1)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return _FileTimer(lambda: run_images(model, image))


TIMERS = {"onnx": _onnx_timer, "executorch": _pte_timer, "litert": _tflite_timer}


def installed_formats() -> list[str]:
    found = ["onnx"]
    for fmt, module in (("executorch", "executorch.exir"), ("litert", "litert_torch")):
        try:
            __import__(module)
            found.append(fmt)
        except ImportError:
            print(f"{fmt}: not installed, left out")
    return found


def cli(*argv: str) -> None:
    """``matchnas ARGV`` as a user types it; a failure stops the script with its exit status."""
    print("$ matchnas " + " ".join(argv), flush=True)
    status = matchnas(list(argv))
    if status:
        sys.exit(status)


def cached(path: Path, make):
    """``make()``'s JSON, kept in ``path`` so that a rerun reads it instead."""
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    atomic_write_json(path, value)
    return value


def search_and_export(run: Path, out: Path, search_args: list[str], formats: list[str], counts: dict,
                      int8_tolerance: str) -> dict:
    """``matchnas search`` into ``out/search``, ``matchnas export`` into ``out/bundle``; the manifest."""
    if not (out / "search" / "selections.json").is_file():
        cli("search", str(run), *search_args, "--out", str(out / "search"), *counts["search"])
    if not (out / "bundle" / "manifest.json").is_file():
        cli("export", str(run), "--selections", str(out / "search" / "selections.json"), "--format", ",".join(formats),
            "--quantize", "int8", "--out", str(out / "bundle"), "--force", "--int8-tolerance", int8_tolerance,
            *counts["export"])
    return json.loads((out / "bundle" / "manifest.json").read_text())


def retime(bundle: Path, manifest: dict, counts: dict) -> dict[str, dict[str, float]]:
    """Every file of the bundle timed again, all interleaved: ``{model name: {file key: ms}}``."""
    timers, keys = [], []
    for m in manifest["models"]:
        for key, f in m["files"].items():
            timers.append(TIMERS[f["format"]](bundle / f["file"], (1, 3, m["resolution"], m["resolution"])))
            keys.append((m["name"], key))
    ms = measure_interleaved(timers, 20, counts["repeats"], counts["rounds"])
    timed: dict[str, dict[str, float]] = {}
    for (name, key), value in zip(keys, ms):
        timed.setdefault(name, {})[key] = value
    return timed


def error(predicted: float, measured: float) -> float:
    return 100 * (predicted / measured - 1)


def within(errors: list[float], limit: float = 10) -> str:
    hits = sum(abs(e) <= limit for e in errors)
    return f"{hits}/{len(errors)} ({100 * hits / max(len(errors), 1):.0f}%)"


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.0f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _verdict(check) -> str:
    if check is None:
        return "n/a"
    return f"{'within' if check['within'] else 'MISSES'} ({100 * check['ratio']:.0f}%)"


def format_tables(manifest: dict, formats: list[str]) -> None:
    print("\nLatency: the manifest's (each file alone, batch 1, 1 thread, median of the export's runs). "
          "Peak: measured on the file (graph liveness; ExecuTorch: its memory plan's buffers, 'plan'). "
          "Verdict: the file's measured cost against its budget (n/a: a FLOPs budget has nothing to measure on a file).")
    for fmt in formats:
        print(f"\n**{fmt}** (float32 / int8)\n")
        print("| budget | pick | MFLOPs | res | float top-1 | int8 top-1 (drop) | agreement | ms float / int8 "
              "| KiB float / int8 | peak act. KiB float / int8 | verdict float / int8 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for m in manifest["models"]:
            f, q = m["files"][fmt], m["files"][f"{fmt}-int8"]
            peaks = []
            for r in (f, q):
                peak = r["measured"].get("peak_activation_bytes")
                planned = r["measured"].get("planned_buffer_bytes")
                peaks.append(_kib(peak) if peak is not None else (f"{_kib(planned)} plan" if planned is not None else "-"))
            print(f"| {m['budget_label']} | {m['config_id']} | {m['flops'] / 1e6:.2f} | {m['resolution']} "
                  f"| {_pct(m['test_top1'])} | {_pct(q['test_top1'])} ({q['top1_drop_points']:+.2f}) "
                  f"| {_pct(q['top1_agreement_with_float32'])} | {f['measured']['latency_ms']:.3f} / {q['measured']['latency_ms']:.3f} "
                  f"| {_kib(f['bytes'])} / {_kib(q['bytes'])} | {peaks[0]} / {peaks[1]} "
                  f"| {_verdict(f.get('budget_check'))} / {_verdict(q.get('budget_check'))} |")


def lut_tables(run, out: Path, counts: dict) -> dict[str, LatencyTable]:
    tables = {}
    for precision, quantize in (("float32", None), ("int8", "int8")):
        path = out / f"lut-{precision}.json"
        if not path.is_file():
            print(f"building the onnxruntime {precision} latency table of {run.space.name} (1 thread)", flush=True)
            build_lut(run.space, run.supernet.num_classes, "onnxruntime", 1, quantize=quantize, **counts["lut"]).save(path)
        tables[precision] = LatencyTable.load(path, run.space)
    return tables


def predicted_vs_measured(manifest: dict, timed: dict, tables: dict) -> dict:
    rows, errors = [], {}
    print("\nPredicted (onnxruntime table, 1 thread) vs measured on each pick's ONNX file: the manifest's "
          "latency (the export's own timing) and the re-timed one (all files interleaved)\n")
    print("| budget | pick | res | precision | predicted ms | manifest ms | error | re-timed ms | error |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for m in manifest["models"]:
        config = SubnetConfig.from_dict(m["config"])
        for precision, key in (("float32", "onnx"), ("int8", "onnx-int8")):
            predicted = tables[precision].predict(config)
            shipped, again = m["files"][key]["measured"]["latency_ms"], timed[m["name"]][key]
            row = {"budget": m["budget"], "config_id": m["config_id"], "precision": precision, "predicted_ms": predicted,
                   "manifest_ms": shipped, "retimed_ms": again, "error_manifest_pct": error(predicted, shipped),
                   "error_retimed_pct": error(predicted, again)}
            rows.append(row)
            for which in ("manifest", "retimed"):
                errors.setdefault((precision, which), []).append(row[f"error_{which}_pct"])
            print(f"| {m['budget_label']} | {m['config_id']} | {m['resolution']} | {precision} | {predicted:.3f} | {shipped:.3f} "
                  f"| {row['error_manifest_pct']:+.1f}% | {again:.3f} | {row['error_retimed_pct']:+.1f}% |")
    print("\n| precision | against | within 10% (goal: >= 95% of picks) | median abs error |")
    print("|---|---|---:|---:|")
    summary = {}
    for (precision, which), e in errors.items():
        summary[f"{precision}-{which}"] = {"within_10_pct": sum(abs(x) <= 10 for x in e) / len(e),
                                           "median_abs_error_pct": statistics.median(abs(x) for x in e)}
        print(f"| {precision} | {which} | {within(e)} | {statistics.median(abs(x) for x in e):.1f}% |")
    return {"picks": rows, "summary": summary}


def random_configs(run, tables: dict, out: Path, n: int, counts: dict) -> dict:
    """``n`` seeded random subnets measured whole (float32 and int8) against the tables."""
    rng = np.random.default_rng(1)  # latency_predictor's seed; the tables are calibrated on seed 0
    named = [(f"random {i}", run.space.sample(rng)) for i in range(n)]
    result = {}
    print(f"\nThe tables on {n} random subnets measured whole (batch 1, 1 thread, fastest of "
          f"{counts['rounds']} interleaved rounds' medians of {counts['repeats']} runs)\n")
    print("| precision | Spearman rho (goal: >= 0.9) | median abs error | max abs error | within 10% |")
    print("|---|---:|---:|---:|---:|")
    for precision, quantize in (("float32", None), ("int8", "int8")):
        args = SimpleNamespace(runtime="onnxruntime", threads=1, repeats=counts["repeats"], rounds=counts["rounds"],
                               quantize=quantize)
        measured = cached(out / f"random-{precision}-{n}.json", lambda: _measure(run.supernet, named, args))
        predicted = [tables[precision].predict(c) for _, c in named]
        e = [error(p, t) for p, t in zip(predicted, measured)]
        rho = float(stats.spearmanr(predicted, measured).statistic) if n > 2 else float("nan")
        result[precision] = {"spearman_rho": rho, "median_abs_error_pct": statistics.median(abs(x) for x in e),
                             "within_10_pct": sum(abs(x) <= 10 for x in e) / n,
                             "configs": [{"config": c.to_dict(), "measured_ms": t, "predicted_ms": p}
                                         for (_, c), t, p in zip(named, measured, predicted)]}
        print(f"| {precision} | {rho:.3f} | {result[precision]['median_abs_error_pct']:.1f}% "
              f"| {max(abs(x) for x in e):.1f}% | {within(e)} |")
    return result


def ops_of(space, config: SubnetConfig) -> dict:
    """The operators a subnet of ``space`` uses, from the space (per-stage act and squeeze-excite)."""
    used = [s for s, depth in zip(space.stages, (st.depth for st in config.stages)) if depth]
    return {"activations": sorted({space.stem_act, space.head_act, *(s.act for s in used)}),
            "squeeze_excite": sorted({s.se for s in used if s.se is not None}) or None, "head": space.head}


def mcu_pick(run_dir: Path, run, out: Path, counts: dict, int8_tolerance: str, flash: str, sram: str) -> dict:
    mcu = out / f"mcu-{flash}"
    if not (mcu / "search" / "selections.json").is_file():
        cli("search", str(run_dir), "--metric", "flash:int8", "--budgets", flash, "--out", str(mcu / "search"),
            *counts["search"])
    pick = json.loads((mcu / "search" / "selections.json").read_text())["picks"][0]
    if pick["config"] is None:
        print(f"\nMCU pick: no subnet of {run.space.name} has int8 weights under {flash} (cheapest: {pick['cost']:.0f} bytes)")
        return {"pick": None, "cheapest_flash_int8_bytes": pick["cost"]}
    space, k = run.space, run.supernet.num_classes
    config = SubnetConfig.from_dict(pick["config"])
    sram_text, sram = sram, parse_budgets(sram, "memory:int8")[0]
    peak = cost.peak_memory(space, config, k, dtype_bytes=1)
    if not (mcu / "bundle" / "manifest.json").is_file():
        cli("export", str(run_dir), "--selections", str(mcu / "search" / "selections.json"), "--format", "litert",
            "--quantize", "int8", "--out", str(mcu / "bundle"), "--force", "--int8-tolerance", int8_tolerance,
            *counts["export"])
    model = json.loads((mcu / "bundle" / "manifest.json").read_text())["models"][0]
    q = model["files"]["litert-int8"]
    from matchnas.litert_runtime import interpreter_class

    # the file's own operators: tensors not allocated, so no delegate (XNNPACK) has replaced them
    file_ops = sorted({op["op_name"] for op in interpreter_class()(model_path=str(mcu / "bundle" / q["file"]))._get_ops_details()})
    row = {"config_id": config.id, "config": config.to_dict(), "flops": model["flops"], "resolution": config.resolution,
           "flash_int8_predicted_bytes": cost.flash_bytes(space, config, k, dtype_bytes=1), "tflite_int8_bytes": q["bytes"],
           "peak_int8_predicted_bytes": peak, "peak_int8_measured_bytes": q["measured"]["peak_activation_bytes"],
           "sram_budget_bytes": sram, "peak_under_sram": peak <= sram, "flash_budget_check": q.get("budget_check"),
           "float_top1": model["test_top1"], "int8_top1": q["test_top1"], "drop_points": q["top1_drop_points"],
           "agreement": q["top1_agreement_with_float32"], "int8_ms": q["measured"]["latency_ms"],
           "space_ops": ops_of(space, config), "tflite_int8_ops": file_ops, "float_ops": q.get("float_ops")}
    print(f"\nMCU pick (search --metric flash:int8 --budgets {flash}, default strategy; "
          f"int8 LiteRT; KB = 1000 bytes)\n")
    print("| config | MFLOPs | res | int8 weights KB predicted / .tflite | peak int8 act. KB predicted / measured "
          f"| under {sram_text} | float top-1 | int8 top-1 | drop (pts) | agreement | int8 ms |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    measured_peak = row["peak_int8_measured_bytes"]
    print(f"| {config.id} | {row['flops'] / 1e6:.2f} | {config.resolution} | {row['flash_int8_predicted_bytes'] / 1e3:.0f} / "
          f"{q['bytes'] / 1e3:.0f} | {peak / 1e3:.0f} / {measured_peak / 1e3:.0f} "
          f"| {'yes' if peak <= sram and measured_peak <= sram else 'NO'} | {_pct(row['float_top1'])} "
          f"| {_pct(row['int8_top1'])} | {row['drop_points']:+.2f} | {_pct(row['agreement'])} | {row['int8_ms']:.3f} |")
    ops = row["space_ops"]
    print(f"\nOperators: activations {', '.join(ops['activations'])}; squeeze-excite "
          f"{ops['squeeze_excite'] or 'none'}; head '{ops['head']}'. In the int8 .tflite: {', '.join(file_ops)}"
          f"; float ops left: {row['float_ops'] or 'none'}. flash:int8 verdict: {_verdict(row['flash_budget_check'])}")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="bench/runs/folder-defaults/fashion-mnist-40/supernet-s0")
    parser.add_argument("--out", help="work folder, resumable: finished steps are kept (default: /tmp/deploy-formats[-quick])")
    parser.add_argument("--configs", type=int, default=50, help="random subnets measured whole for Spearman's rho")
    parser.add_argument("--int8-tolerance", help="export's --int8-tolerance in points (default: export's own, 1.0; --quick: 100, "
                        "as a tiny run's int8 files drop more)")
    parser.add_argument("--quick", action="store_true", help="few repeats and configs: an end-to-end check, not a measurement")
    parser.add_argument("--mcu-flash", default="1MB", help="the MCU pick's flash:int8 budget (default: %(default)s)")
    parser.add_argument("--mcu-sram", default="256KB", help="the MCU pick's int8 peak activations must be under it (default: %(default)s)")
    parser.add_argument("--name", help="results name (default: the run's parent and folder names)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = COUNTS["quick" if args.quick else "full"]
    configs = min(args.configs, 6) if args.quick else args.configs
    args.int8_tolerance = args.int8_tolerance or ("100" if args.quick else "1.0")
    source = Path(args.run).resolve()
    name = args.name or f"{source.parent.name}-{source.name}" + ("-quick" if args.quick else "")
    out, began = Path(args.out or "/tmp/deploy-formats" + ("-quick" if args.quick else "")), time.perf_counter()
    made_by = {"run": str(source), "quick": args.quick}
    if (out / "made_by.json").is_file() and json.loads((out / "made_by.json").read_text()) != made_by:
        sys.exit(f"{out} holds the steps of {(out / 'made_by.json').read_text()}, not of {made_by}: give another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "made_by.json", made_by)
    run_dir = out / "run"
    if not (run_dir / "checkpoint-final.pt").is_file():
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("checkpoint-latest.pt"), dirs_exist_ok=True)
    run = open_run(run_dir)
    formats = installed_formats()
    seconds = {}

    ctx = SimpleNamespace(space=run.space, metric=lambda c: cost.flops(run.space, c, run.supernet.num_classes))
    budgets = ",".join(str(b) for b in five_budgets(ctx))
    manifest = search_and_export(run_dir, out, ["--budgets", budgets], formats, counts, args.int8_tolerance)
    seconds["search_export"] = time.perf_counter() - began
    format_tables(manifest, formats)
    timed = cached(out / "retimed.json", lambda: retime(out / "bundle", manifest, counts))
    print(f"\nRe-timed, all files interleaved (ms; fastest of {counts['rounds']} rounds' medians of {counts['repeats']} runs)\n")
    keys = list(manifest["models"][0]["files"])
    print("| budget | pick | " + " | ".join(keys) + " |\n|---|---|" + "---:|" * len(keys))
    for m in manifest["models"]:
        print(f"| {m['budget_label']} | {m['config_id']} | " + " | ".join(f"{timed[m['name']][k]:.3f}" for k in keys) + " |")
    seconds["retime"] = time.perf_counter() - began - sum(seconds.values())

    tables = lut_tables(run, out, counts)
    seconds["tables"] = time.perf_counter() - began - sum(seconds.values())
    picks = predicted_vs_measured(manifest, timed, tables)
    randoms = random_configs(run, tables, out, configs, counts)
    seconds["random_configs"] = time.perf_counter() - began - sum(seconds.values())
    mcu = mcu_pick(run_dir, run, out, counts, args.int8_tolerance, args.mcu_flash, args.mcu_sram)
    seconds["mcu"] = time.perf_counter() - began - sum(seconds.values())

    result = {"run": str(source), "space": run.space.name, "quick": args.quick, "formats": formats, "budgets": budgets,
              "protocol": {"threads": 1, "warmup": 20, **{k: counts[k] for k in ("repeats", "rounds")},
                           "table_build": counts["lut"] or "build_lut defaults"},
              "machine": manifest["machine"], "manifest": manifest, "retimed_ms": timed,
              "predicted_vs_measured": picks, "random_configs": randoms, "mcu": mcu,
              "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"deploy_formats-{name}.json", result)
    print(f"\nsteps (s): {result['seconds']}; wrote {args.results / f'deploy_formats-{name}.json'}")


if __name__ == "__main__":
    main()
