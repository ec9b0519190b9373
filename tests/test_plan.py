"""The training plan and the data-aware defaults: what ``matchnas train --data DIR`` chooses from
a folder (every labelled image, the working size, the space, the steps), the time budget, and
the plan printed (and nothing written) before any training."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matchnas.cli import main
from matchnas.data.survey import survey
from matchnas.defaults import DEFAULT_STEPS, parse_duration, resolve, steps_for_time
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.run import prepare_data
from matchnas.search import DEFAULT_STRATEGY
from matchnas.space_file import load_space


def image_folder(root: Path, per_class=(5, 5), size=(28, 28), mode="L", unlabelled=6, test=4) -> Path:
    rng = np.random.default_rng(0)

    def save(path: Path, shape, image_mode):
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (shape[1], shape[0]) + ((3,) if image_mode == "RGB" else ()), dtype=np.uint8)
        Image.fromarray(pixels, image_mode).save(path)

    for k, n in enumerate(per_class):
        for i in range(n):
            save(root / "labeled" / f"class{k}" / f"{i}.png", size, mode)
        for i in range(test):
            save(root / "test" / f"class{k}" / f"{i}.png", size, mode)
    for i in range(unlabelled):
        save(root / "unlabeled" / f"{i}.png", size, mode)
    return root


def planned(source: str, *settings: str):
    experiment = load_experiment(None, [f"data.source={source}", *settings])
    return resolve(experiment, survey(source))


def test_a_folder_trains_on_every_labelled_image(tmp_path):
    root = image_folder(tmp_path / "data", per_class=(7, 5))
    experiment, choices = planned(str(root))
    assert (experiment.data.labels_per_class, experiment.data.label_fraction, experiment.data.val_per_class) == (None, 1.0, 0)
    data = prepare_data(experiment, tmp_path / "run")
    assert len(data.sets.labeled) == 12 and len(data.sets.unlabeled) == 6 and data.sets.val is None
    assert {c.key: c.reason for c in choices}["data.label_fraction"] == "every image in labeled/ is labelled training data"


def test_a_named_source_keeps_ten_labels_per_class():
    experiment, _ = planned("digits")
    assert experiment.data.labels_per_class == 10 and experiment.data.label_fraction is None


def test_small_images_are_upsampled_to_64_px_with_the_32_to_64_space(tmp_path):
    experiment, _ = planned(str(image_folder(tmp_path / "data")))
    assert experiment.data.image_size == 64 and experiment.model.space == "efficientnet-lite0-32to64"
    assert load_space(experiment.model.space).resolutions == (32, 40, 48, 56, 64)
    assert experiment.train.steps == DEFAULT_STEPS


@pytest.mark.parametrize("backbone, space", [("efficientnet-lite0", "efficientnet-lite0-224"),
                                             ("mobilenetv3-large-100", "mobilenetv3-large-100")])
def test_photos_train_on_the_backbones_ladder(backbone, space, tmp_path):
    root = image_folder(tmp_path / "data", per_class=(2, 2), size=(320, 256), mode="RGB", unlabelled=1, test=1)
    experiment, _ = planned(str(root), f"model.backbone={backbone}")
    assert experiment.data.image_size == 224 and experiment.model.space == space
    assert load_space(space).resolutions == (128, 160, 192, 224)
    assert survey(str(root)).grey is False


def test_what_the_user_sets_is_kept_and_said(tmp_path):
    root = image_folder(tmp_path / "data")
    experiment, choices = planned(str(root), "data.image_size=32", "train.steps=7", "data.labels_per_class=3")
    assert (experiment.data.image_size, experiment.model.space, experiment.train.steps) == (32, "efficientnet-lite0", 7)
    reasons = {c.key: c.reason for c in choices}
    assert reasons["data.image_size"] == reasons["train.steps"] == reasons["data.labels_per_class"] == "set by you"
    assert reasons["model.space"].startswith("working size 32 px")


def test_without_a_test_folder_a_few_labels_per_class_are_held_out(tmp_path):
    root = image_folder(tmp_path / "data", per_class=(10, 12), test=0)
    experiment, _ = planned(str(root))
    assert experiment.data.val_per_class == 2  # 20% of the smallest class
    data = prepare_data(experiment, tmp_path / "run")
    assert len(data.sets.val) == 4 and len(data.sets.labeled) == 18


def test_mixed_sizes_and_modes_are_surveyed_not_refused(tmp_path):
    root = image_folder(tmp_path / "data", per_class=(3, 3), size=(40, 30), mode="RGB", unlabelled=0, test=1)
    Image.new("L", (90, 120), 7).save(root / "labeled" / "class0" / "grey.png")
    data = survey(str(root))
    assert data.short_range == (30, 90) and data.grey is False and data.labelled == (4, 3)


@pytest.mark.parametrize("per_class, test, message", [
    ((1, 5), 4, "class0: 1 labelled image, fewer than the 2 needed"),
    ((5, 1), 0, "class1: 1 labelled image, fewer than the 2 needed (1 to train on + 1 held out"),
])
def test_a_labelled_set_too_small_names_the_class(per_class, test, message, tmp_path):
    root = image_folder(tmp_path / "data", per_class=per_class, test=test)
    with pytest.raises(MatchnasError, match=re.escape(message)):
        planned(str(root))


def test_steps_fit_a_time_budget():
    assert steps_for_time(100.0, 10.0, 0.5, "100s") == 180
    assert steps_for_time(1e6, 10.0, 0.5, "12d") == DEFAULT_STEPS  # more is not measured: capped
    with pytest.raises(MatchnasError, match="--time 10s is too short: loading and evaluation take about 9 s"):
        steps_for_time(10.0, 9.0, 2.0, "10s")
    assert [parse_duration(t) for t in ("90", "90s", "30m", "1.5h")] == [90, 90, 1800, 5400]
    for bad in ("soon", "-5m", "0", "nanm"):
        with pytest.raises(MatchnasError, match="--time"):
            parse_duration(bad)


def run_cli(args, capsys):
    try:
        status = main([str(a) for a in args])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


FAST = ["--set", "data.image_size=32", "--set", "train.batch_size=4", "--set", "train.recalibration_images=8"]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    status, printed, err = run_cli(["train", "--data", root, "--dry-run", "--out", out, *FAST], capsys)
    assert status == 0, err
    assert not out.exists()
    assert "labelled 10 of 10 (labeled/), unlabelled 6 (unlabeled/), evaluated on 8 (test/)" in printed
    assert "native short side 28 px" in printed and "grey" in printed
    assert "train.steps = 2000: measured" in printed and "time     about" in printed


def test_a_planned_run_records_its_plan_and_its_measured_time(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    status, printed, err = run_cli(["train", "--data", root, "--out", out, *FAST, "--set", "train.steps=2"], capsys)
    assert status == 0, err
    plan = json.loads((out / "plan.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    assert plan["estimate_s"]["steps"] == 2 and timing["estimate_s"] == plan["estimate_s"]
    assert timing["measured_over_estimate"] == pytest.approx(timing["measured_s"]["total"] / plan["estimate_s"]["total"])


@pytest.mark.parametrize("make, args, message", [
    (lambda root: root.write_text("x"), [], "not a folder"),
    (lambda root: (root / "labeled").mkdir(parents=True), [], "no class folders"),
    (lambda root: image_folder(root, per_class=(1, 3)), [], "class0: 1 labelled image"),
    (lambda root: image_folder(root), ["--time", "0.01s"], "--time 0.01s is too short"),
    (lambda root: image_folder(root), ["--time", "later"], "--time expects a duration"),
], ids=["data-is-a-file", "empty-labeled", "class-with-one-image", "time-too-short", "time-unreadable"])
def test_bad_data_or_time_is_one_line_and_writes_nothing(make, args, message, tmp_path, capsys):
    root = tmp_path / "data"
    make(root)
    out = tmp_path / "run"
    status, _, err = run_cli(["train", "--data", root, "--out", out, *FAST, *args], capsys)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_build_runs_each_stage_once_and_redoes_only_what_changed(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    out = tmp_path / "build"
    args = ["build", root, "--budgets", "3M,20M", "--out", out, *FAST, "--set", "train.steps=2"]
    status, printed, err = run_cli(args, capsys)
    assert status == 0, err
    assert (out / "run" / "eval.json").exists() and (out / "bundle" / "manifest.json").exists()
    manifest = (out / "bundle" / "manifest.json").read_bytes()
    status, printed, err = run_cli(args, capsys)
    assert status == 0, err
    assert "trained already" in printed and "made for these budgets already" in printed
    assert "exported from these selections already" in printed
    assert (out / "bundle" / "manifest.json").read_bytes() == manifest
    args[3] = "4M,20M"  # new budgets: the search and the export are made again, the training is not
    status, printed, err = run_cli(args, capsys)
    assert status == 0, err
    assert "trained already" in printed and f"strategy {DEFAULT_STRATEGY}" in printed and "wrote" in printed
    assert json.loads((out / "run" / "selections.json").read_text())["picks"][0]["budget"] == 4e6
