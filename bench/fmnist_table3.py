"""TOFA's Table 3 on Fashion-MNIST: maxnet and minnet top-1 for (a) a single model trained on labels
only, (b) a single model trained with FixMatch, (c) the supernet with the labelled loss only
(``train.loss=sup``), (d) the supernet with the full semi-supervised loss (the default).

Usage: python bench/fmnist_table3.py [--quick] [--seeds 0 1] [--rows b d] [--steps N] [--set key=value]

The papers claim (d) > (b) > (c) > (a). Every row trains for the same number of steps on the same
batches; (a) is also reported at its best step count (1/4, 1/2 or all of the steps, chosen on the
validation split), so that the comparison is not won against an overfitted baseline.
"""

from __future__ import annotations

from suite import (
    Evaluator,
    ensure_run,
    eval_results,
    final_metrics,
    parse_mode,
    report_max_min,
    run_path,
    supernet_top1,
)

LABELS = {"a": "(a) single, labels only", "b": "(b) single, FixMatch", "c": "(c) supernet, sup", "d": "(d) supernet, full"}


def single_top1(loss: str, mode, seed: int, steps: int | None = None) -> dict[str, float]:
    out = {}
    for net in ("max", "min"):
        name = f"single-{net}-{loss}" + (f"-{steps}steps" if steps else "")
        overrides = [f"train.single={net}", f"train.loss={loss}"] + ([f"train.steps={steps}"] if steps else [])
        out[net] = eval_results(ensure_run(name, overrides, mode, seed))["single"]
    return out


def best_step_baseline(mode, seed: int) -> dict[str, dict]:
    """(a) at the step count (of steps/4, steps/2, steps) with the best validation top-1."""
    out = {}
    for net in ("max", "min"):
        candidates = []
        for steps in (mode.steps // 4, mode.steps // 2, None):
            single_top1("sup", mode, seed, steps)
            name = f"single-{net}-sup" + (f"-{steps}steps" if steps else "")
            evaluator = Evaluator(run_path(name, mode, seed))
            config = evaluator.supernet.space.max() if net == "max" else evaluator.supernet.space.min()
            test = eval_results(run_path(name, mode, seed))["single"]
            candidates.append((evaluator.top1(config, "val"), steps or mode.steps, test))
        val, steps, test = max(candidates)
        out[net] = {"steps": steps, "val": val, "test": test}
    return out


RUNS_OF = {
    "a": lambda mode, seed: single_top1("sup", mode, seed),
    "b": lambda mode, seed: single_top1("fm", mode, seed),
    "c": lambda mode, seed: supernet_top1("supernet-sup", ["train.loss=sup"], mode, seed),
    "d": lambda mode, seed: supernet_top1("supernet-full", ["train.loss=full"], mode, seed),
}


def main() -> None:
    args, mode = parse_mode(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--rows", nargs="+", choices=list(LABELS), default=list(LABELS), help="train and report only these rows"))
    chosen = [r for r in LABELS if r in args.rows]
    rows = {LABELS[r]: {"max": [], "min": []} for r in chosen}
    best = {"max": [], "min": []}
    for seed in mode.seeds:
        for row in chosen:
            for net, value in RUNS_OF[row](mode, seed).items():
                rows[LABELS[row]][net].append(value)
        if "a" in chosen:
            for net, picked in best_step_baseline(mode, seed).items():
                best[net].append(picked)
    if "a" in chosen:
        steps = {net: [b["steps"] for b in best[net]] for net in best}
        rows["(a) at its best step count"] = {net: [b["test"] for b in best[net]] for net in best}
        print(f"(a)'s best step count on the validation split, per seed: {steps}")

    means = {row: sum(rows[LABELS[row]]["max"] + rows[LABELS[row]]["min"]) for row in chosen}
    order = sorted(chosen, key=lambda r: -means[r])
    holds = order == ["d", "b", "c", "a"] if len(chosen) == len(LABELS) else None
    masks = {name: [final_metrics(run_path(name, mode, s)) for s in mode.seeds]
             for row, name in (("b", "single-max-fm"), ("d", "supernet-full")) if row in chosen}
    script = "fmnist_table3" if len(chosen) == len(LABELS) else f"fmnist_table3-{''.join(chosen)}"
    report_max_min(script, mode, "Table 3", rows, {"ranking": order, "claim_holds": holds, "final_metrics": masks,
                                                   "best_step_baseline": best})
    verdict = {True: "holds", False: "does not hold", None: "not all rows run"}[holds]
    print(f"\nranking by the mean of maxnet and minnet: {' > '.join(order)} (claimed d > b > c > a: {verdict})")
    for name, rows_ in masks.items():
        print(f"{name}: mask rate over the last 50 steps {[round(m.get('mask_rate', 0), 3) for m in rows_]}, "
              f"pseudo-label accuracy {[round(m.get('pl_acc', 0), 3) for m in rows_]}")


if __name__ == "__main__":
    main()
