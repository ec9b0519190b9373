"""The Fashion-MNIST benchmark protocol shared by the ``bench/fmnist_*.py`` scripts.

Protocol: Fashion-MNIST at 32 px, the Lite0 space, 40 labels per class (400 labelled images), 20
more labelled images per class as a validation split (used only where a method needs one: the
baselines' step count, evolution, random-plus-validation), the rest of the 60k training images
unlabelled, the 10k test set. Batch 32 labelled + 32 unlabelled, lr 0.01, the same number of
steps for every method.

Runs are cached: ``ensure_run(name, overrides, mode, seed)`` trains ``bench/runs/<mode>/<name>-s<seed>``
once (resuming it if a previous invocation was interrupted) and every script that needs the same
run reuses it; results go to ``bench/results/*.json`` and plots to ``docs/img/*.png`` (short names
by content: ``plot_name``).
``--quick`` runs fewer steps (see MODES) so a script finishes in minutes; ``--steps N`` and
``--set key=value`` make a variant of the protocol with its own runs and results (e.g. what was
tried to make a claim hold); ``--protocol 64px`` names the variant where the suite's headline claims
are made (PROTOCOLS).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from matchnas.errors import MatchnasError
from matchnas.experiment import Experiment, experiment_from_dict, load_experiment
from matchnas.io import atomic_write_text
from matchnas.space import SubnetConfig
from matchnas.checkpoint import LATEST
from matchnas.run import open_run
from matchnas.train.loop import resume, train

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "bench" / "runs"
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "img"

PROTOCOL = [
    "data.source=fashion-mnist",
    "data.image_size=32",
    "data.labels_per_class=40",
    "data.val_per_class=20",
    "model.backbone=efficientnet-lite0",
    "train.batch_size=32",
    "train.unlabeled_ratio=1",
    "train.lr=0.01",
    "train.checkpoint_every=100",
]


@dataclass(frozen=True)
class Mode:
    name: str
    steps: int
    seeds: tuple[int, ...]
    extra: tuple[str, ...] = ()  # --set overrides applied to every run (a variant of the protocol)

    @property
    def folder(self) -> str:
        """``full``, ``quick``, or e.g. ``full+train.tau=0.8`` for a variant."""
        return "+".join([self.name, *(e.replace("/", "_") for e in self.extra)])


CACHED_ONLY = False  # --cached: ensure_run never trains

MODES = {"quick": Mode("quick", 150, (0,)), "full": Mode("full", 1000, (0, 1))}

# Named protocols: the settings and steps that ``--protocol`` adds, exactly as the equivalent
# ``--set``/``--steps`` flags would (same runs, same results). "32px" is the CPU protocol above;
# "64px" is the one where the headline claims hold together (docs/benchmarks.md): 64 px images, the
# 32-64 px space, 2000 steps: a GPU job (about 45 min per supernet run on one CPU thread).
PROTOCOLS = {
    "32px": ((), None),
    "64px": (("data.image_size=64", "model.space=spaces/efficientnet-lite0-32to64.yaml"), 2000),
}


def parse_mode(description: str, extra=None) -> tuple[argparse.Namespace, Mode]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"{MODES['quick'].steps} steps, one seed (minutes)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the mode's seeds")
    parser.add_argument("--steps", type=int, help="override the mode's steps (a variant: separate runs and results)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="32px",
                        help="32px: the CPU protocol (default); 64px: 64 px, the 32-64 px space, 2000 steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a protocol override for every run (a variant: separate runs and results); "
                        "a path is relative to bench/")
    parser.add_argument("--cached", action="store_true",
                        help="report from finished runs only: a run that is missing or unfinished is an error")
    parser.add_argument("--device", help="train on this device, e.g. cuda: a variant with its own "
                        "runs and results; evaluation runs on a GPU whenever there is one")
    if extra:
        extra(parser)
    args = parser.parse_args()
    global CACHED_ONLY
    CACHED_ONLY = args.cached
    os.chdir(ROOT / "bench")  # a space file named in --set or a protocol is found from any directory
    mode = MODES["quick" if args.quick else "full"]
    settings, protocol_steps = PROTOCOLS[args.protocol]
    steps = args.steps or protocol_steps
    extra = settings + tuple(args.set) + ((f"train.steps={steps}",) if steps else ()) + (
        (f"train.device={args.device}",) if args.device else ())
    mode = Mode(mode.name, steps or mode.steps, tuple(args.seeds or mode.seeds), extra)
    return args, mode


def experiment_for(overrides: list[str], mode: Mode, seed: int) -> Experiment:
    return load_experiment(None, [*PROTOCOL, f"train.steps={mode.steps}", f"train.seed={seed}", *mode.extra, *overrides])


def run_path(name: str, mode: Mode, seed: int) -> Path:
    return RUNS / mode.folder / f"{name}-s{seed}"


# Settings of the sandwich that a single-model run (``train.single``) never reads: a change of
# their defaults leaves cached single runs valid.
SANDWICH_ONLY = ("n_random", "teacher_warmup", "student_ramp", "student_sup_weight", "distill_labelled",
                 "distill_view", "project_conflicts")


def _settings(experiment: Experiment) -> dict:
    body = experiment.to_dict()
    if experiment.train.single is not None:
        body["train"] = {k: v for k, v in body["train"].items() if k not in SANDWICH_ONLY}
    return body


def ensure_run(name: str, overrides: list[str], mode: Mode, seed: int) -> Path:
    """Train (or finish) the cached run ``name`` for ``seed``; returns its directory. A cached run
    made with different settings is an error, not silently reused. Scripts run at once may ask for
    the same run: a lock file makes the second wait for the first to train it, then reuse it."""
    run_dir = run_path(name, mode, seed)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        return _ensure_run(run_dir, experiment_for(overrides, mode, seed))


def _ensure_run(run_dir: Path, experiment: Experiment) -> Path:
    saved = run_dir / "experiment.yaml"
    if CACHED_ONLY and not (run_dir / "eval.json").exists():
        raise MatchnasError(f"{run_dir} has not finished (--cached trains nothing)")
    if saved.exists():
        if _settings(experiment_from_dict(yaml.safe_load(saved.read_text()))) != _settings(experiment):
            raise MatchnasError(f"{run_dir} was trained with other settings: delete it to retrain")
        if (run_dir / "eval.json").exists():
            return run_dir
        if (run_dir / LATEST).exists():
            print(f"resuming {run_dir}", flush=True)
            resume(run_dir)
            return run_dir
        raise MatchnasError(f"{run_dir} has no checkpoint: delete it to retrain")
    print(f"training {run_dir}", flush=True)
    train(experiment, run_dir)
    return run_dir


def eval_results(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "eval.json").read_text())


def final_metrics(run_dir: Path, last: int = 50) -> dict[str, float]:
    """Means of the last ``last`` logged steps' metrics (mask rate, pseudo-label accuracy)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()][-last:]
    keys = {k for r in rows for k in r} - {"step", "lr", "seconds", "images_per_s"}
    return {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)) for k in sorted(keys)}


def Evaluator(run_dir: Path):  # noqa: N802 (a class-like factory)
    """Test and validation top-1 of configs of one trained run (BN recalibrated per config, cached):
    ``Evaluator(run_dir).top1(config, "test" | "val")``. On a GPU when there is one (float sums in
    another order, so top-1 may differ from a CPU evaluation by a test image or two)."""
    import torch

    return open_run(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")


def write_results(script: str, mode: Mode, body: dict) -> Path:
    path = RESULTS / f"{script}-{mode.folder}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"script": script, "mode": mode.name, "overrides": list(mode.extra), "steps": mode.steps,
                                        "seeds": list(mode.seeds), **body}, indent=1))
    return path


# Short labels by content for the variants a plot in docs/ shows. Run folders and result files keep
# the flag string (``Mode.folder``: it selects cached runs and results); only plot names are short.
# A variant not listed here keeps its flag string in the plot's name, so no two variants collide.
PLOT_LABELS = {
    "quick": "quick",
    "full": "32px",
    "full+train.steps=2000": "32px-2000steps",
    "full+model.space=spaces_efficientnet-lite0-16to32.yaml": "32px-16to32",
    "full+model.space=spaces_efficientnet-lite0-16to32.yaml+train.steps=2000": "32px-16to32-2000steps",
    "full+data.image_size=64+model.space=efficientnet-lite0-64": "64px-48to64-1000steps",
    "full+data.image_size=64+model.space=spaces_efficientnet-lite0-32to64.yaml": "64px-1000steps",
    "full+data.image_size=64+model.space=spaces_efficientnet-lite0-32to64.yaml+train.steps=2000": "64px",
}


def plot_name(script: str, mode: Mode) -> str:
    """The file name of ``script``'s plot for ``mode``, by content: ``fmnist_table3`` at
    ``--protocol 64px`` is ``table3-64px.png``, its rows a, b, d at the 32 px protocol
    ``table3-abd-32px.png``."""
    what = script.removeprefix("fmnist_").replace("_", "-")
    return f"{what}-{PLOT_LABELS.get(mode.folder, mode.folder)}.png"


def plot_path(script: str, mode: Mode) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    return IMAGES / plot_name(script, mode)


def mean_std(values: list[float]) -> str:
    """``mean ± half-range`` in percent (``mean`` alone for one value)."""
    mean = 100 * sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * (max(values) - min(values)) / 2:.1f}"



def supernet_top1(name: str, overrides: list[str], mode: Mode, seed: int) -> dict[str, float]:
    """Test top-1 of a supernet run's maxnet and minnet (trained if not cached)."""
    result = eval_results(ensure_run(name, overrides, mode, seed))
    return {"max": result["max"], "min": result["min"]}


def report_max_min(script: str, mode: Mode, title: str, rows: dict[str, dict[str, list[float]]],
                   extra: dict | None = None) -> str:
    """Print and return a Markdown table of maxnet/minnet top-1 per row (mean ± half-range over
    seeds), draw it as bars with one dot per seed, and write the JSON results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"| {title} ({mode.steps} steps, seeds {list(mode.seeds)}) | maxnet top-1 % | minnet top-1 % |",
             "|---|---:|---:|"]
    lines += [f"| {label} | {mean_std(r['max'])} | {mean_std(r['min'])} |" for label, r in rows.items()]
    table = "\n".join(lines)
    print(table)
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.5))
    for offset, net in ((-0.2, "max"), (0.2, "min")):
        means = [100 * sum(r[net]) / len(r[net]) for r in rows.values()]
        ax.bar([i + offset for i in range(len(rows))], means, width=0.4, label=f"{net}net")
        for i, r in enumerate(rows.values()):
            ax.scatter([i + offset] * len(r[net]), [100 * v for v in r[net]], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(rows)), list(rows), rotation=15, fontsize=8)
    low = min(100 * v for r in rows.values() for values in r.values() for v in values)
    ax.set_ylim(max(0, low - 5), None)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{title}: Fashion-MNIST, 40 labels/class, {mode.steps} steps", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(script, mode), dpi=120)
    plt.close(fig)
    path = write_results(script, mode, {"top1": rows, "table": table, **(extra or {})})
    print(f"wrote {path} and {plot_path(script, mode)}")
    return table


def per_seed(script: str, mode: Mode, seed: int, compute) -> dict:
    """``compute()``'s JSON result for one seed, cached under the runs folder, so that a script
    re-run with more seeds (or after an interruption) only computes what is missing."""
    path = RUNS / mode.folder / "per-seed" / f"{script}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result))
    return result


def config_file(config: SubnetConfig, mode: Mode) -> Path:
    """``config`` as a JSON file a ``train.single`` run can name (one per config and protocol)."""
    path = RUNS / mode.folder / "configs" / f"{config.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, config.to_json())
    return path


def evolution_options(mode: Mode) -> dict[str, int]:
    """NSGA-II's size for the mode: 30 x 10 (16 x 5 with --quick)."""
    quick = mode.name == "quick"
    return {"population": 16 if quick else 30, "generations": 5 if quick else 10}


def fraction_budgets(ctx, fractions) -> list[float]:
    """Budgets ``fractions`` of the way from the minnet's cost to the maxnet's."""
    low, high = ctx.metric(ctx.space.min()), ctx.metric(ctx.space.max())
    return [low + f * (high - low) for f in fractions]


def evolution_picks(run_dir: Path, mode: Mode, fractions) -> list:
    """Evolution's picks (NSGA-II on validation top-1) at ``fraction_budgets`` of the FLOPs range."""
    from matchnas.search.run import build_context
    from matchnas.search.strategies import run_strategy

    ctx = build_context(run_dir, "flops", options=evolution_options(mode))
    return run_strategy("evolution", ctx, fraction_budgets(ctx, fractions)).picks
