"""One writer per run folder: the lock (exclusive, naming its holder, taken over from a dead
holder, leaving nothing behind), every writer refused while another holds the folder, two trainers
on one folder, and resume refusing a checkpoint that is not the run's own."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from matchnas.checkpoint import FINAL, LATEST
from matchnas.cli import main
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.lock import LOCK_FILE, destination_lock, run_lock
from matchnas.run import read_experiment
from matchnas.train import loop
from tests.test_errors import run_cli
from tests.test_errors_runs import TINY, one_line, sets



HOLD = """
import sys, time
from matchnas.lock import destination_lock, run_lock
lock = (run_lock if sys.argv[1] == "run" else destination_lock)(sys.argv[2], "test-holder").acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder():
    """Start a process that holds a lock (``kind`` run or destination) on ``path``; killed at the end."""
    procs = []

    def start(kind, path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, kind, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-step run."""
    run_dir = tmp_path_factory.mktemp("locks") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=2"]), run_dir)
    return run_dir


# -- the lock itself ------------------------------------------------------------------------------
def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path, holder):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = holder("run", folder)
    with pytest.raises(MatchnasError) as err:
        run_lock(folder, "train").acquire()
    message = str(err.value)
    assert f"{folder} is in use by another matchnas process (pid {proc.pid} on {socket.gethostname()}" in message
    assert "`matchnas test-holder` since " in message and "\n" not in message


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = holder("run", folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == proc.pid, "the dead holder's file is still there"
    with run_lock(folder, "train"):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()


def test_lock_leaves_nothing_behind_and_is_reentrant(tmp_path):
    created = tmp_path / "a" / "b"
    with run_lock(created, "train", create=True):
        assert created.is_dir()
        with run_lock(created, "search", create=True):  # the same process again: allowed
            pass
        assert (created / LOCK_FILE).exists(), "the inner release keeps the outer lock"
    assert not (tmp_path / "a").exists(), "a folder made only for the lock goes with it"
    kept = tmp_path / "kept"
    with run_lock(kept, "train", create=True):
        (kept / "experiment.yaml").write_text("{}")
    assert sorted(p.name for p in kept.iterdir()) == ["experiment.yaml"]
    with destination_lock(tmp_path / "bundle", "export"):
        assert (tmp_path / ".bundle.lock").exists()
    assert not (tmp_path / ".bundle.lock").exists()


# -- every writer is refused while another holds the folder ----------------------------------------
WRITERS = {
    "train --out": (lambda run, tmp: ["train", "--out", tmp / "new", *sets(TINY + ["train.steps=1"])], lambda run, tmp: tmp / "new"),
    "train --resume": (lambda run, tmp: ["train", "--resume", run], lambda run, tmp: run),
    "search": (lambda run, tmp: ["search", run, "--budgets", "1G"], lambda run, tmp: run),
    "search --out": (lambda run, tmp: ["search", run, "--budgets", "1G", "--out", tmp / "s"], lambda run, tmp: tmp / "s"),
    "proxies": (lambda run, tmp: ["proxies", run, "--n", "2"], lambda run, tmp: run),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_writer_is_refused_while_another_process_holds_the_folder(writer, run, tmp_path, holder, capsys):
    args, held = WRITERS[writer]
    mine = shutil.copytree(run, tmp_path / "run")
    folder = held(mine, tmp_path)
    folder.mkdir(exist_ok=True)
    proc = holder("run", folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    status, err = run_cli(args(mine, tmp_path), capsys)
    assert status == 2 and one_line(err), err
    assert f"{folder} is in use by another matchnas process (pid {proc.pid}" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before, "the refused writer wrote nothing"


def test_an_export_is_refused_while_another_writes_the_same_bundle(run, tmp_path, holder, capsys):
    proc = holder("destination", tmp_path / "bundle")
    status, err = run_cli(["export", run, "--subnet", "min", "--out", tmp_path / "bundle"], capsys)
    assert status == 2 and one_line(err) and f"(pid {proc.pid}" in err, err
    assert not (tmp_path / "bundle").exists()


# -- two trainers on one folder ------------------------------------------------------------------
def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in loop.TIMING_KEYS} for r in rows]


@pytest.mark.slow
def test_second_trainer_on_a_folder_is_refused_and_the_first_run_stays_intact(tmp_path, capsys):
    overrides = TINY + ["train.steps=60", "train.checkpoint_every=100"]  # no checkpoint before the stop
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    loop.train(load_experiment(None, overrides), whole)
    first = subprocess.Popen([sys.executable, "-m", "matchnas", "train", "--out", str(shared), *sets(overrides)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (shared / "experiment.yaml").exists():
        time.sleep(0.02)
    # the second trainer, other settings, while the first trains: refused, writes nothing
    with pytest.raises(MatchnasError) as err:
        loop.train(load_experiment(None, TINY + ["train.steps=60", "train.seed=1"]), shared)
    assert first.poll() is None, "the first run was still training when the second was refused"
    assert f"{shared} is in use by another matchnas process (pid {first.pid}" in str(err.value)
    first.send_signal(signal.SIGTERM)  # stopped before it finishes, to be resumed
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 143, first_err
    assert read_experiment(shared).train.seed == 0, "the first run's settings stay"
    assert main(["train", "--resume", str(shared)]) == 0
    a, b = (torch.load(d / FINAL, weights_only=True) for d in (whole, shared))
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["selection_index"] == b["selection_index"] and _metrics(whole) == _metrics(shared)


# -- resume refuses a checkpoint that is not the run's own ----------------------------------------
def _set(state, dotted, value):
    section, key = dotted.split(".")
    state["experiment"][section][key] = value


FOREIGN = {
    "another seed": (lambda s: _set(s, "train.seed", 7), "train.seed is 7 there and 0 in"),
    "another backbone": (lambda s: _set(s, "model.backbone", "mobilenetv3-large-100"), "model.backbone is 'mobilenetv3-large-100' there"),
    "other classes": (lambda s: s.update(classes=["a", "b", "c"]), "it was trained on 3 classes (a, b, c), the run's data has 10"),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_resume_refuses_a_checkpoint_of_another_run(kind, run, tmp_path, capsys):
    mine = shutil.copytree(run, tmp_path / "run")
    edit, message = FOREIGN[kind]
    state = torch.load(mine / LATEST, weights_only=True)
    edit(state)
    torch.save(state, mine / LATEST)
    before = (mine / "metrics.jsonl").read_text()
    status, err = run_cli(["train", "--resume", mine], capsys)
    assert status == 2 and one_line(err), err
    assert f"{mine / LATEST} is not this run's checkpoint" in err and message in err, err
    assert (mine / "metrics.jsonl").read_text() == before
