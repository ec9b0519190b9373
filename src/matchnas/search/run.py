"""``matchnas search``: answer a list of budgets for a trained run, print a table, write
``selections.json``, ``front.json`` (every evaluated subnet's cost and score) and a Pareto plot."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from matchnas.errors import MatchnasError
from matchnas.io import as_path, atomic_write_json, check_writable, read_json
from matchnas.lock import run_lock
from matchnas.run import Run, open_run
from matchnas.search.agreement import AGREEMENT_IMAGES, agreement_for_run
from matchnas.search.budgets import check_metric, format_cost, parse_budgets, resolve_metric
from matchnas.search.front import write_front
from matchnas.search.plot import plot_search
from matchnas.search.context import SearchContext, SearchResult
from matchnas.search.strategies import DEFAULT_STRATEGY, run_strategy
from matchnas.search.validation import load_validation_dir


def build_context(run: Run | str | Path, metric_spec: str, val_dir: str | None = None,
                  options: dict | None = None) -> SearchContext:
    """Everything a strategy may use, for a trained run (a :class:`~matchnas.run.Run` or its folder).
    ``options["agreement_images"]``: unlabelled images the label-free score uses (2000)."""
    run = run if isinstance(run, Run) else open_run(run)
    experiment, data = run.experiment, run.data
    metric = resolve_metric(metric_spec, run.supernet)
    validation, notes = data.sets.val, []
    if val_dir is not None:
        validation, note = load_validation_dir(val_dir, experiment.data.image_size, tuple(data.source.train.classes))
        notes += [note] if note else []

    accuracy_fn = None
    if validation is not None and len(validation):
        accuracy_fn = lru_cache(maxsize=None)(lambda config: run.top1(config, validation))

    proxy_source = data.sets.unlabeled.images if len(data.sets.unlabeled) else data.sets.labeled.images
    generator = torch.Generator().manual_seed(experiment.train.seed)
    proxy_images = proxy_source[torch.randperm(len(proxy_source), generator=generator)[:64]]
    options = dict(options or {})
    label_free = agreement_for_run(run, int(options.get("agreement_images") or AGREEMENT_IMAGES)) if len(proxy_source) else None
    return SearchContext(
        supernet=run.supernet,
        metric=metric,
        seed=experiment.train.seed,
        index=run.selection_index,
        pool=run.pool,
        validation_accuracy=accuracy_fn,
        proxy_images=proxy_images,
        options=options,
        run=run,
        label_free=label_free,
        notes=notes,
    )


def check_options(strategy: str, metric: str, val_dir: str | None) -> None:
    """Refuse a strategy, metric or validation folder that cannot work, before the run is loaded."""
    from matchnas.proxies import get_proxy
    from matchnas.search.strategies import STRATEGIES

    name, _, argument = strategy.partition(":")
    if name not in STRATEGIES:
        raise MatchnasError(f"unknown strategy '{strategy}'; known: {', '.join(sorted(STRATEGIES))}")
    if name == "zeroshot" and argument:
        get_proxy(argument)
    check_metric(metric)
    metric_name, _, lut = metric.partition(":")
    if metric_name == "latency" and lut:
        read_json(lut, "latency table")
    if val_dir is not None and not Path(val_dir).is_dir():
        raise MatchnasError(f"--val-dir {val_dir}: no such folder")


def search(run_dir: str | Path, metric: str, budgets: str, strategy: str | None = None, val_dir: str | None = None,
           out: str | Path | None = None, options: dict | None = None) -> str:
    run_dir = Path(run_dir)
    strategy = strategy or DEFAULT_STRATEGY
    budget_values = parse_budgets(budgets, metric)
    check_options(strategy, metric, val_dir)
    out = as_path(out, "--out") if out is not None else run_dir
    check_writable(out / "selections.json", "search output")
    with run_lock(out, "search", create=True):  # no other writer in the run (or --out) meanwhile
        return _search(run_dir, metric, budget_values, strategy, val_dir, out, options)


def _search(run_dir: Path, metric: str, budget_values, strategy: str, val_dir: str | None, out: Path,
            options: dict | None) -> str:
    ctx = build_context(run_dir, metric, val_dir, options)
    result = run_strategy(strategy, ctx, budget_values)
    tested = {}
    if ctx.run.data.source.test is not None:
        for pick in result.picks:
            if pick.config is not None and pick.config not in tested:
                tested[pick.config] = ctx.run.top1(pick.config)
    _write_selections(out / "selections.json", run_dir, ctx, metric, strategy, result, tested, ctx.run.classes)
    write_front(out / "front.json", run_dir, strategy, ctx.metric.name, ctx.metric.unit, result, set(ctx.spending(budget_values)))
    title = f"{run_dir.name}: {strategy}, {ctx.metric.name} budgets, {result.seconds:.1f} s to select"
    plot_search(out / "selections.png", result, tested, ctx.metric.name, ctx.metric.unit, title)
    return "\n".join([*ctx.notes, _table(result, tested, ctx.metric.name, strategy),
                      f"wrote {out / 'selections.json'}, {out / 'front.json'} and {out / 'selections.png'}"])


def _table(result: SearchResult, tested: dict, metric: str, strategy: str) -> str:
    lines = [f"strategy {strategy}: {result.seconds:.2f} s to select ({len(result.evaluated)} configs scored)",
             f"{'budget':>12} {'config':>10} {metric:>12} {result.score_name:>12} {'test top-1':>10}"]
    for p in result.picks:
        if p.config is None:
            lines.append(f"{format_cost(p.budget, metric):>12} {'-':>10} {'none fits':>12}   cheapest config costs {format_cost(p.cost, metric)}")
            continue
        top1 = f"{100 * tested[p.config]:.2f}%" if p.config in tested else "-"
        score = f"{p.score:.4g}" if p.score is not None else "-"
        lines.append(f"{format_cost(p.budget, metric):>12} {p.config.id:>10} {format_cost(p.cost, metric):>12} {score:>12} {top1:>10}")
    return "\n".join(lines)


def _write_selections(path: Path, run_dir: Path, ctx, metric: str, strategy: str, result: SearchResult, tested: dict,
                      classes: list[str]) -> None:
    space = ctx.space
    picks = [
        {
            "budget": p.budget,
            "config_id": p.config.id if p.config else None,
            "config": p.config.to_dict() if p.config else None,
            "cost": p.cost,
            "score": p.score,
            "test_top1": tested.get(p.config),
        }
        for p in result.picks
    ]
    body = {
        "run": str(run_dir),
        "metric": metric,
        "unit": ctx.metric.unit,
        "strategy": strategy,
        "seconds": result.seconds,
        "space": space.name,
        "space_digest": space.digest,
        "classes": classes,
        "picks": picks,
        "front": [{"config": c.to_dict(), "cost": cost, "val_top1": s} for c, cost, s in result.front],
    }
    atomic_write_json(path, body)
