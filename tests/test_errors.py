"""Bad input a user can give, checked before any work: one line on stderr, exit status 2, no
traceback, nothing written. One test per family of bad input, parametrised over the
commands where it applies; the families about runs on disk are in ``test_errors_runs.py``."""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from matchnas import experiment as experiment_module
from matchnas.cli import main
from matchnas.experiment import RANGES, Experiment, load_experiment
from matchnas.io import atomic_write_json, to_json
from matchnas.space_file import load_space


def run_cli(args, capsys) -> tuple[int, str]:
    """``main(args)``'s exit status (argparse's too) and its stderr."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def assert_one_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- 1, 11: every numeric setting has a range, checked before anything runs ----------------------
def test_every_numeric_setting_has_a_range():
    numeric = set()
    for section in dataclasses.fields(Experiment):
        for f in dataclasses.fields(section.default_factory()):
            if {"int", "float"} & {t.strip() for t in str(f.type).split("|")}:
                numeric.add(f"{section.name}.{f.name}")
    assert numeric == set(RANGES), "add the new field's valid range to experiment.RANGES"
    load_experiment()  # the defaults are in range


@pytest.mark.parametrize("where", ["--set", "experiment file"])
@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.seed=-1", "train.seed must be in [0, 4294967295], got -1"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be at least 1"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1), got 1.5"),
        ("train.lr=-1", "train.lr must be greater than 0"),
        ("train.label_smoothing=3", "train.label_smoothing must be in [0, 1)"),
        ("train.recalibration_images=0", "train.recalibration_images must be at least 1"),
        ("data.val_per_class=-1", "data.val_per_class must be at least 0"),
        ("train.unlabeled_ratio=0", "train.unlabeled_ratio must be at least 1"),
        ("train.weight_decay=1e400", "train.weight_decay must be a finite number, got inf"),
        ("split.at=1", "split.at must be in (0, 1)"),
    ],
)
def test_out_of_range_setting_is_refused_before_anything_is_written(setting, message, where, tmp_path, capsys):
    out = tmp_path / "run"
    if where == "--set":
        args = ["train", "--set", setting, "--out", out]
    else:
        key, value = setting.split("=")
        section, name = key.split(".")
        path = tmp_path / "experiment.yaml"
        path.write_text(f"{section}:\n  {name}: {value}\n")
        args = ["train", path, "--out", out]
    status, err = run_cli(args, capsys)
    assert status == 2
    assert_one_line(err, message)
    assert not out.exists()


# -- 4: floats as a user writes them -------------------------------------------------------------
@pytest.mark.parametrize("where", ["--set", "experiment file"])
@pytest.mark.parametrize("text", ["5e-4", "1e-3", ".5", "5E-4", "+2.5e-2", "3"])
def test_float_settings_accept_what_a_user_means(text, where, tmp_path):
    if where == "--set":
        experiment = load_experiment(None, [f"train.weight_decay={text}"])
    else:
        path = tmp_path / "experiment.yaml"
        path.write_text(f"train:\n  weight_decay: {text}\n")
        experiment = load_experiment(path)
    assert experiment.train.weight_decay == float(text)


@pytest.mark.parametrize("text", ["5e-4x", "fast", "1e-3e2"])
def test_float_settings_still_refuse_words(text):
    with pytest.raises(experiment_module.MatchnasError, match="train.weight_decay expects float"):
        load_experiment(None, [f"train.weight_decay={text}"])


# -- 1: command options, before any work ----------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Make loading a run, timing a table or training fail loudly: a refusal must come first."""
    from matchnas import latency
    from matchnas import run as run_module
    from matchnas.train import loop

    def work(*args, **kwargs):
        raise AssertionError("the work started before the options were checked")

    for module, name in ((run_module, "load_run"), (latency.table, "build_lut"), (loop, "train")):
        monkeypatch.setattr(module, name, work)


@pytest.mark.parametrize(
    "args, message",
    [
        (["proxies", "RUN", "--proxy", "nosuch"], "unknown zero-cost proxy 'nosuch'"),
        (["proxies", "RUN", "--n", "0"], "argument --n: must be at least 1, got 0"),
        (["search", "RUN", "--budgets", "1M", "--strategy", "nosuch"], "unknown strategy 'nosuch'"),
        (["search", "RUN", "--budgets", "1M", "--strategy", "zeroshot:nosuch"], "unknown zero-cost proxy 'nosuch'"),
        (["search", "RUN", "--budgets", "1M", "--metric", "speed"], "unknown metric 'speed'"),
        (["search", "RUN", "--budgets", "1M", "--metric", "latency:missing.json"], "latency table not found"),
        (["search", "RUN", "--budgets", "1M", "--val-dir", "missing"], "--val-dir missing: no such folder"),
        (["search", "RUN", "--budgets", "1M", "--candidates", "0"], "argument --candidates: must be at least 1"),
        (["search", "RUN", "--budgets", "1e400"], "budgets must be positive and finite"),
        (["eval", "RUN", "--subnet", "missing.json"], "--subnet missing.json: no such file"),
        (["export", "RUN", "--out", "OUT", "--parity-images", "0"], "argument --parity-images: must be at least 1"),
        (["export", "RUN", "--out", "OUT", "--subnet", "missing.json"], "--subnet: no such file"),
        (["export", "RUN", "--out", "OUT", "--format", "tflite"], "unknown export format 'tflite'"),
        (["latency", "build", "--out", "OUT", "--threads", "0"], "argument --threads: must be at least 1"),
        (["latency", "build", "--out", "OUT", "--runtime", "tvm"], "unknown latency runtime 'tvm'"),
        (["predict", "OUT", "x.png", "--top-k", "0"], "argument --top-k: must be at least 1"),
        (["space", "--num-classes", "0"], "argument --num-classes: must be at least 1"),
    ],
)
def test_command_options_are_checked_before_any_work(args, message, no_work, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    args = [{"RUN": run, "OUT": tmp_path / "out"}.get(a, a) for a in args]
    status, err = run_cli(args, capsys)
    assert status == 2
    assert_one_line(err, message)
    assert not (tmp_path / "out").exists() and not any(run.iterdir())


BAD_ARGUMENT = {
    "space": ["--space", "efficientnet-lite9"],
    "train": ["--set", "train.steps=-5"],
    "eval": ["/no/such/run"],
    "search": ["/no/such/run", "--budgets", "lots"],
    "proxies": ["/no/such/run", "--n", "-1"],
    "latency": ["build", "--out", "lut.json", "--num-classes", "zero"],
    "export": ["/no/such/run", "--out", "bundle"],
    "predict": ["/no/such/bundle", "x.png"],
    "demo": ["--experiment", "/no/such/experiment.yaml"],
    "build": ["/no/such/folder", "--budgets", "5M", "--out", "bundle"],
}


@pytest.mark.slow
def test_every_command_with_a_bad_argument_ends_in_one_line_without_traceback(tmp_path):
    from matchnas.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands == set(BAD_ARGUMENT), "give the new command a bad argument here"
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "matchnas", name, *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in BAD_ARGUMENT.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err and err.count("\n") == 1 and "error:" in err, (name, err)
    assert not any(tmp_path.iterdir()), "a refused command wrote something"


# -- 9: `matchnas space` refuses what `train` refuses ----------------------------------------------
def _too_wide_space(tmp_path):
    data = load_space("efficientnet-lite0").to_dict()
    data["stages"][3]["width"] = [80, 400]
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", ["space", "train"])
def test_space_command_makes_the_checks_train_makes(command, tmp_path, capsys):
    path = _too_wide_space(tmp_path)
    args = ["space", "--space", path] if command == "space" else ["train", "--set", f"model.space={path}", "--out", tmp_path / "r"]
    status, err = run_cli(args, capsys)
    assert status == 2
    assert_one_line(err, "does not fit efficientnet-lite0: stage 3 width 400 > pre-trained")
    status, err = run_cli(["space", "--space", "efficientnet-lite2", "--backbone", "efficientnet-lite0"], capsys)
    assert status == 2 and "does not fit efficientnet-lite0" in err


# -- 7: data that cannot give a meaningful run ---------------------------------------------------
def _folder(root, classes, test: bool):
    rng = np.random.default_rng(0)
    for part in ("labeled", "test") if test else ("labeled",):
        for name in classes:
            (root / part / name).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / part / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "classes, test, settings, message",
    [
        (["cat"], True, [], "has one class ['cat']: a classifier needs at least 2"),
        (["cat", "dog"], False, ["data.val_per_class=0"], "no test split to evaluate on: add a test/ folder or hold out validation images with data.val_per_class=N"),
    ],
    ids=["one-class", "no-held-out-split"],
)
def test_data_that_cannot_be_evaluated_is_refused_before_training(classes, test, settings, message, tmp_path, capsys):
    root = _folder(tmp_path / "data", classes, test)
    out = tmp_path / "run"
    sets = ["train.steps=1", f"data.source={root}", "data.image_size=32", "data.labels_per_class=2", "train.loss=sup", *settings]
    status, err = run_cli(["train", *[a for s in sets for a in ("--set", s)], "--out", out], capsys)
    assert status == 2
    assert_one_line(err, message)
    assert not out.exists()


# -- 8: strict JSON ------------------------------------------------------------------------------
def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_json_the_project_writes_is_strict(value, tmp_path):
    body = {"budget": value, "rows": [{"tau": value}, 1.5], "ok": (1, 2)}
    assert _strict(to_json(body)) == {"budget": None, "rows": [{"tau": None}, 1.5], "ok": [1, 2]}
    atomic_write_json(tmp_path / "x.json", body)
    assert _strict((tmp_path / "x.json").read_text())["budget"] is None
