"""Accuracy against FLOPs on Fashion-MNIST: subnets selected from the supernet (full loss, no
retraining) against the same architectures trained individually, (a) on labels only and (b) with
FixMatch, each for the supernet's number of steps.

Usage: python bench/fmnist_accuracy_vs_flops.py [--quick] [--seeds 0 1]

The architectures are evolution's picks (NSGA-II on validation top-1) at 30/50/70% of the way
from the minnet's FLOPs to the maxnet's, plus the maxnet and minnet themselves.
"""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from suite import (
    Evaluator,
    config_file,
    ensure_run,
    eval_results,
    evolution_picks,
    parse_mode,
    per_seed,
    plot_path,
    write_results,
)

from matchnas import cost

FRACTIONS = (0.3, 0.5, 0.7)


def picked_configs(run_dir, mode) -> list:
    """Evolution's picks for the three budgets."""
    return [p.config for p in evolution_picks(run_dir, mode, FRACTIONS)]


def single_runs(config, mode, seed: int, space=None) -> dict[str, float]:
    """Train ``config`` alone with labels only and with FixMatch; test top-1 of each. The maxnet
    and minnet reuse Table 3's runs (rows a and b), which train exactly these."""
    named = {space.max(): "max", space.min(): "min"} if space is not None else {}
    if config in named:
        net = named[config]
        return {loss: eval_results(ensure_run(f"single-{net}-{loss}", [f"train.single={net}", f"train.loss={loss}"],
                                              mode, seed))["single"] for loss in ("sup", "fm")}
    path = config_file(config, mode)
    out = {}
    for loss in ("sup", "fm"):
        run = ensure_run(f"single-{config.id}-{loss}", [f"train.single={path}", f"train.loss={loss}"], mode, seed)
        out[loss] = eval_results(run)["single"]
    return out


def main() -> None:
    _, mode = parse_mode(__doc__.splitlines()[0])
    points = []  # one row per (seed, architecture)
    def one_seed(seed: int) -> list[dict]:
        run_dir = ensure_run("supernet-full", ["train.loss=full"], mode, seed)
        evaluator = Evaluator(run_dir)
        space, classes = evaluator.supernet.space, evaluator.supernet.num_classes
        configs = [space.min(), *picked_configs(run_dir, mode), space.max()]
        rows = []
        for config in dict.fromkeys(configs):
            singles = single_runs(config, mode, seed, space)
            rows.append({"seed": seed, "config_id": config.id, "config": config.to_dict(),
                         "mflops": cost.flops(space, config, classes, evaluator.supernet.in_chans) / 1e6,
                         "supernet": evaluator.top1(config), "single_sup": singles["sup"], "single_fm": singles["fm"]})
        return {"points": rows}

    for seed in mode.seeds:
        points += per_seed("fmnist_accuracy_vs_flops", mode, seed, lambda seed=seed: one_seed(seed))["points"]

    lines = ["| MFLOPs | config | supernet pick % | single, labels only % | single, FixMatch % | seed |",
             "|---:|---|---:|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p["mflops"], p["seed"])):
        lines.append(f"| {p['mflops']:.2f} | {p['config_id']} | {100 * p['supernet']:.1f} | "
                     f"{100 * p['single_sup']:.1f} | {100 * p['single_fm']:.1f} | {p['seed']} |")
    wins = sum(p["supernet"] > max(p["single_sup"], p["single_fm"]) for p in points)
    summary = (f"the supernet's subnet beats both individually trained copies in {wins} of {len(points)} cases; "
               f"mean gain over FixMatch {100 * np.mean([p['supernet'] - p['single_fm'] for p in points]):+.1f} points, "
               f"over labels only {100 * np.mean([p['supernet'] - p['single_sup'] for p in points]):+.1f}")
    table = "\n".join(lines) + "\n\n" + summary
    print(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("supernet", "supernet subnet (no retraining)", "o"),
                               ("single_fm", "(b) single, FixMatch", "s"), ("single_sup", "(a) single, labels only", "^")):
        xs = sorted({p["mflops"] for p in points})
        ys = [100 * np.mean([p[key] for p in points if p["mflops"] == x]) for x in xs]
        ax.plot(xs, ys, marker=marker, label=label)
    ax.set_xlabel("MFLOPs")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Accuracy vs FLOPs, Fashion-MNIST 40 labels/class, {mode.steps} steps", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("fmnist_accuracy_vs_flops", mode), dpi=120)
    path = write_results("fmnist_accuracy_vs_flops", mode, {"points": points, "table": table})
    print(f"wrote {path} and {plot_path('fmnist_accuracy_vs_flops', mode)}")


if __name__ == "__main__":
    main()
