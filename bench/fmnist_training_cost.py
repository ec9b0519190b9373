"""Constant training cost on Fashion-MNIST: wall time to obtain K = 1, 5, 10 deployable models
from one supernet run (train once, select K subnets with evolution, recalibrate and evaluate
each) against K individually trained FixMatch models (one timed, multiplied by K), with the
accuracy of each route.

Usage: python bench/fmnist_training_cost.py [--quick] [--seeds 0]

Training times come from one process, not from the runs' logs (taken under whatever else the
machine was running): a supernet step (the sandwich), a teacher warm-up step (the maxnet alone)
and a step of the individual model are timed in turn on the same batches
(``train_throughput.run_seconds``), and a run's time is its steps times the median
step of its kind (the supernet: ``teacher_warmup`` of its steps are warm-up steps). Selection is
timed in the same process. The individual model is the 50%-budget architecture of
bench/fmnist_accuracy_vs_flops.py (trained here if that script has not run).
"""

from __future__ import annotations

import time

from fmnist_accuracy_vs_flops import picked_configs, single_runs
from suite import (
    Evaluator,
    ensure_run,
    evolution_options,
    experiment_for,
    fraction_budgets,
    parse_mode,
    plot_path,
    write_results,
)
from train_throughput import run_seconds

from matchnas.search.run import build_context
from matchnas.search.strategies import run_strategy

KS = (1, 5, 10)


def supernet_and_single_seconds(mode, seed: int, space, single) -> dict[str, float]:
    """Seconds of a whole supernet run (in ``space``) and of a whole single-model run of
    ``single``, from step times measured in turn in this process (see the module's docstring)."""
    seconds = run_seconds(experiment_for(["train.loss=full"], mode, seed), space, {"single": single})
    return {"supernet": seconds["supernet"], "single": seconds["single"],
            **{f"{k}_step": v for k, v in seconds["median_step"].items()}}


def plot(rows: list[dict], path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["supernet_route_s"] / 60 for r in rows], marker="o", label="one supernet + selection")
    ax.plot(ks, [r["individual_route_s"] / 60 for r in rows], marker="s", label="K FixMatch models")
    ax.set_xlabel("deployable models K")
    ax.set_ylabel("wall time (min)")
    ax.set_title(f"Training cost, Fashion-MNIST, {steps} steps", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    _, mode = parse_mode(__doc__.splitlines()[0])
    seed = mode.seeds[0]
    supernet_run = ensure_run("supernet-full", ["train.loss=full"], mode, seed)
    middle = picked_configs(supernet_run, mode)[1]
    single_top1 = single_runs(middle, mode, seed)["fm"]
    evaluator = Evaluator(supernet_run)
    seconds = supernet_and_single_seconds(mode, seed, evaluator.supernet.space, middle)
    single_seconds, supernet_seconds = seconds["single"], seconds["supernet"]

    rows = []
    for k in KS:
        # a fresh context per K: its validation cache must not speed up the next K's search
        ctx = build_context(supernet_run, "flops", options=evolution_options(mode))
        budgets = fraction_budgets(ctx, [(i + 1) / (k + 1) for i in range(k)])
        began = time.perf_counter()
        picks = [p.config for p in run_strategy("evolution", ctx, budgets).picks]
        accuracies = [evaluator.top1(c) for c in picks]  # recalibrate + test: what deploying each costs
        select_seconds = time.perf_counter() - began
        rows.append({"k": k, "supernet_route_s": supernet_seconds + select_seconds, "select_s": select_seconds,
                     "individual_route_s": k * single_seconds, "supernet_top1": accuracies,
                     "budgets": budgets, "distinct_picks": len(set(picks))})

    lines = ["| K | one supernet + selection (s) | K FixMatch models (s) | ratio | mean top-1 of the K picks % |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r['supernet_route_s']:.0f} | {r['individual_route_s']:.0f} | "
                     f"{r['individual_route_s'] / r['supernet_route_s']:.2f} | {100 * sum(r['supernet_top1']) / r['k']:.1f} |")
    table = "\n".join(lines) + (
        f"\n\nsupernet training {supernet_seconds:.0f} s ({mode.steps} steps; median step: sandwich "
        f"{seconds['sandwich_step']:.3f} s, warm-up {seconds['warmup_step']:.3f} s); one FixMatch model "
        f"({middle.id}, the 50% budget) {single_seconds:.0f} s (median step {seconds['single_step']:.3f} s), "
        f"test top-1 {100 * single_top1:.1f}%")
    print(table)
    path = write_results("fmnist_training_cost", mode, {"rows": rows, "single_config": middle.to_dict(),
                                                       "single_fm_top1": single_top1, "seconds": seconds, "table": table})
    plot(rows, plot_path("fmnist_training_cost", mode), mode.steps)
    print(f"wrote {path} and {plot_path('fmnist_training_cost', mode)}")


if __name__ == "__main__":
    main()
