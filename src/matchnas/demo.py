"""The end-to-end demo: one semi-supervised supernet against labels-only baselines.

Three runs in ``out/`` (each resumable; a finished run is reused):
  supernet/   the sandwich rule with the full loss (labels + FixMatch with maxnet pseudo-labels + KD)
  sup-max/    the maxnet alone, labels only (TOFA's "individually fine-tuned" baseline)
  sup-min/    the minnet alone, labels only
All three use the same split, steps and labelled batch size. Then the supernet answers three FLOPs
budgets with TOFA's fixed rule within each budget's size range (``supernet/selections.json`` and
``selections.png``), the picks are shown on the accuracy-cost cloud of the supernet's subnets
(``demo.png``: the maxnet, the minnet and seeded random subnets, test top-1 after BN
recalibration, with Spearman's rho of FLOPs against top-1), the picks are exported as an ONNX
bundle (``bundle/``), and the bundle classifies one test image.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from matchnas.experiment import Experiment, load_experiment
from matchnas.export import export_run
from matchnas.predict import predict
from matchnas.search.run import search
from matchnas.train.plan import train_planned


def _run(experiment: Experiment, run_dir: Path) -> dict[str, float]:
    return train_planned(experiment, run_dir)  # prints the plan, as `matchnas train` does


def run_demo(out: Path, experiment_path: Path | None = None, cloud_size: int = 20) -> str:
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
        _accuracy_cloud(out, cloud_size, {"maxnet": sup_max["single"], "minnet": sup_min["single"]}),
        "",
        "Each pick exported to ONNX, checked against PyTorch in onnxruntime:",
        export_run(out / "supernet", out / "bundle", force=True),
        "",
        "The bundle classifying a test image (onnxruntime only):",
        predict(out / "bundle", [_test_image(out)], top_k=3),
    ]
    return "\n".join(lines)


def _accuracy_cloud(out: Path, n: int, labels_only: dict[str, float]) -> str:
    """Test top-1 against FLOPs of the maxnet, the minnet and ``n`` seeded random subnets, with the
    fixed rule's picks and the labels-only baselines, plotted to ``demo.png``; returns what it shows."""
    import numpy as np
    from scipy import stats

    from matchnas import cost
    from matchnas.run import open_run

    run = open_run(out / "supernet")
    space, k = run.space, run.supernet.num_classes
    rng = np.random.default_rng([run.experiment.train.seed, 0xC10D])
    configs = list(dict.fromkeys([space.min(), space.max(), *(space.sample(rng) for _ in range(n))]))
    mflops = [cost.flops(space, c, k) / 1e6 for c in configs]
    top1 = [100 * run.top1(c, "test") for c in configs]
    picks = [p for p in json.loads((out / "supernet" / "selections.json").read_text())["picks"] if p["config"]]
    baselines = {name: (mflops[0 if name == "minnet" else 1], 100 * acc) for name, acc in labels_only.items()}
    _plot_cloud(out / "demo.png", mflops, top1, picks, baselines)
    rho = stats.spearmanr(mflops, top1).statistic
    image = 100 / len(run.images("test"))
    pick_top1 = [100 * p["test_top1"] for p in picks]
    rises = all(b > a for a, b in zip(pick_top1, pick_top1[1:]))
    lines = [f"Accuracy against FLOPs ({out / 'demo.png'}): {len(configs)} subnets of the supernet (maxnet, minnet, "
             f"{len(configs) - 2} random), test top-1 {min(top1):.1f}-{max(top1):.1f}%; Spearman rho of FLOPs "
             f"with top-1 {rho:+.2f}; one test image is {image:.2f} points."]
    if not rises:
        spread = round((max(pick_top1) - min(pick_top1)) / image)
        lines.append(f"The picks' top-1 does not rise with every budget: they differ by at most {spread} test "
                     "images, less than the cloud's scatter at equal FLOPs; size buys accuracy only on average "
                     f"(rho {rho:+.2f}).")
    return "\n".join(lines)


def _plot_cloud(path: Path, mflops: list[float], top1: list[float], picks: list[dict],
                baselines: dict[str, tuple[float, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matchnas.io import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(mflops, top1, s=14, color="tab:gray", alpha=0.6, label="subnets of the supernet (no retraining)")
    ax.scatter([p["cost"] / 1e6 for p in picks], [100 * p["test_top1"] for p in picks], marker="*", s=160,
               color="tab:red", zorder=3, label="the fixed rule's picks")
    for p in picks:
        ax.annotate(f"budget {p['budget'] / 1e6:.1f}M", (p["cost"] / 1e6, 100 * p["test_top1"]),
                    textcoords="offset points", xytext=(6, -10), fontsize=7)
    ax.scatter([c for c, _ in baselines.values()], [a for _, a in baselines.values()], marker="s", s=40,
               color="tab:blue", label="trained alone, labels only (max, min)")
    ax.set_xlabel("FLOPs (M)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("One supernet, many budgets: the demo's subnets", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


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
