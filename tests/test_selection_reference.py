"""bench/selection_reference.py end to end on a tiny run with tiny counts: the reference, the
picks against the best known, the ranking table, and a second run that resumes from the cache."""

import importlib.util
import json
from pathlib import Path

import pytest

from matchnas.experiment import load_experiment
from matchnas.train import loop
from tests.test_train import TINY

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "selection_reference.py"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("selection-reference") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=3"]), run)
    return run


def _reference(run, results, capsys, strategies=("fixed", "agreement", "evolution+val")):
    spec = importlib.util.spec_from_file_location("selection_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(run), "--quick", "--results", str(results), "--name", "tiny", "--randoms", "3",
                 "--proxies", "flops", "naswot", "--strategies", *strategies])
    return capsys.readouterr().out


def test_selection_reference_end_to_end_and_resumes(tiny_run, tmp_path, capsys):
    printed = _reference(tiny_run, tmp_path, capsys)
    body = json.loads((tmp_path / "selection_reference-tiny.json").read_text())
    assert len(body["budgets"]) == 5 and body["budgets"] == sorted(body["budgets"])
    assert {r["strategy"] for r in body["picks"]} == {"fixed", "agreement", "evolution+val"}
    for pick in body["picks"]:
        best = body["best_known"]
        assert pick["config_id"] is not None and pick["cost"] <= pick["budget"]
        known = next(v for v in best.values() if v["cost"] <= pick["budget"])
        assert known["test_top1"] is not None
    scores = {r["score"] for r in body["ranking"]}
    assert {"agreement (label-free)", "-KL (label-free)", "proxy flops", "proxy naswot"} <= scores
    assert any(s.startswith("val top-1") for s in scores)
    assert "| budget | strategy | pick |" in printed and "Kendall tau" in printed
    cache = tmp_path / "selection_reference-tiny.reference.json"
    rows = json.loads(cache.read_text())["rows"]
    kinds = {k for r in rows.values() for k in r["kinds"]}
    assert {"random", "shrink"} <= kinds and any(k.startswith("max@") for k in kinds)
    assert sum("random" in r["kinds"] for r in rows.values()) == 3
    again = _reference(tiny_run, tmp_path, capsys, ["fixed"])  # resumes: nothing is measured again
    assert json.loads(cache.read_text())["rows"] == rows  # the same picks: measured once, read back
    assert "Kendall tau" in again
