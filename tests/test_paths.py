"""Destinations and inputs the machine refuses: paths that are not what a command needs (an empty
name, a file for a folder and back, a link to nothing, names too long), files and folders of
another user, and a full disk. Each is one line and exit status 2, before any work where the
destination is known up front, and leaves what was there before as it was."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from matchnas.checkpoint import FINAL, LATEST
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.io import atomic_write, atomic_write_text
from matchnas.train import loop
from tests.test_errors import run_cli
from tests.test_errors_runs import TINY, one_line, sets



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-step run."""
    run_dir = tmp_path_factory.mktemp("paths") / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=2"]), run_dir)
    return run_dir


@pytest.fixture
def no_work(monkeypatch):
    """Any of the commands' work fails the test: destinations are checked first."""
    from matchnas import latency
    from matchnas import run as run_module
    from matchnas.train import plan

    def work(*args, **kwargs):
        raise AssertionError("the work started before the destination was checked")

    for module, name in ((loop, "prepare_data"), (plan, "make_plan"), (run_module, "load_run"), (latency.table, "build_lut")):
        monkeypatch.setattr(module, name, work)


COMMANDS = {
    "train": lambda run, dest: ["train", "--out", dest, *sets(TINY + ["train.steps=1"])],
    "search": lambda run, dest: ["search", run, "--budgets", "1M", "--out", dest],
    "export": lambda run, dest: ["export", run, "--subnet", "min", "--out", dest],
    "latency build": lambda run, dest: ["latency", "build", "--out", dest],
    "demo": lambda run, dest: ["demo", "--out", dest],
}


def _loop(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _long_name(tmp_path):
    return tmp_path / ("x" * 300)


def _long_path(tmp_path):
    return tmp_path.joinpath(*["d" * 200] * 21)


BAD = {
    "empty": (lambda tmp: "", "--out is empty: name a folder or file"),
    "link loop": (_loop, "is a symbolic link to nothing (or a loop of links)"),
    "name over 255 bytes": (_long_name, "is 300 bytes long; this file system allows 255"),
    "path over 4096 bytes": (_long_path, "bytes long; this system allows 4095"),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_impossible_destination_is_refused_before_the_work(command, bad, run, tmp_path, no_work, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, message = BAD[bad]
    dest = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    status, err = run_cli(COMMANDS[command](run, dest), capsys)
    assert status == 2 and one_line(err) and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written, in the current folder neither"


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_a_file_where_a_folder_is_due_is_refused_before_the_work(command, run, tmp_path, no_work, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    status, err = run_cli(COMMANDS[command](run, existing), capsys)
    assert status == 2 and one_line(err) and f"{existing}: a file, not a folder" in err, err
    assert existing.read_text() == "mine"


def test_latency_build_refuses_a_folder_for_its_table_before_the_work(tmp_path, no_work, capsys):
    status, err = run_cli(["latency", "build", "--out", tmp_path], capsys)
    assert status == 2 and one_line(err) and "a folder; give the name of the file to write" in err, err


# -- another user's run or bundle ---------------------------------------------------------------
def _unreadable(path, monkeypatch):
    """Make ``path`` unreadable to this process: by its mode, or (root reads anything) by making
    every open of it fail as the kernel would."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    import builtins
    import io

    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if not isinstance(file, int) and os.fspath(file) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    monkeypatch.setattr(io, "open", refusing_open)  # pathlib's read_text


@pytest.mark.parametrize("command, what", [("eval", "checkpoint"), ("export", "checkpoint"),
                                           ("train --resume", "checkpoint"), ("train --resume", "experiment.yaml")])
def test_unreadable_run_files_are_one_line(command, what, run, tmp_path, capsys, monkeypatch):
    mine = shutil.copytree(run, tmp_path / "run")
    target = {"checkpoint": mine / (LATEST if command == "train --resume" else FINAL), "experiment.yaml": mine / "experiment.yaml"}[what]
    _unreadable(target, monkeypatch)
    args = {"eval": ["eval", mine], "export": ["export", mine, "--subnet", "min", "--out", tmp_path / "b"],
            "train --resume": ["train", "--resume", mine]}[command]
    try:
        status, err = run_cli(args, capsys)
    finally:
        target.chmod(0o644)
    assert status == 2 and one_line(err), err
    assert str(target) in err and ("Permission denied" in err or "permission denied" in err), err
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    from matchnas.export import export_run

    export_run(run, out, subnet="min", parity_images=8, latency_runs=2)
    return out


@pytest.mark.parametrize("what", ["model", "manifest", "image"])
def test_unreadable_bundle_files_are_one_line_in_predict(what, bundle, tmp_path, capsys, monkeypatch):
    mine = shutil.copytree(bundle, tmp_path / "bundle")
    manifest = json.loads((mine / "manifest.json").read_text())
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (32, 32), 128).save(image)
    target = {"model": mine / manifest["models"][0]["files"]["onnx"]["file"], "manifest": mine / "manifest.json",
              "image": image}[what]
    _unreadable(target, monkeypatch)
    try:
        status, err = run_cli(["predict", mine, image], capsys)
    finally:
        target.chmod(0o644)
    assert status == 2 and one_line(err), err
    assert str(target) in err and "ermission denied" in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_run_folder_of_another_user_is_one_line(run, tmp_path, capsys):
    mine = shutil.copytree(run, tmp_path / "run")
    mine.chmod(0)
    try:
        status, err = run_cli(["eval", mine], capsys)
    finally:
        mine.chmod(0o755)
    assert status == 2 and one_line(err) and "permission denied" in err, err


# -- a full disk ------------------------------------------------------------------------------------
def test_a_write_that_finds_the_disk_full_is_one_line_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "selections.json"
    atomic_write_text(path, "old")

    def fill(tmp):
        tmp.write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(MatchnasError) as err:
        atomic_write(path, fill)
    message = str(err.value)
    assert message.startswith(f"no space left on the device of {path}: writing it needs") and "MiB free" in message
    assert "its previous version is kept" in message and "\n" not in message
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["selections.json"]


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a RAM disk of that size (e.g. "40m"); skipped where mounting is not allowed."""
    mounts = []

    def mount(size):
        point = tmp_path / f"disk-{size}"
        point.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()[:80]})")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_an_export_that_finds_the_disk_full_is_one_line_and_leaves_nothing(run, tmpfs, capsys):
    disk = tmpfs("1m")
    status, err = run_cli(["export", run, "--subnet", "max", "--out", disk / "bundle", "--parity-images", "8",
                           "--latency-runs", "2"], capsys)
    assert status == 2 and one_line(err), err
    assert err.startswith(f"matchnas: error: no space left on the device of {disk / 'bundle'}: writing it needs more than")
    assert list(disk.iterdir()) == []


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_line_and_resumes_exactly(tmpfs, tmp_path, capsys):
    overrides = TINY + ["train.steps=6", "train.checkpoint_every=2"]
    small_disk = tmpfs("40m")  # a tiny run's checkpoint is 28 MB: the first fits, a second next to it does not
    whole, run_dir = tmp_path / "whole", small_disk / "run"
    loop.train(load_experiment(None, overrides), whole)
    capsys.readouterr()
    status, err = run_cli(["train", "--out", run_dir, *sets(overrides)], capsys)
    last = err.strip().splitlines()[-1]
    assert status == 2 and "Traceback" not in err, err
    assert last.startswith(f"matchnas: error: no space left on the device of {run_dir / LATEST}: writing it needs"), last
    assert f"`matchnas train --resume {run_dir}` continues" in last
    assert torch.load(run_dir / LATEST, weights_only=True)["step"] == 2, "the last checkpoint that fitted stays"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)  # space freed
    assert run_cli(["train", "--resume", run_dir], capsys)[0] == 0
    a, b = (torch.load(d / FINAL, weights_only=True) for d in (whole, run_dir))
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["selection_index"] == b["selection_index"]
