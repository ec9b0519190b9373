"""Does size matter? Over 30 seeded random subnets of one trained lever-screen run
(inherited weights, BN recalibrated), the Spearman correlation of FLOPs with test top-1.

Usage: python bench/fmnist_size_matters.py [--quick] [--steps N] [--rows baseline ...] [--n 30] [--device cuda]
       [--seeds 0 1] [--set key=value]

Each row is the cached run of ``bench/fmnist_levers.py`` with the same name and mode (trained here
if missing), so "before" is the ``baseline`` row and "after" any lever row. Writes
``bench/results/fmnist_size_matters-<mode>.json``; the bar is rho >= 0.5. Per run it also
gives each dimension's rho with top-1 and the mean top-1 by resolution (what carries accuracy).
One seed (the mode's first) unless ``--seeds`` names more.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from fmnist_levers import ROWS, SUPERNET, run_name
from scipy import stats
from suite import Evaluator, ensure_run, parse_mode, write_results

from matchnas import cost
from matchnas.io import atomic_write_text


def size_matters(row: str, mode, seed: int, n: int) -> dict:
    """FLOPs and test top-1 of ``n`` seeded random subnets of the row's run, and Spearman's rho."""
    run_dir = ensure_run(run_name(row), [*SUPERNET, *ROWS[row]], mode, seed)
    cache = run_dir / f"size_matters-{n}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    evaluator = Evaluator(run_dir)
    space, classes = evaluator.supernet.space, evaluator.supernet.num_classes
    rng = np.random.default_rng([seed, 0x512E])  # the same draws for every row of a space
    configs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    flops = [cost.flops(space, c, classes) / 1e6 for c in configs]
    top1 = []
    for i, config in enumerate(configs):
        top1.append(evaluator.top1(config))
        print(f"  {row} {i + 1}/{len(configs)}: {flops[i]:.1f} MFLOPs, top-1 {top1[-1]:.3f}", flush=True)
    rho = stats.spearmanr(flops, top1)
    result = {"spearman_rho": float(rho.statistic), "p_value": float(rho.pvalue), "mflops": flops, "top1": top1,
              "configs": [c.to_dict() for c in configs]}
    atomic_write_text(cache, json.dumps(result))
    return result


def main() -> None:
    def options(parser):
        parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=["baseline"], metavar="NAME")
        parser.add_argument("--n", type=int, default=30, help="random subnets per run")

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    seeds = tuple(args.seeds or mode.seeds[:1])
    mode = dataclasses.replace(mode, seeds=seeds)
    results = {row: {str(seed): size_matters(row, mode, seed, args.n) for seed in seeds} for row in args.rows}
    lines = [f"| run ({mode.steps} steps, {args.n} random subnets) | seed | Spearman rho (FLOPs, top-1) | "
             "top-1 range % | rho of each dimension with top-1 | mean top-1 % by resolution |",
             "|---|---:|---:|---:|---|---|"]
    for row, by_seed in results.items():
        for seed, r in by_seed.items():
            dims = ", ".join(f"{name} {rho:+.2f}" for name, rho in by_dimension(r).items())
            by_res = ", ".join(f"{res} px {100 * top1:.1f}" for res, top1 in by_resolution(r).items())
            lines.append(f"| {row} | {seed} | {r['spearman_rho']:+.2f} (p={r['p_value']:.2g}) | "
                         f"{100 * min(r['top1']):.1f}-{100 * max(r['top1']):.1f} | {dims} | {by_res} |")
    table = "\n".join(lines)
    print(table)
    script = "fmnist_size_matters" + ("" if args.rows == ["baseline"] else "-" + "_".join(run_name(r) for r in args.rows))
    print(f"wrote {write_results(script, mode, {'results': results, 'table': table})}")


def by_dimension(result: dict) -> dict[str, float]:
    """Spearman's rho with top-1 of what the subnets differ in: resolution, total depth, total
    width, mean expansion ratio, mean kernel size (which dimension carries accuracy)."""
    configs = result["configs"]
    dims = {
        "resolution": [c["resolution"] for c in configs],
        "depth": [sum(s["depth"] for s in c["stages"]) for c in configs],
        "width": [sum(s["width"] for s in c["stages"]) for c in configs],
        "expand": [float(np.mean([e for s in c["stages"] for e in s["expand"]])) for c in configs],
        "kernel": [float(np.mean([k for s in c["stages"] for k in s["kernel"]])) for c in configs],
    }
    return {name: float(np.nan_to_num(stats.spearmanr(values, result["top1"]).statistic)) for name, values in dims.items()}


def by_resolution(result: dict) -> dict[int, float]:
    """Mean top-1 of the subnets at each resolution."""
    out: dict[int, list[float]] = {}
    for config, top1 in zip(result["configs"], result["top1"]):
        out.setdefault(config["resolution"], []).append(top1)
    return {res: float(np.mean(values)) for res, values in sorted(out.items())}

if __name__ == "__main__":
    main()
