"""A trained run as one object: open_run rebuilds the supernet from the checkpoint alone, and its
subnet/top-1 are the ones every command reports."""

import subprocess
import sys

import pytest
import torch

import matchnas
from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.evaluate import accuracy, calibrated_subnet
from matchnas.experiment import load_experiment
from matchnas.run import open_run
from matchnas.search.budgets import format_cost
from matchnas.search.pick import config_for_budget, subnet_for_budget
from matchnas.train import loop
from tests.test_train import TINY


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=3", "data.val_per_class=2"]), run)
    return run


def test_open_run_is_public_and_carries_the_run(trained_run):
    run = matchnas.open_run(trained_run)
    assert run.classes == [str(k) for k in range(10)] and run.supernet.num_classes == 10
    assert not run.supernet.training
    assert len(run.selection_index) > 0 and run.pool is None and run.fewshot_plan is None


def test_subnet_for_a_budget_is_the_default_pick_with_recalibrated_bn(trained_run):
    run = open_run(trained_run)
    space, k = run.space, run.supernet.num_classes
    budget = (cost.flops(space, space.min(), k) + cost.flops(space, space.max(), k)) / 2
    model = subnet_for_budget(run, format_cost(budget, "flops"), metric="flops")
    config = config_for_budget(run, budget)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert cost.flops(space, config, k) <= budget
    t = run.experiment.train
    expected = calibrated_subnet(run.supernet, config, run.data.recalibration_pool, t.recalibration_images, t.seed,
                                 run.data.flip, normalisation=run.normalisation).eval()  # fmt: skip
    x = torch.randn(4, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))
        stale = run.supernet.extract(config).eval()(x)  # the supernet's shared BN statistics
    assert not torch.allclose(model(x), stale)


def test_top1_is_the_one_evaluation_protocol(trained_run):
    run = open_run(trained_run)
    config = run.space.min()
    net = run.subnet(config)
    assert run.top1(config, "test") == accuracy(net, run.data.source.test, config.resolution, normalisation=run.normalisation)
    assert run.top1(config, "val") == accuracy(net, run.data.sets.val, config.resolution, normalisation=run.normalisation)
    assert run.top1(config) == run.top1(config, "test")  # held out: the test split when there is one
    assert (config, "test") in run._top1  # cached: a search asks for the same config many times


def test_bad_requests_are_one_line_errors(trained_run):
    run = open_run(trained_run)
    with pytest.raises(MatchnasError, match="unknown split 'train'"):
        run.top1(run.space.max(), "train")
    with pytest.raises(MatchnasError, match="fits flops budget"):
        subnet_for_budget(run, "1K")
    with pytest.raises(MatchnasError, match="not a run directory"):
        open_run(trained_run.parent)


def test_reading_a_run_never_loads_the_training_code(trained_run):
    code = (
        "import sys\n"
        "from matchnas.run import open_run\n"
        "from matchnas.search.run import build_context\n"
        "import matchnas.export, matchnas.search.ranking, matchnas.proxies\n"
        f"run = open_run({str(trained_run)!r})\n"
        "build_context(run, 'flops')\n"
        "run.top1(run.space.min())\n"
        "print(sorted(m for m in sys.modules if m.startswith('matchnas.train')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
