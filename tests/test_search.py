"""Selection strategies: budgets, the fixed rule, random and evolutionary search, the command."""

import json

import numpy as np
import pytest

from matchnas import cost
from matchnas.cli import main
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.search import SearchContext, parse_budgets, register_strategy, run_strategy
from matchnas.search.budgets import Metric
from matchnas.search.strategies import best_under_budgets
from matchnas.train import loop
from matchnas.selection_index import SelectionIndex
from tests.test_train import TINY


def _flops_metric(net):
    return Metric("flops", "FLOPs", lambda c: float(cost.flops(net.space, c, net.num_classes)))


def test_parse_budgets():
    assert parse_budgets("8M, 4M,1.5G,300") == [300.0, 4e6, 8e6, 1.5e9]
    for bad in ("4X", "", "-3M", "4M,,8M"):
        with pytest.raises(MatchnasError):
            parse_budgets(bad)


def test_best_under_budgets_reports_the_cheapest_when_nothing_fits(tiny_space):
    a, b = tiny_space.min(), tiny_space.max()
    picks = best_under_budgets([(a, 10.0, 0.5), (b, 20.0, 0.9)], [5.0, 15.0, 25.0])
    assert [p.config for p in picks] == [None, a, b]
    assert picks[0].cost == 10.0


def test_fixed_rule_ranks_random_subnets_by_index(tiny_supernet, rng):
    space = tiny_supernet.space
    metric = _flops_metric(tiny_supernet)
    index = SelectionIndex()
    randoms = list(dict.fromkeys(space.sample(rng) for _ in range(30)))
    for t, config in enumerate(randoms, start=1):
        index.record(config, t)
        index.record(space.max(), t)
        index.record(space.min(), t)
    ctx = SearchContext(tiny_supernet, metric, index=index)
    cost_max, cost_min = metric(space.max()), metric(space.min())
    mid = float(np.median([metric(c) for c in randoms]))
    result = run_strategy("fixed-literal", ctx, [cost_min - 1, mid, cost_max])
    none_fits, middle, top = result.picks
    assert none_fits.config is None and none_fits.cost == cost_min
    fitting = [c for c in randoms if metric(c) <= mid and c not in (space.max(), space.min())]
    assert middle.config == max(fitting, key=lambda c: index.scores[c])  # argmax I(a) under the budget
    assert top.config == space.max()
    only_min = run_strategy("fixed-literal", ctx, [cost_min])
    assert only_min.picks[0].config == space.min() or metric(only_min.picks[0].config) <= cost_min


def _cheap_last_index(net, rng):
    """An index whose most recent random subnets are the cheapest (what the literal rule trips
    on): randoms sampled in order of decreasing cost, plus max and min at every step."""
    space, metric = net.space, _flops_metric(net)
    randoms = sorted(dict.fromkeys(space.sample(rng) for _ in range(60)), key=metric, reverse=True)
    randoms = [c for c in randoms if c not in (space.max(), space.min())]
    index = SelectionIndex()
    for t, config in enumerate(randoms, start=1):
        for c in (space.max(), space.min(), config):
            index.record(c, t)
    return randoms, index


def test_fixed_rule_picks_rise_with_the_budget(tiny_supernet, rng):
    space, metric = tiny_supernet.space, _flops_metric(tiny_supernet)
    randoms, index = _cheap_last_index(tiny_supernet, rng)
    ctx = SearchContext(tiny_supernet, metric, index=index)
    costs = sorted(metric(c) for c in randoms)
    budgets = [float(np.quantile(costs, q)) for q in (0.2, 0.4, 0.6, 0.8, 1.0)]
    literal = [p.config for p in run_strategy("fixed-literal", ctx, budgets).picks]
    assert len(set(literal)) == 1  # the most recent subnet fits every budget: always the same pick
    banded = run_strategy("fixed", ctx, budgets).picks
    picked = [p.cost for p in banded]
    assert picked == sorted(picked) and len(set(picked)) >= 4  # the picks rise with the budget
    for pick in banded:
        band = [c for c in randoms if 0.7 * pick.budget <= metric(c) <= pick.budget]
        # the most recent in the band, unless a budget-spending candidate costs more
        assert pick.config == _spend(ctx, max(band, key=lambda c: index.scores[c]), pick.budget)
    narrow = run_strategy("fixed:1.0", ctx, [costs[0] + 0.5])  # an empty band: the literal rule
    literal = run_strategy("fixed-literal", ctx, [costs[0] + 0.5]).picks[0].config
    assert narrow.picks[0].config == _spend(ctx, literal, costs[0] + 0.5)
    assert run_strategy("fixed", ctx, [metric(space.max())]).picks[0].config == space.max()
    with pytest.raises(MatchnasError, match="fixed:LAMBDA"):
        run_strategy("fixed:wide", ctx, budgets)


def _spend(ctx, config, budget):
    """What the fixed rule answers when the band's pick is ``config``: the most expensive
    budget-spending candidate if it costs more."""
    members = ctx.family.fitting(budget)
    spender, cost_ = max(members, key=lambda m: m[1]) if members else (None, -1.0)
    return spender if config is None or cost_ > ctx.metric(config) else config


def test_fixed_rule_respects_the_pool(tiny_supernet, rng):
    space = tiny_supernet.space
    index = SelectionIndex()
    configs = list(dict.fromkeys(space.sample(rng) for _ in range(20)))
    for t, config in enumerate(configs, start=1):
        index.record(config, t)
    pool = tuple(configs[:3])
    ctx = SearchContext(tiny_supernet, _flops_metric(tiny_supernet), index=index, pool=pool)
    result = run_strategy("fixed", ctx, [1e12])
    assert {c for c, _, _ in result.evaluated} <= {*pool, space.max(), space.min()}  # what a narrowed run trains


def _synthetic_accuracy(net):
    """A deterministic stand-in for validation accuracy: more FLOPs is better, with diminishing
    returns, plus a config-dependent wiggle, so a search has something to find."""
    top = cost.flops(net.space, net.space.max(), net.num_classes)

    def accuracy(config):
        f = cost.flops(net.space, config, net.num_classes) / top
        return float(np.sqrt(f) * 0.9 + 0.05 * (int(config.id, 16) % 7) / 7)

    return accuracy


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_searches_meet_every_budget(strategy, tiny_supernet):
    metric = _flops_metric(tiny_supernet)
    space = tiny_supernet.space
    budgets = [metric(space.min()) * f for f in (1.2, 2.0, 3.0)] + [metric(space.max())]
    ctx = SearchContext(tiny_supernet, metric, validation_accuracy=_synthetic_accuracy(tiny_supernet),
                        options={"samples": 8, "population": 8, "generations": 4})
    result = run_strategy(strategy, ctx, budgets)
    assert len(result.picks) == len(budgets)
    for pick in result.picks:
        assert pick.config is not None and pick.cost <= pick.budget and pick.config in space
        fitting = [s for _, c, s in result.evaluated if c <= pick.budget]
        assert pick.score == max(fitting)  # the best evaluated config under the budget
    if strategy == "evolution":
        assert len(result.evaluated) <= 8 * 4 + len(ctx.spending(budgets))
        front = result.front
        for _, c, s in front:  # no front member is dominated by an evaluated config
            assert not any(c2 <= c and s2 > s for _, c2, s2 in result.evaluated if (c2, s2) != (c, s))


def test_search_strategies_that_need_validation_say_so(tiny_supernet):
    ctx = SearchContext(tiny_supernet, _flops_metric(tiny_supernet))
    with pytest.raises(MatchnasError, match="needs a validation split"):
        run_strategy("evolution", ctx, [1e9])


def test_registry_refuses_duplicates_and_unknown_names(tiny_supernet):
    with pytest.raises(ValueError, match="registered twice"):
        register_strategy("fixed")(lambda ctx, budgets, arg: None)
    with pytest.raises(MatchnasError, match="unknown strategy 'genetic'"):
        run_strategy("genetic", SearchContext(tiny_supernet, _flops_metric(tiny_supernet)), [1.0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=3", "data.val_per_class=2"]), run)
    return run


def test_search_command_writes_selections_and_plot(trained_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", str(trained_run), "--metric", "flops", "--budgets", "1K,6M,20M",
                 "--strategy", "evolution", "--population", "4", "--generations", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "none fits" in printed and "cheapest config costs" in printed
    body = json.loads((out / "selections.json").read_text())
    assert [p["budget"] for p in body["picks"]] == [1e3, 6e6, 20e6]
    assert body["picks"][0]["config"] is None
    assert all(p["test_top1"] is not None for p in body["picks"][1:])
    assert (out / "selections.png").read_bytes()[:4] == b"\x89PNG"


def test_search_command_bad_input(trained_run, capsys):
    assert main(["search", str(trained_run), "--metric", "watts", "--budgets", "1M"]) == 2
    assert "unknown metric 'watts'" in capsys.readouterr().err
