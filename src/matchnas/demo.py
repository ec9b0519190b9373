"""The end-to-end demo: one semi-supervised supernet against labels-only baselines.

Three runs in ``out/`` (each resumable; a finished run is reused):
  supernet/   the sandwich rule with the full loss (labels + FixMatch with maxnet pseudo-labels + KD)
  sup-max/    the maxnet alone, labels only (TOFA's "individually fine-tuned" baseline)
  sup-min/    the minnet alone, labels only
All three use the same split, steps and labelled batch size. Then the supernet answers three FLOPs
budgets with TOFA's fixed rule within each budget's size range (``supernet/selections.json`` and
``selections.png``), the picks are exported as an ONNX bundle (``bundle/``), and the bundle classifies one test image.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from matchnas.experiment import Experiment, load_experiment
from matchnas.export import export_run
from matchnas.predict import predict
from matchnas.search.run import search
from matchnas.checkpoint import FINAL, LATEST
from matchnas.train.loop import resume, train


def _run(experiment: Experiment, run_dir: Path) -> dict[str, float]:
    if (run_dir / FINAL).exists() and (run_dir / "eval.json").exists():
        return json.loads((run_dir / "eval.json").read_text())
    if (run_dir / LATEST).exists():
        return resume(run_dir)
    return train(experiment, run_dir)


def run_demo(out: Path, experiment_path: Path | None = None) -> str:
    """Run (or finish) the demo's runs and return the results table."""
    path = experiment_path or resources.files("matchnas") / "configs" / "demo-digits.yaml"
    base = str(path)
    supernet = _run(load_experiment(base), out / "supernet")
    sup_max = _run(load_experiment(base, ["train.single=max", "train.loss=sup"]), out / "sup-max")
    sup_min = _run(load_experiment(base, ["train.single=min", "train.loss=sup"]), out / "sup-min")
    experiment = load_experiment(base)
    d, t = experiment.data, experiment.train
    lines = [
        f"digits, {d.labels_per_class} labels per class, {t.steps} steps, EfficientNet-Lite0 supernet; top-1 on the test split",
        f"{'subnet':<8} {'supernet (semi-supervised)':>28} {'single model (labels only)':>28}",
        f"{'maxnet':<8} {100 * supernet['max']:>27.1f}% {100 * sup_max['single']:>27.1f}%",
        f"{'minnet':<8} {100 * supernet['min']:>27.1f}% {100 * sup_min['single']:>27.1f}%",
        "",
        "Subnets for three FLOPs budgets from the same supernet, no retraining "
        "(TOFA's fixed rule, within each budget's size range):",
        search(out / "supernet", "flops", ",".join(f"{b:.0f}" for b in _budgets(out / "supernet")), "fixed"),
        "",
        "Each pick exported to ONNX, checked against PyTorch in onnxruntime:",
        export_run(out / "supernet", out / "bundle", force=True),
        "",
        "The bundle classifying a test image (onnxruntime only):",
        predict(out / "bundle", [_test_image(out)], top_k=3),
    ]
    return "\n".join(lines)


def _test_image(out: Path) -> Path:
    """The first test image of the digits data as a PNG file, named after its true class."""
    from PIL import Image

    from matchnas.data import load_source

    test = load_source("digits").test
    path = out / f"test-image-class-{test.classes[int(test.labels[0])]}.png"
    Image.fromarray(test.images[0, 0].numpy()).save(path)
    return path


def _budgets(run_dir: Path) -> list[float]:
    """Three FLOPs budgets at 1/4, 1/2 and 3/4 of the way from the minnet to the maxnet."""
    from matchnas import cost
    from matchnas.run import open_run

    run = open_run(run_dir)
    space, k = run.space, run.supernet.num_classes
    lo, hi = cost.flops(space, space.min(), k), cost.flops(space, space.max(), k)
    return [lo + f * (hi - lo) for f in (0.25, 0.5, 0.75)]
