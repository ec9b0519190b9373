"""float32 vs static int8 for a trained Fashion-MNIST supernet's picks.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python bench/int8_deploy.py
       [--run bench/runs/full/supernet-full-s0] [--budgets 4M,8M,12M] [--out /tmp/int8-bench]

1. copies the run to ``OUT/run`` (search and export only read it, but the run may be shared);
2. ``matchnas search --metric flops --strategy fixed`` for the budgets;
3. ``matchnas export --format onnx[,executorch] --quantize int8`` (ExecuTorch when installed):
   float32 and int8 top-1 on the whole test split, agreement, file sizes, from the manifest;
4. times every file again, batch 1, 1 thread, as the fastest of ``--rounds`` interleaved rounds'
   medians of ``--repeats`` runs (the protocol of :func:`matchnas.latency.measure_interleaved`);
5. builds the int8 latency table (``latency build --quantize int8``) and reports its error on the
   picks (their int8 files) and on ``--configs`` random configs measured whole as int8 models.
Prints Markdown tables and writes ``OUT/int8.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from matchnas.export import export_run
from matchnas.latency import LatencyTable, Runner, build_lut, measure_interleaved
from matchnas.search.run import search
from matchnas.space import SubnetConfig
from matchnas.run import open_run


class _FileTimer:
    """A callable with ``median_ms`` as :class:`matchnas.latency.Runner` has, for a model file."""

    def __init__(self, run):
        self.run = run

    def median_ms(self, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            self.run()
        times = []
        for _ in range(repeats):
            began = time.perf_counter_ns()
            self.run()
            times.append(time.perf_counter_ns() - began)
        return statistics.median(times) / 1e6


def _onnx_timer(path: Path, shape: tuple[int, ...]) -> _FileTimer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return _FileTimer(lambda: session.run(None, feed))


def _pte_timer(path: Path, shape: tuple[int, ...]) -> _FileTimer:
    from executorch.runtime import Runtime

    from matchnas.export.executorch_format import set_threads

    set_threads(1)
    method = Runtime.get().load_program(path).load_method("forward")
    x = torch.randn(*shape)
    return _FileTimer(lambda: method.execute([x]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="bench/runs/full/supernet-full-s0")
    parser.add_argument("--budgets", default="4M,8M,12M")
    parser.add_argument("--out", default="/tmp/int8-bench")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", type=int, default=10, help="random configs for the int8 table's error")
    args = parser.parse_args()
    out = Path(args.out)
    run = out / "run"
    if not (run / "checkpoint-final.pt").is_file():
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("checkpoint-latest.pt"))
    print(search(run, "flops", args.budgets, "fixed", None, out / "search", {}))
    try:
        import executorch.exir  # noqa: F401

        formats = ["onnx", "executorch"]
    except ImportError:
        formats = ["onnx"]
    bundle = out / "bundle"
    print(export_run(run, bundle, formats, selections=out / "search" / "selections.json", force=True, quantize="int8"))
    manifest = json.loads((bundle / "manifest.json").read_text())

    # Latency again, every file interleaved with the others (the export timed each once, alone).
    timers, keys = [], []
    for m in manifest["models"]:
        shape = (1, 3, m["resolution"], m["resolution"])
        for key, f in m["files"].items():
            make = _onnx_timer if f["format"] == "onnx" else _pte_timer
            timers.append(make(bundle / f["file"], shape))
            keys.append((m["name"], key))
    ms = dict(zip(keys, measure_interleaved(timers, 20, args.repeats, args.rounds)))

    # The int8 lookup table: error on the picks' int8 files and on random configs measured whole.
    supernet = open_run(run).supernet
    space = supernet.space
    lut_path = out / "lut-int8.json"
    if lut_path.is_file():
        table = LatencyTable.load(lut_path, space)
    else:
        table = build_lut(space, supernet.num_classes, "onnxruntime", 1, quantize="int8")
        table.save(lut_path)
    rng = np.random.default_rng(1)
    randoms = list(dict.fromkeys(space.sample(rng) for _ in range(args.configs)))
    runners = [Runner(supernet.extract(c).eval(), (1, 3, c.resolution, c.resolution), "onnxruntime", 1, "int8")
               for c in randoms]
    measured_random = measure_interleaved(runners, 20, args.repeats, args.rounds)
    random_errors = [100 * (table.predict(c) / t - 1) for c, t in zip(randoms, measured_random)]

    rows = []
    print("\n| budget | config | res | top-1 fp32 | top-1 int8 (onnx) | drop (pts) | agree | "
          + " | ".join(f"{k} ms" for k in manifest["models"][0]["files"]) + " | fp32 / int8 ONNX size (KiB) | "
          + "int8 LUT pred. ms | LUT error |")
    for m in manifest["models"]:
        q = m["files"]["onnx-int8"]
        config = SubnetConfig.from_dict(m["config"])
        predicted = table.predict(config)
        error = 100 * (predicted / ms[m["name"], "onnx-int8"] - 1)
        row = {"budget": m["budget_label"], "config": m["config_id"], "resolution": m["resolution"],
               "flops": m["flops"], "top1_fp32": m["test_top1"],
               "files": {k: {"ms": ms[m["name"], k], "bytes": f["bytes"],
                             **({"top1": f["test_top1"], "drop_points": f["top1_drop_points"],
                                 "agreement": f["top1_agreement_with_float32"]} if "test_top1" in f else {})}
                         for k, f in m["files"].items()},
               "lut_int8_ms": predicted, "lut_error_percent": error}
        rows.append(row)
        times = " | ".join(f"{ms[m['name'], k]:.3f}" for k in m["files"])
        print(f"| {m['budget_label']} | {m['config_id']} | {m['resolution']} | {100 * m['test_top1']:.2f}% | "
              f"{100 * q['test_top1']:.2f}% | {q['top1_drop_points']:.2f} | {100 * q['top1_agreement_with_float32']:.1f}% | "
              f"{times} | {m['files']['onnx']['bytes'] / 1024:.0f} / {q['bytes'] / 1024:.0f} | {predicted:.3f} | {error:+.1f}% |")
    if "executorch-int8" in manifest["models"][0]["files"]:
        print("\nExecuTorch int8 top-1 / drop / agreement: " + "; ".join(
            f"{m['budget_label']}: {100 * m['files']['executorch-int8']['test_top1']:.2f}% / "
            f"{m['files']['executorch-int8']['top1_drop_points']:.2f} / "
            f"{100 * m['files']['executorch-int8']['top1_agreement_with_float32']:.1f}%" for m in manifest["models"]))
    absolute = [abs(e) for e in random_errors]
    print(f"\nint8 LUT on {len(randoms)} random configs measured whole: median |error| {statistics.median(absolute):.1f}%, "
          f"max {max(absolute):.1f}%, within 10%: {sum(a <= 10 for a in absolute)}/{len(absolute)}")
    result = {"rows": rows, "random_configs": [{"config": c.to_dict(), "measured_ms": t, "predicted_ms": table.predict(c)}
                                              for c, t in zip(randoms, measured_random)],
              "machine": manifest["machine"], "rounds": args.rounds, "repeats": args.repeats}
    (out / "int8.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
