"""Training runs end to end on the embedded digits data with a few tiny steps."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from matchnas import devices
from matchnas.cli import main
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.run import load_run
from matchnas.train import loop
from matchnas.checkpoint import FINAL, LATEST

TINY = [
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.recalibration_images=64",
    "data.image_size=32", "data.labels_per_class=3",
    "data.max_unlabeled=200",
]


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "matchnas", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in loop.TIMING_KEYS} for r in rows]


def test_run_directory_holds_everything(tmp_path):
    run = tmp_path / "run"
    results = loop.train(load_experiment(None, TINY + ["train.steps=3"]), run)
    assert set(results) == {"max", "min"} and all(0.0 <= v <= 1.0 for v in results.values())
    for name in ("experiment.yaml", "split.json", "metrics.jsonl", LATEST, FINAL, "selection_index.json", "eval.json"):
        assert (run / name).is_file(), name
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "lab", "fm", "mask_rate"} <= set(rows[0]) and "kd" not in rows[0]  # the teacher alone
    assert {"loss", "lab", "fm", "kd", "mask_rate"} <= set(rows[-1])
    state = torch.load(run / FINAL, weights_only=True)
    index = json.loads(state["selection_index"])
    # teacher_warmup 0.2 of 3 steps: step 1 trains the maxnet alone, then 4 subnets a step; I(a) += t
    assert sum(r["score"] for r in index) == 1 * 1 + 4 * (2 + 3)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    overrides = TINY + ["train.steps=24", "train.checkpoint_every=4"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _cli("train", "--out", str(whole), *_sets(overrides)).wait() == 0

    proc = _cli("train", "--out", str(killed), *_sets(overrides))
    deadline = time.time() + 120
    while time.time() < deadline:
        log = killed / "metrics.jsonl"
        if (killed / LATEST).exists() and log.exists() and len(log.read_text().splitlines()) >= 10:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / FINAL).exists(), "the run finished before it could be killed"

    assert _cli("train", "--resume", str(killed)).wait() == 0
    a = torch.load(whole / FINAL, weights_only=True)
    b = torch.load(killed / FINAL, weights_only=True)
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["selection_index"] == b["selection_index"]
    assert _metrics(whole) == _metrics(killed)
    assert json.loads((whole / "eval.json").read_text()) == json.loads((killed / "eval.json").read_text())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop.train_step

    def poisoned(model, configs, batch, settings, **levers):
        metrics = real(model, configs, batch, settings, **levers)
        if poisoned.calls == 4:
            batch.x.fill_(float("nan"))
            return real(model, configs, batch, settings, **levers)
        poisoned.calls += 1
        return metrics

    poisoned.calls = 0
    monkeypatch.setattr(loop, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(MatchnasError, match="at step 4: stopped; the last good checkpoint is .*checkpoint-latest.pt"):
        loop.train(load_experiment(None, TINY + ["train.steps=10", "train.checkpoint_every=2"]), run)
    assert torch.load(run / LATEST, weights_only=True)["step"] == 4
    assert not (run / FINAL).exists()


def test_single_model_baseline_trains_one_config(tmp_path):
    run = tmp_path / "single"
    results = loop.train(load_experiment(None, TINY + ["train.steps=2", "train.single=min", "train.loss=sup"]), run)
    assert set(results) == {"single"}
    index = json.loads(torch.load(run / FINAL, weights_only=True)["selection_index"])
    assert len(index) == 1 and index[0]["score"] == 3


def test_eval_command_prints_top1(tmp_path, capsys):
    run = tmp_path / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=1"]), run)
    assert main(["eval", str(run), "--subnet", "min"]) == 0
    assert "top-1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "train.stpes=3"], "unknown config key 'train.stpes' (did you mean 'steps'?)"),
        (["train", "--set", "data.labels_per_class=1000"], "class '0': 142 labelled images, fewer than the 1000 needed (1000 to train on)"),
        (["train", "--set", "data.source=/no/such/folder"], "unknown data set"),
        (["train", "--set", "train.loss=everything"], "train.loss must be one of"),
        (["train", "--set", "train.precision=fp16"], "train.precision must be one of fp32, bf16"),
        (["train", "--set", "train.precision=bf16", "--set", "train.device=cpu"], "train.precision=bf16 needs a CUDA device"),
        (["eval", "/no/such/run"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line(args, message, capsys, tmp_path):
    assert main(args + (["--out", str(tmp_path / "r")] if args[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists(), "a refused run must write nothing"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_train_runs_on_the_device_its_experiment_names(tmp_path):
    # the library call, not only the CLI, honours train.device (the benchmark suite calls it)
    with pytest.raises(MatchnasError, match="train.device=cuda but no CUDA GPU is visible"):
        loop.train(load_experiment(None, ["train.device=cuda"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_models_are_channels_last_on_the_cpu_and_contiguous_on_a_gpu():
    assert devices.memory_format("cpu") == torch.channels_last
    assert devices.memory_format(torch.device("cuda", 0)) == torch.contiguous_format


def test_eval_refuses_a_config_from_another_space(tmp_path, capsys):
    run = tmp_path / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=1"]), run)
    from matchnas.space_file import load_space

    other = load_space("efficientnet-lite1")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(other.config_to_json(other.min()))
    capsys.readouterr()
    assert main(["eval", str(run), "--subnet", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "made for space 'efficientnet-lite1'" in err and err.count("\n") == 1


def test_narrowed_run_trains_only_on_its_pool(tmp_path):
    from matchnas.pool import load_pool

    run = tmp_path / "narrow"
    overrides = ["train.steps=3", "narrow.proxy=synflow", "narrow.candidates=12", "narrow.keep=0.25", "narrow.bins=2"]
    loop.train(load_experiment(None, TINY + overrides), run)
    experiment = load_experiment(None, TINY + overrides)
    space = loop.build_supernet(experiment, 10).space
    pool = load_pool(run, space)
    assert pool[:2] == (space.max(), space.min()) and len(pool) == 2 + 2 * 2  # 2 bins of 6, ceil(0.25 * 6) each
    body = json.loads((run / "pool.json").read_text())
    assert len(body["scored"]) == 12
    index = json.loads(torch.load(run / FINAL, weights_only=True)["selection_index"])
    sampled = {json.dumps(r["config"], sort_keys=True) for r in index}
    assert sampled <= {json.dumps(c.to_dict(), sort_keys=True) for c in pool}


SPLIT = TINY + ["train.steps=6", "train.checkpoint_every=2", "split.method=gm", "split.edges=2", "split.batches=1"]


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("split") / "run"
    loop.train(load_experiment(None, SPLIT), run)
    return run


@pytest.mark.slow
def test_split_run_trains_each_part_on_its_own_configs(split_run):
    from matchnas.train.fewshot_split import SplitPlan, SplitSupernet

    plan = SplitPlan.from_dict(json.loads((split_run / "fewshot.json").read_text()))
    assert plan.method == "gm" and plan.step == 3 and plan.num_parts == 4
    assert len(plan.scores) == 6  # every stage whose first block has 3 expansion choices was scored
    rows = _metrics(split_run)
    assert [r.get("part") for r in rows] == [None, None, None, 0, 1, 2]
    index = json.loads(torch.load(split_run / FINAL, weights_only=True)["selection_index"])
    _, supernet, _, _ = load_run(split_run)
    assert isinstance(supernet, SplitSupernet) and supernet.plan == plan
    trained_late = [r for r in index if r["score"] > 4 * (1 + 2 + 3)]  # sampled at steps 4-6 only
    for row in trained_late:
        from matchnas.space import SubnetConfig

        assert plan.part_of(SubnetConfig.from_dict(row["config"])) in (0, 1, 2)
    # part 3 never trained after the split: it still equals the parent at the split step
    untouched = {k: v for k, v in supernet.parts[3].state_dict().items() if "running" not in k and "num_batches" not in k}
    trained = {k: v for k, v in supernet.parts[0].state_dict().items() if "running" not in k and "num_batches" not in k}
    assert any(not torch.equal(untouched[k], trained[k]) for k in untouched)


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [2, 4])  # before and after the split (step 3)
def test_split_run_resumes_to_the_same_weights(split_run, tmp_path, monkeypatch, stop_at):
    real = loop._log_step

    def interrupted(log, progress, step, *args):
        if step == stop_at:
            raise KeyboardInterrupt
        real(log, progress, step, *args)

    run = tmp_path / "run"
    monkeypatch.setattr(loop, "_log_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.train(load_experiment(None, SPLIT), run)
    monkeypatch.setattr(loop, "_log_step", real)
    assert torch.load(run / LATEST, weights_only=True)["step"] == stop_at
    loop.resume(run)
    a = torch.load(split_run / FINAL, weights_only=True)
    b = torch.load(run / FINAL, weights_only=True)
    assert a["split"] == b["split"] and a["model"].keys() == b["model"].keys()
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert _metrics(split_run) == _metrics(run)


@pytest.mark.slow
def test_eval_search_and_export_work_on_a_split_run(split_run, tmp_path, capsys):
    assert main(["eval", str(split_run), "--subnet", "max"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["search", str(split_run), "--budgets", "3M,100M", "--strategy", "fixed"]) == 0
    assert (split_run / "selections.json").is_file()
    assert main(["export", str(split_run), "--subnet", "min", "--out", str(tmp_path / "bundle")]) == 0
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [m["files"]["onnx"]["parity"]["max_abs_logit_diff"] < 1e-3 for m in manifest["models"]] == [True]


def test_split_needs_a_supernet(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "split.method=gm", "--set", "train.single=max"]) == 2
    assert "nothing to split" in capsys.readouterr().err


def test_a_run_made_before_padding_was_recorded_keeps_its_symmetric_padding(tmp_path):
    run = tmp_path / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=2"]), run)
    for name in (LATEST, FINAL):  # what a checkpoint of an older matchnas holds: no "padding" key
        state = torch.load(run / name, weights_only=True)
        assert state["space"].pop("padding") == "same"
        torch.save(state, run / name)
    _, supernet, _, state = load_run(run)
    assert supernet.space.padding == "symmetric"
    config = supernet.space.max()
    x = torch.randn(4, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(0))
    same = loop.build_supernet(load_experiment(None, TINY), 10).eval()
    same.load_state_dict(state["model"])
    with torch.no_grad():  # same weights, another function: the padding was really kept
        assert not torch.allclose(supernet.eval()(x, config), same(x, config))
    loop.resume(run)  # a finished run: nothing to train, the evaluation is redone with its padding
    assert torch.load(run / FINAL, weights_only=True)["space"]["padding"] == "symmetric"
