"""How a run stops: SIGTERM (a scheduler's, a container's, a spot instance's) as Ctrl-C is
taken, a checkpoint at the step boundary and exit 143; a signal that arrives while a checkpoint is
being written never costs that checkpoint; resuming gives the uninterrupted run, tensor for
tensor; outside training SIGTERM is one line and exit 143 with nothing half-written kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from matchnas.checkpoint import FINAL, LATEST
from matchnas.errors import Interrupted
from matchnas.experiment import load_experiment
from matchnas.io import atomic_write
from matchnas.train import loop
from tests.test_errors import run_cli

TINY = ["train.batch_size=8", "train.warmup_steps=2", "train.recalibration_images=64",
        "data.image_size=32", "data.labels_per_class=3", "data.max_unlabeled=200"]
SHORT = TINY + ["train.steps=4", "train.checkpoint_every=2"]


def one_line(err: str) -> bool:
    return "Traceback" not in err and err.count("\n") == 1


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in loop.TIMING_KEYS} for r in rows]


def assert_same_run(a_dir, b_dir):
    a, b = (torch.load(d / FINAL, weights_only=True) for d in (a_dir, b_dir))
    assert a["step"] == b["step"]
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["selection_index"] == b["selection_index"]
    assert _metrics(a_dir) == _metrics(b_dir)
    assert json.loads((a_dir / "eval.json").read_text()) == json.loads((b_dir / "eval.json").read_text())


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted 4-step run (a checkpoint every 2 steps)."""
    run_dir = tmp_path_factory.mktemp("signals") / "whole"
    loop.train(load_experiment(None, SHORT), run_dir)
    return run_dir


# -- a signal while a checkpoint is being written -------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("during", ["periodic", "final"])
def test_a_signal_during_a_checkpoint_write_keeps_that_checkpoint(during, signum, whole, tmp_path, monkeypatch):
    real_state = {}

    def save_then_signal(path, state):
        def write(tmp):
            torch.save(state, tmp)
            if state["step"] == (2 if during == "periodic" else 4) and not real_state:
                real_state["path"] = path
                os.kill(os.getpid(), signum)  # the file is written, not yet renamed into place
                os.kill(os.getpid(), signum)  # and pressed twice: still not cut short

        atomic_write(path, write)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_signal)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted) as err:
        loop.train(load_experiment(None, SHORT), run_dir)
    assert err.value.exit_status == 128 + signum
    saved = torch.load(run_dir / LATEST, weights_only=True)["step"]
    if during == "periodic":
        assert saved == 2 and not (run_dir / FINAL).exists() and "step 2 of 4 saved" in str(err.value)
    else:
        assert saved == 4 and torch.load(run_dir / FINAL, weights_only=True)["step"] == 4
        assert f"all 4 steps saved in {run_dir / FINAL}" in str(err.value) and not (run_dir / "eval.json").exists()
    assert str(err.value).startswith("terminated (SIGTERM): " if signum == signal.SIGTERM else "interrupted: ")
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    loop.resume(run_dir)
    assert_same_run(whole, run_dir)


# -- SIGTERM at a step, in a real process ----------------------------------------------------------
@pytest.mark.slow
def test_sigterm_during_training_saves_exits_143_and_resumes_to_the_same_run(tmp_path):
    overrides = TINY + ["train.steps=40", "train.checkpoint_every=2"]  # the log is flushed at checkpoints
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    loop.train(load_experiment(None, overrides), whole)
    proc = subprocess.Popen([sys.executable, "-m", "matchnas", "train", "--out", str(stopped),
                             *[a for o in overrides for a in ("--set", o)]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (stopped / LATEST).exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("matchnas: terminated (SIGTERM): step "), last
    step = torch.load(stopped / LATEST, weights_only=True)["step"]
    assert 2 <= step < 40 and f"step {step} of 40 saved in {stopped / LATEST}" in last and f"--resume {stopped}" in last
    assert not (stopped / FINAL).exists()
    assert subprocess.run([sys.executable, "-m", "matchnas", "train", "--resume", str(stopped)],
                          capture_output=True).returncode == 0
    assert_same_run(whole, stopped)


# -- SIGTERM outside the training loop -------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "search", "export"])
def test_sigterm_outside_training_is_one_line_and_143(command, whole, tmp_path, monkeypatch, capsys):
    from matchnas import run as run_module

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(run_module, "load_run", terminated)
    extra = {"search": ["--budgets", "1M", "--out", tmp_path / "s"], "export": ["--subnet", "min", "--out", tmp_path / "b"]}
    status, err = run_cli([command, whole, *extra.get(command, [])], capsys)
    assert status == 143 and one_line(err) and "terminated (SIGTERM); nothing half-written was kept" in err, err
    assert not (tmp_path / "b").exists() and not (tmp_path / "s").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is put back"
