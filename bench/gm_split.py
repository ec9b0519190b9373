"""Few-shot splitting (GM-NAS) on Fashion-MNIST: the one-shot supernet against the same run split
by gradient matching and split at random, all with the full loss and the same total steps.

Usage: python bench/gm_split.py [--quick] [--seeds 0 1] [--edges 2] [--dimension expand]

Reports (1) test top-1 of evolution's picks at the 5 FLOPs budgets of bench/fmnist_selection.py and
(2) ranking quality: Kendall's tau (scipy.stats) between each supernet's inherited-weight test
top-1 and the test top-1 of the same 12 configs trained on their own from the pre-trained weights
(FixMatch, half the steps), the ground truth shared by the three supernets.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from fmnist_selection import FRACTIONS
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

N_CONFIGS = 12


def ranking_configs(space, seed: int) -> list:
    """``N_CONFIGS`` seeded random configs sorted by FLOPs (the same for every supernet)."""
    rng = np.random.default_rng([seed, 0x6A])
    return list(dict.fromkeys(space.sample(rng) for _ in range(N_CONFIGS)))


def standalone_top1(config, mode, seed: int) -> float:
    path = config_file(config, mode)
    steps = mode.steps // 2
    run = ensure_run(f"single-{config.id}-fm-{steps}steps",
                     [f"train.single={path}", "train.loss=fm", f"train.steps={steps}"], mode, seed)
    return eval_results(run)["single"]


def main() -> None:
    def options(parser):
        parser.add_argument("--edges", type=int, default=2)
        parser.add_argument("--dimension", default="expand")

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    split = [f"split.edges={args.edges}", f"split.dimension={args.dimension}"]
    variants = {
        "one-shot": ("supernet-full", ["train.loss=full"]),
        "GM split": (f"supernet-full-gm{args.edges}{args.dimension}", ["train.loss=full", "split.method=gm", *split]),
        "random split": (f"supernet-full-random{args.edges}{args.dimension}", ["train.loss=full", "split.method=random", *split]),
    }
    results = {label: [] for label in variants}
    def one_seed(seed: int) -> dict:
        runs = {label: ensure_run(name, overrides, mode, seed) for label, (name, overrides) in variants.items()}
        space = Evaluator(runs["one-shot"]).supernet.space
        configs = ranking_configs(space, seed)
        truth = [standalone_top1(c, mode, seed) for c in configs]
        out = {}
        for label, run_dir in runs.items():
            evaluator = Evaluator(run_dir)
            inherited = [evaluator.top1(c) for c in configs]
            picks = evolution_picks(run_dir, mode, FRACTIONS)
            plan = json.loads((run_dir / "fewshot.json").read_text()) if (run_dir / "fewshot.json").is_file() else None
            out[label] = {
                "seed": seed, "eval": eval_results(run_dir), "inherited": inherited, "standalone": truth,
                "kendall_tau": float(stats.kendalltau(inherited, truth).statistic),
                "picks": [{"budget": p.budget, "cost": p.cost, "test_top1": evaluator.top1(p.config)} for p in picks],
                "split": {k: v for k, v in (plan or {}).items() if k != "scores"} or None,
                "gm_scores": (plan or {}).get("scores"),
                "mflops": [cost.flops(space, c, evaluator.supernet.num_classes, evaluator.supernet.in_chans) / 1e6 for c in configs],
            }
        return out

    for seed in mode.seeds:
        for label, row in per_seed(f"gm_split-{args.edges}{args.dimension}", mode, seed, lambda seed=seed: one_seed(seed)).items():
            results[label].append(row)

    budgets = [p["budget"] for p in results["one-shot"][0]["picks"]]
    lines = ["| supernet | Kendall tau (inherited vs standalone) | maxnet % | minnet % | "
             + " | ".join(f"{b / 1e6:.1f} MFLOPs" for b in budgets) + " |", "|---|---:|---:|---:|" + "---:|" * len(budgets)]
    for label, rows in results.items():
        taus = ", ".join(f"{r['kendall_tau']:+.2f}" for r in rows)
        maxnet = np.mean([r["eval"]["max"] for r in rows])
        minnet = np.mean([r["eval"]["min"] for r in rows])
        at_budget = [np.mean([r["picks"][i]["test_top1"] for r in rows]) for i in range(len(budgets))]
        lines.append(f"| {label} | {taus} | {100 * maxnet:.1f} | {100 * minnet:.1f} | "
                     + " | ".join(f"{100 * a:.1f}" for a in at_budget) + " |")
    for label in ("GM split", "random split"):
        lines.append(f"\n{label} partitions: {[r['split']['partitions'] for r in results[label]]}")
    table = "\n".join(lines)
    print(table)

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), sharey=True)
    for ax, (label, rows) in zip(axes, results.items()):
        for r in rows:
            ax.scatter(100 * np.array(r["standalone"]), 100 * np.array(r["inherited"]), s=12, label=f"seed {r['seed']}: tau {r['kendall_tau']:+.2f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("standalone top-1 (%)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("inherited-weight top-1 (%)")
    fig.tight_layout()
    fig.savefig(plot_path("gm_split", mode), dpi=120)
    path = write_results("gm_split", mode, {"variants": {k: v[1] for k, v in variants.items()}, "results": results,
                                            "budgets": budgets, "table": table})
    print(f"wrote {path} and {plot_path('gm_split', mode)}")


if __name__ == "__main__":
    main()
