"""Selection after training (TOFA's figures 8-11) on the Fashion-MNIST supernet (full loss): the
fixed rule, zero-shot search with the best proxy, evolution (NSGA-II on validation top-1) and
random sampling plus validation, at 5 FLOPs budgets: test top-1 of each pick and the wall time
of selecting.

Usage: python bench/fmnist_selection.py [--quick] [--seeds 0 1] [--strategies fixed random ...]

The budgets are 10/30/50/70/90% of the way from the minnet's FLOPs to the maxnet's. The zero-shot
proxy is chosen per run without touching the test set: the proxy whose scores rank 20 random
subnets' validation top-1 best (Kendall tau); that choice is part of zero-shot's selection time,
and the proxy then scores 500 random candidates (200 with --quick). Evolution evaluates 300
configs on the validation split (80 with --quick), random 20 per budget (8).
"""

from __future__ import annotations

import time

import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from suite import (
    Evaluator,
    ensure_run,
    evolution_options,
    fraction_budgets,
    parse_mode,
    per_seed,
    plot_path,
    write_results,
)

from matchnas.search.budgets import format_cost
from matchnas.search.run import build_context
from matchnas.search.strategies import run_strategy

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def budgets_for(ctx) -> list[float]:
    return [round(b) for b in fraction_budgets(ctx, FRACTIONS)]


def best_proxy_on_validation(ctx, n: int = 20) -> tuple[str, float, dict[str, float]]:
    from matchnas.proxies import PROXIES, proxy_input

    rng = np.random.default_rng([ctx.seed, 0xB5])
    configs = [ctx.space.sample(rng) for _ in range(n)]
    truth = [ctx.validation_accuracy(c) for c in configs]
    scores = {name: [] for name in PROXIES}
    for config in configs:
        inp = proxy_input(ctx.supernet, config, ctx.proxy_images, ctx.seed, ctx.normalisation)
        for name, proxy in PROXIES.items():
            scores[name].append(float(proxy(inp)) * (1.0 if proxy.higher_is_better else -1.0))
    taus = {name: float(np.nan_to_num(stats.kendalltau(s, truth).statistic, nan=-1.0)) for name, s in scores.items()}
    best = max(taus, key=taus.get)
    return best, taus[best], taus


def select(run_dir, mode, strategy: str, options: dict) -> tuple[list, float, dict]:
    ctx = build_context(run_dir, "flops", options=options)
    extra, began = {}, time.perf_counter()
    if strategy == "zeroshot":
        proxy, tau, taus = best_proxy_on_validation(ctx)
        extra = {"proxy": proxy, "validation_tau": tau, "taus": taus}
        strategy = f"zeroshot:{proxy}"
    result = run_strategy(strategy, ctx, budgets_for(ctx))
    return result.picks, time.perf_counter() - began, extra


STRATEGIES = ("fixed", "zeroshot", "evolution", "random")


def main() -> None:
    args, mode = parse_mode(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES), help="run only these strategies"))
    quick = mode.name == "quick"
    options = {
        "fixed": {},
        "zeroshot": {"candidates": 200 if quick else 500},
        "evolution": evolution_options(mode),
        "random": {"samples": 8 if quick else 20},
    }
    strategies = {name: options[name] for name in STRATEGIES if name in args.strategies}
    script = "fmnist_selection" + ("" if len(strategies) == len(STRATEGIES) else "-" + "_".join(strategies))
    results = {name: [] for name in strategies}
    def one_seed(seed: int) -> dict:
        run_dir = ensure_run("supernet-full", ["train.loss=full"], mode, seed)
        evaluator = Evaluator(run_dir)
        out = {}
        for name, options in strategies.items():
            print(f"seed {seed}: {name}", flush=True)
            picks, seconds, extra = select(run_dir, mode, name, options)
            rows = [{"budget": p.budget, "cost": p.cost, "config": p.config.to_dict() if p.config else None,
                     "config_id": p.config.id if p.config else None,
                     "test_top1": evaluator.top1(p.config) if p.config else None} for p in picks]
            out[name] = {"seed": seed, "seconds": seconds, "picks": rows, **extra}
        return out

    for seed in mode.seeds:
        for name, row in per_seed(script, mode, seed, lambda seed=seed: one_seed(seed)).items():
            results[name].append(row)

    budgets = [p["budget"] for p in results["fixed"][0]["picks"]]
    head = "| strategy | seconds to select | " + " | ".join(format_cost(b, "flops") for b in budgets) + " |"
    lines = [f"Test top-1 % (and FLOPs) of the pick per FLOPs budget ({mode.steps} steps, seeds {list(mode.seeds)}; "
             "mean over seeds)",
             "", head, "|---|---:|" + "---:|" * len(budgets)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in results.items():
        top1 = [np.mean([r["picks"][i]["test_top1"] or np.nan for r in runs]) for i in range(len(budgets))]
        cost = [np.mean([r["picks"][i]["cost"] for r in runs]) for i in range(len(budgets))]
        seconds = np.mean([r["seconds"] for r in runs])
        label = name if name != "zeroshot" else f"zeroshot ({', '.join(r['proxy'] for r in runs)})"
        lines.append(f"| {label} | {seconds:.1f} | "
                     + " | ".join(f"{100 * t:.1f} ({c / 1e6:.2f}M)" for t, c in zip(top1, cost)) + " |")
        ax.plot(np.array(cost) / 1e6, 100 * np.array(top1), marker="o", label=f"{label}, {seconds:.0f} s")
    distinct = {name: [len({p["config_id"] for p in r["picks"]}) for r in runs] for name, runs in results.items()}
    lines += ["", f"distinct subnets picked for the 5 budgets: {distinct}"]
    table = "\n".join(lines)
    print(table)
    ax.set_xlabel("MFLOPs of the pick")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Selection on the Fashion-MNIST supernet, {mode.steps} steps", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot_path(script, mode), dpi=120)
    path = write_results(script, mode, {"budgets": budgets, "strategies": strategies, "results": results, "table": table})
    print(f"wrote {path} and {plot_path(script, mode)}")


if __name__ == "__main__":
    main()
