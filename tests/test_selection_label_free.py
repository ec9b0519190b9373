"""Selection without labels and candidates that spend the budget: the agreement score, the
budget-spending family, front.json, searches on a run with no validation split, --val-dir class
matching."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from matchnas import cost
from matchnas.cli import main
from matchnas.data import LITE_NORMALISATION
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.search import SearchContext, run_strategy
from matchnas.search.agreement import AgreementScore, agreement_scores
from matchnas.search.budgets import Metric
from matchnas.search.candidates import budget_family, one_step_shrinks
from matchnas.search.front import pareto
from matchnas.search.validation import folder_name, load_validation_dir, match_classes
from matchnas.train import loop
from tests.test_train import TINY


def _metric(net):
    return Metric("flops", "FLOPs", lambda c: float(cost.flops(net.space, c, net.num_classes)))


def _agreement(net, n=40, measure="agreement"):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 20, 20), dtype=torch.uint8, generator=gen)
    return AgreementScore(net, images, images, recalibration_images=16, seed=0, flip=False,
                          normalisation=LITE_NORMALISATION, measure=measure, batch_size=16)


# -- the score --------------------------------------------------------------------------------------
def test_agreement_scores_of_identical_predictions_are_perfect():
    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    agree, kl = agreement_scores(torch.softmax(logits, 1), logits)
    assert agree == 1.0 and kl == pytest.approx(0.0, abs=1e-6)  # float32 softmax
    agree, kl = agreement_scores(torch.softmax(logits, 1), -logits)
    assert agree == 0.0 and kl > 0


def test_maxnet_agrees_with_itself_and_an_equal_config_scores_the_same(tiny_supernet):
    score = _agreement(tiny_supernet)
    top = tiny_supernet.space.max()
    assert score.scores(top) == (1.0, pytest.approx(0.0, abs=1e-9))
    same = replace(top, stages=tuple(replace(s) for s in top.stages))  # a new value, equal to the maxnet
    assert same is not top and score(same) == 1.0
    assert score.as_measure("kl")(same) == pytest.approx(0.0, abs=1e-9)


def test_agreement_of_a_smaller_subnet_is_a_fraction_and_cached(tiny_supernet):
    score = _agreement(tiny_supernet)
    small = tiny_supernet.space.min()
    agree, kl = score.scores(small)
    assert 0.0 <= agree <= 1.0 and kl >= 0.0
    assert score.scores(small) == (agree, kl) and small in score._cache
    with pytest.raises(MatchnasError, match="label-free measure"):
        _agreement(tiny_supernet, measure="l2")


# -- candidates that spend the budget -----------------------------------------------------------
def test_one_step_shrinks_change_one_choice_one_step(tiny_space):
    top = tiny_space.max()
    shrinks = one_step_shrinks(tiny_space, top)
    assert shrinks and len(set(shrinks)) == len(shrinks)
    for s in shrinks:
        assert s in tiny_space and s.resolution == top.resolution
        changed = [i for i, (a, b) in enumerate(zip(s.stages, top.stages)) if a != b]
        assert len(changed) == 1
    assert one_step_shrinks(tiny_space, replace(tiny_space.min(), resolution=20)) == []


def test_budget_family_holds_only_configs_under_the_budget(tiny_supernet):
    space, metric = tiny_supernet.space, _metric(tiny_supernet)
    family = budget_family(space, metric)
    lo, hi = metric(space.min()), metric(space.max())
    for budget in np.linspace(lo * 0.9, hi * 1.1, 12):
        members = family.fitting(budget)
        assert all(metric(c) == c_ <= budget and c in space for c, c_ in members)
        if budget >= lo:
            assert members  # the minnet fits, so every resolution that can fit adds something
    for r in space.resolutions:  # the maxnet at every resolution, where it fits
        top = replace(space.max(), resolution=r)
        assert top in dict(family.fitting(metric(top)))
    below_max = family.fitting(hi - 1)  # just under the maxnet: its one-step shrinks
    shrinks = set(one_step_shrinks(space, space.max()))
    assert any(c in shrinks for c, _ in below_max)


def test_fixed_rule_falls_back_to_a_spending_candidate_that_costs_more(tiny_supernet, rng):
    from matchnas.selection_index import SelectionIndex

    space, metric = tiny_supernet.space, _metric(tiny_supernet)
    index = SelectionIndex()
    small = min((space.sample(rng) for _ in range(40)), key=metric)  # the index knows one cheap subnet
    index.record(small, 1)
    ctx = SearchContext(tiny_supernet, metric, index=index)
    budget = metric(space.max()) - 1
    (pick,) = run_strategy("fixed", ctx, [budget]).picks
    best_member = max(ctx.family.fitting(budget), key=lambda m: m[1])
    assert pick.config == best_member[0] and pick.cost == best_member[1] > metric(small)
    # a band pick that spends the budget at least as well stands
    index.record(best_member[0], 2)
    assert run_strategy("fixed", ctx, [budget]).picks[0].config == best_member[0]


def test_label_free_strategy_and_searches_without_validation(tiny_supernet):
    metric = _metric(tiny_supernet)
    space = tiny_supernet.space
    budgets = [metric(space.min()) * 1.5, metric(space.max()) - 1]
    ctx = SearchContext(tiny_supernet, metric, label_free=_agreement(tiny_supernet),
                        options={"candidates": 6, "samples": 3, "population": 6, "generations": 2})
    for strategy in ("agreement", "agreement:kl", "evolution", "random"):
        result = run_strategy(strategy, ctx, budgets)
        assert all(p.config is not None and p.cost <= p.budget for p in result.picks), strategy
        evaluated = {c for c, *_ in result.evaluated}
        assert set(ctx.spending(budgets)) <= evaluated, strategy  # every strategy considers them
        assert result.score_name in ("agreement", "-KL"), strategy
    with pytest.raises(MatchnasError, match="agreement:MEASURE"):
        run_strategy("agreement:l1", ctx, budgets)


def test_pareto_front_keeps_the_undominated(tiny_space):
    a, b, c = tiny_space.min(), tiny_space.max(), replace(tiny_space.max(), resolution=16)
    rows = [(a, 1.0, 0.5), (c, 2.0, 0.4), (b, 3.0, 0.9)]
    assert pareto(rows) == {a, b}
    assert pareto(rows, higher_is_better=False) == {a, c}


# -- on a trained run with no validation split --------------------------------------------------
@pytest.fixture(scope="module")
def unvalidated_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("label-free") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=3"]), run)
    return run


def test_evolution_runs_on_a_run_with_no_validation_split_and_writes_the_front(unvalidated_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", str(unvalidated_run), "--budgets", "1K,6M,20M", "--strategy", "evolution",
                 "--population", "4", "--generations", "2", "--agreement-images", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agreement" in printed and "front.json" in printed
    selections = json.loads((out / "selections.json").read_text())
    front = json.loads((out / "front.json").read_text())
    assert front["score"] == "agreement" and front["higher_is_better"] is True
    rows = front["configs"]
    costs = [r["cost"] for r in rows]
    assert costs == sorted(costs) and all(0.0 <= r["score"] <= 1.0 for r in rows)
    picked = {p["config_id"] for p in selections["picks"] if p["config_id"]}
    assert picked <= {r["config_id"] for r in rows if r["picked_for"]}
    assert any(r["pareto"] for r in rows) and any(r["budget_spending"] for r in rows)
    assert len({r["config_id"] for r in rows}) == len(rows)


def test_front_lists_every_evaluated_config_with_its_cost(unvalidated_run, tmp_path):
    from matchnas.search.budgets import resolve_metric
    from matchnas.search.run import build_context

    out = tmp_path / "out"
    assert main(["search", str(unvalidated_run), "--budgets", "6M,20M", "--strategy", "fixed", "--out", str(out)]) == 0
    rows = json.loads((out / "front.json").read_text())["configs"]
    ctx = build_context(unvalidated_run, "flops")
    result = run_strategy("fixed", ctx, [6e6, 20e6])
    assert {r["config_id"] for r in rows} == {c.id for c, *_ in result.evaluated}
    metric = resolve_metric("flops", ctx.supernet)
    space = ctx.space
    for r in rows:
        assert r["cost"] == metric(space.config_from_json(json.dumps(r["config"])))


# -- --val-dir class matching ---------------------------------------------------------------------
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def test_class_mapping_of_t_shirt_top():
    assert folder_name("T-shirt/top") == "T-shirt_top"
    folders = tuple(sorted(folder_name(c) for c in FASHION))
    matched = match_classes(folders, FASHION)
    assert [FASHION[k] for k in matched] == sorted(FASHION, key=folder_name)
    assert matched[folders.index("T-shirt_top")] == 0
    with pytest.raises(MatchnasError, match="'Hat' is not one of the run's classes"):
        match_classes(("Hat",), FASHION)


def test_val_dir_labels_follow_the_run_order_and_say_so(tmp_path):
    classes = ("b/x", "a")
    for folder, shade in (("a", 10), ("b_x", 200)):
        (tmp_path / "labeled" / folder).mkdir(parents=True)
        Image.new("L", (8, 8), shade).save(tmp_path / "labeled" / folder / "0.png")
    images, note = load_validation_dir(tmp_path, 8, classes)
    assert images.classes == classes
    by_shade = {int(img.float().mean()): int(label) for img, label in zip(images.images, images.labels)}
    assert by_shade == {10: 1, 200: 0}  # 'a' is the run's class 1, 'b_x' is 'b/x', class 0
    assert note is not None and "'b_x' is 'b/x'" in note and "\n" not in note
    _, none = load_validation_dir(tmp_path, 8, ("a", "b_x"))
    assert none is None  # the same names in the same order: nothing to say
