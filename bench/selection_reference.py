"""Selection measured against the best known subnet, and ranking without labels, on one trained run.

Usage: python bench/selection_reference.py RUN_DIR [--name NAME] [--quick] [--results DIR]
       [--strategies fixed zeroshot:naswot agreement evolution random evolution+val]

1. The dense reference: the maxnet and the minnet at every resolution, the one-step shrinks of the
   maxnet and ``--randoms 100`` seeded random subnets, each with its test top-1 after BN
   recalibration. Cached in ``<results>/selection_reference-<name>.reference.json`` after every
   subnet, so an interrupted measurement resumes.
2. Five budgets from the minnet's FLOPs to just under the maxnet's (0, 25, 50, 75 and 99% of the
   way): each strategy's pick, its top-1, its cost, its gap to the best known subnet under the
   budget (every subnet measured here, picks included), and its selection time. The strategies
   run as ``matchnas search`` does on the run; ``evolution+val`` is evolution on the 200-image
   validation split below.
3. Over the random subnets, Kendall tau with test top-1 of the label-free score (agreement with
   the maxnet and -KL on ``--agreement-images 2000`` unlabelled images), every zero-cost proxy of
   the registry (on the zero-shot strategy's 64-image batch) and a 200-image validation split.

The validation split is ``--val-images`` seeded images of the test split; test top-1 is measured
on the rest, so no score sees the images it is judged on. Runs on a GPU when there is one.
Writes ``<results>/selection_reference-<name>.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from matchnas.data import ImageSet
from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_json, read_json
from matchnas.proxies import PROXIES, proxy_input
from matchnas.run import Run, open_run
from matchnas.search.agreement import agreement_for_run
from matchnas.search.budgets import format_cost
from matchnas.search.candidates import one_step_shrinks
from matchnas.search.run import build_context
from matchnas.search.strategies import run_strategy
from matchnas.space import SubnetConfig

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.99)
STRATEGIES = ("fixed", "zeroshot:naswot", "agreement", "evolution", "random", "evolution+val")
COUNTS = {  # --quick: tiny counts for an end-to-end check on a tiny run
    "full": {"randoms": 100, "agreement_images": 2000, "val_images": 200, "candidates": 300, "samples": 20,
             "population": 30, "generations": 10},
    "quick": {"randoms": 6, "agreement_images": 64, "val_images": 20, "candidates": 6, "samples": 2,
              "population": 4, "generations": 2},
}


# -- the data: a validation split carved from the test split ----------------------------------------
def carve(images: ImageSet, n_val: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """``n_val`` seeded images as the validation split, the rest as the truth split."""
    if n_val >= len(images):
        raise MatchnasError(f"--val-images {n_val} leaves nothing of the {len(images)} test images to measure on")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 0x5E1))
    part = lambda idx: ImageSet(images.images[idx], images.labels[idx], images.classes)  # noqa: E731
    return part(order[:n_val]), part(order[n_val:])


def describe(space, config: SubnetConfig) -> str:
    """What ``config`` changes from the maxnet at its resolution (``s5 depth 4->3``), short."""
    top = replace(space.max(), resolution=config.resolution)
    changes = [] if config.resolution == space.max().resolution else [f"res {config.resolution}"]
    for i, (a, b) in enumerate(zip(top.stages, config.stages)):
        for name in ("depth", "width"):
            if getattr(a, name) != getattr(b, name):
                changes.append(f"s{i} {name} {getattr(a, name)}->{getattr(b, name)}")
        for name in ("kernel", "expand"):
            diff = [j for j, (x, y) in enumerate(zip(getattr(a, name), getattr(b, name))) if x != y]
            if diff:
                changes.append(f"s{i} {name} b{','.join(map(str, diff))}")
    return "; ".join(changes[:4]) + (f" (+{len(changes) - 4})" if len(changes) > 4 else "") or "maxnet"


# -- the dense reference, cached ------------------------------------------------------------------
class Reference:
    """Rows by config id: config, cost, kinds, test top-1 and, for random subnets, every score.
    Saved after each new measurement; a cache made with other counts is refused."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header, self.rows = path, header, {}
        if path.exists():
            body = read_json(path, "the reference cache")
            if body.get("header") != header:
                raise MatchnasError(f"{path} was measured with {body.get('header')}, not {header}: move it away to start afresh")
            self.rows = body["rows"]

    def save(self) -> None:
        atomic_write_json(self.path, {"header": self.header, "rows": self.rows})

    def add(self, config: SubnetConfig, kind: str, cost: float, measure) -> dict:
        """The row of ``config`` with ``kind`` recorded; ``measure(config) -> dict`` fills a new one."""
        row = self.rows.get(config.id)
        if row is None:
            row = self.rows[config.id] = {"config": config.to_dict(), "cost": cost, "kinds": [], **measure(config)}
        if kind not in row["kinds"]:
            row["kinds"].append(kind)
        self.save()
        return row


def reference_configs(space, n_randoms: int, seed: int) -> list[tuple[SubnetConfig, str]]:
    configs = [(replace(space.max(), resolution=r), f"max@{r}") for r in space.resolutions]
    configs += [(replace(space.min(), resolution=r), f"min@{r}") for r in space.resolutions]
    configs += [(c, "shrink") for c in one_step_shrinks(space, space.max())]
    rng = np.random.default_rng([seed, 0x2EF])
    configs += [(space.sample(rng), "random") for _ in range(n_randoms)]
    return configs


def build_reference(run: Run, ctx, ref: Reference, truth: ImageSet, val: ImageSet, n_randoms: int,
                    proxies: list[str]) -> None:
    label_free = agreement_for_run(run, ref.header["agreement_images"])

    def test_only(config):
        return {"test_top1": run.top1(config, truth)}

    def scored(config):
        row = test_only(config)
        row["val_top1"] = run.top1(config, val)
        began = time.perf_counter()
        row["agreement"], row["kl"] = label_free.scores(config)
        row["agreement_s"] = time.perf_counter() - began
        inp = proxy_input(ctx.supernet, config, ctx.proxy_images, ctx.seed, ctx.normalisation)
        row["proxies"], row["proxy_ms"] = {}, {}
        for name in proxies:
            began = time.perf_counter()
            row["proxies"][name] = float(PROXIES[name](inp))
            row["proxy_ms"][name] = 1e3 * (time.perf_counter() - began)
        return row

    configs = reference_configs(ctx.space, n_randoms, ctx.seed)
    for k, (config, kind) in enumerate(configs, start=1):
        row = ref.add(config, kind, ctx.metric(config), scored if kind == "random" else test_only)
        if kind == "random" and "agreement" not in row:  # measured first as another kind
            row.update(scored(config))
            ref.save()
        print(f"  reference {k}/{len(configs)} {kind:>8} {format_cost(row['cost'], 'flops'):>8} "
              f"top-1 {100 * row['test_top1']:.2f}%", flush=True)


# -- the strategies against the reference --------------------------------------------------------
def run_strategies(run: Run, ref: Reference, truth: ImageSet, val: ImageSet, budgets: list[float], strategies,
                   options: dict) -> list[dict]:
    """Each strategy on a fresh context (its own caches, so its time includes the maxnet's
    predictions and every score it needs); picks measured into the reference."""
    rows = []
    for spec in strategies:
        ctx = build_context(run, "flops", options=options)
        name = spec
        if spec.endswith("+val"):
            name = spec[: -len("+val")]
            ctx.validation_accuracy = lru_cache(maxsize=None)(lambda config: run.top1(config, val))
        began = time.perf_counter()
        result = run_strategy(name, ctx, budgets)
        seconds = time.perf_counter() - began
        for pick in result.picks:
            row = None
            if pick.config is not None:
                row = ref.add(pick.config, f"pick:{spec}", pick.cost, lambda c: {"test_top1": run.top1(c, truth)})
            rows.append({"strategy": spec, "budget": pick.budget, "config_id": pick.config.id if pick.config else None,
                         "cost": pick.cost, "score": pick.score, "test_top1": row["test_top1"] if row else None,
                         "seconds": seconds, "evaluated": len(result.evaluated), "score_name": result.score_name})
        print(f"  {spec}: {seconds:.1f} s, {len(result.evaluated)} configs scored by {result.score_name}", flush=True)
    return rows


def best_known(ref: Reference, budget: float) -> dict | None:
    fitting = [(row["test_top1"], -row["cost"], cid) for cid, row in ref.rows.items() if row["cost"] <= budget]
    if not fitting:
        return None
    *_, cid = max(fitting)
    return {"config_id": cid, **ref.rows[cid]}


def rank_scores(ref: Reference, proxies: list[str]) -> list[dict]:
    """Kendall tau with test top-1 over the random subnets, each score signed so +1 is perfect."""
    rows = [r for r in ref.rows.values() if "random" in r["kinds"] and "agreement" in r]
    truth = [r["test_top1"] for r in rows]
    scores = {"agreement (label-free)": ([r["agreement"] for r in rows], None),
              "-KL (label-free)": ([-r["kl"] for r in rows], None),
              f"val top-1 ({ref.header['val_images']} images)": ([r["val_top1"] for r in rows], None)}
    for name in proxies:
        sign = 1.0 if PROXIES[name].higher_is_better else -1.0
        scores[f"proxy {name}"] = ([sign * r["proxies"][name] for r in rows], float(np.mean([r["proxy_ms"][name] for r in rows])))
    mean_agreement_s = float(np.mean([r["agreement_s"] for r in rows])) if rows else float("nan")
    out = []
    for name, (values, ms) in scores.items():
        tau = stats.kendalltau(values, truth).statistic if len(rows) > 1 else float("nan")
        if name.startswith(("agreement", "-KL")):
            ms = 1e3 * mean_agreement_s
        out.append({"score": name, "kendall_tau": float(tau), "n": len(rows), "ms_per_config": ms})
    return sorted(out, key=lambda r: -np.nan_to_num(r["kendall_tau"], nan=-2))


# -- the report -------------------------------------------------------------------------------------
def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def tables(space, budgets: list[float], picks: list[dict], ranking: list[dict], ref: Reference) -> str:
    lines = ["### Best known subnet under each budget", "",
             "| budget | best known | FLOPs | test top-1 | what it changes from the maxnet |", "|---:|---|---:|---:|---|"]
    for b in budgets:
        best = best_known(ref, b)
        if best:
            config = SubnetConfig.from_dict(best["config"])
            lines.append(f"| {format_cost(b, 'flops')} | {best['config_id']} ({', '.join(best['kinds'])}) | "
                         f"{format_cost(best['cost'], 'flops')} | {pct(best['test_top1'])} | {describe(space, config)} |")
    lines += ["", "### Each strategy's pick against the best known", "",
              "| budget | strategy | pick | FLOPs | test top-1 | gap (points) |", "|---:|---|---|---:|---:|---:|"]
    for row in picks:
        best = best_known(ref, row["budget"])
        gap = f"{100 * (best['test_top1'] - row['test_top1']):.2f}" if best and row["test_top1"] is not None else "-"
        lines.append(f"| {format_cost(row['budget'], 'flops')} | {row['strategy']} | {row['config_id'] or 'none fits'} | "
                     f"{format_cost(row['cost'], 'flops')} | {pct(row['test_top1'])} | {gap} |")
    n = ranking[0]["n"] if ranking else 0
    lines += ["", f"### Ranking {n} random subnets: Kendall tau with test top-1", "",
              "| score | Kendall tau | ms per subnet |", "|---|---:|---:|"]
    for r in ranking:
        ms = "-" if r["ms_per_config"] is None else f"{r['ms_per_config']:.0f}"
        lines.append(f"| {r['score']} | {r['kendall_tau']:+.3f} | {ms} |")
    lines += ["", "### Selection time (5 budgets, one process)", "", "| strategy | seconds | subnets scored | ranked by |",
              "|---|---:|---:|---|"]
    for spec in dict.fromkeys(r["strategy"] for r in picks):
        row = next(r for r in picks if r["strategy"] == spec)
        lines.append(f"| {spec} | {row['seconds']:.1f} | {row['evaluated']} | {row['score_name']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained run folder")
    parser.add_argument("--name", help="the results' name (default: the run's parent and folder names)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, for an end-to-end check on a tiny run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the results and the cache go (default: bench/results)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help="default: %(default)s")
    parser.add_argument("--proxies", nargs="+", help="zero-cost proxies ranked (default: every registered one)")
    for key, value in COUNTS["full"].items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default: {value} ({COUNTS['quick'][key]} with --quick)")
    args = parser.parse_args(argv)
    counts = COUNTS["quick" if args.quick else "full"]
    for key in counts:
        if getattr(args, key) is None:
            setattr(args, key, counts[key])
    return args


def five_budgets(ctx) -> list[float]:
    """FLOPs budgets at ``FRACTIONS`` of the way from the minnet's cost to the maxnet's; the first
    one fits the minnet, the last one is just under the maxnet."""
    low, high = ctx.metric(ctx.space.min()), ctx.metric(ctx.space.max())
    return [math.ceil(low + f * (high - low)) for f in FRACTIONS]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    proxies = args.proxies or sorted(PROXIES)
    name = args.name or f"{args.run_dir.resolve().parent.name}-{args.run_dir.resolve().name}" + ("-quick" if args.quick else "")
    run = open_run(args.run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    seed = run.experiment.train.seed
    val, truth = carve(run.images("held_out"), args.val_images, seed)
    header = {"run": str(args.run_dir.resolve()), "val_images": args.val_images, "truth_images": len(truth),
              "agreement_images": args.agreement_images, "randoms": args.randoms, "proxies": proxies,
              "recalibration_images": run.experiment.train.recalibration_images}
    args.results.mkdir(parents=True, exist_ok=True)
    ref = Reference(args.results / f"selection_reference-{name}.reference.json", header)
    options = {"candidates": args.candidates, "samples": args.samples, "population": args.population,
               "generations": args.generations, "agreement_images": args.agreement_images}
    ctx = build_context(run, "flops", options=options)
    budgets = five_budgets(ctx)
    print(f"{run.dir}: {len(truth)} test images measured, {len(val)} as the validation split; budgets "
          + ", ".join(format_cost(b, "flops") for b in budgets), flush=True)
    build_reference(run, ctx, ref, truth, val, args.randoms, proxies)
    picks = run_strategies(run, ref, truth, val, budgets, args.strategies, options)
    ranking = rank_scores(ref, proxies)
    report = tables(ctx.space, budgets, picks, ranking, ref)
    best = {format_cost(b, "flops"): best_known(ref, b) for b in budgets}
    path = args.results / f"selection_reference-{name}.json"
    atomic_write_json(path, {"script": "selection_reference", "header": header, "options": options, "budgets": budgets,
                             "best_known": best, "picks": picks, "ranking": ranking, "report": report})
    print(report)
    print(f"\nwrote {path} (reference cached in {ref.path})")


if __name__ == "__main__":
    main()
