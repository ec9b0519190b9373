"""The lever screen on Fashion-MNIST: the supernet at today's defaults (baseline) against one
row per training lever, on one seed, at the suite's protocol (suite.py). Per row: maxnet, a fixed
mid-size subnet and minnet test top-1 (BN recalibrated), and the mean seconds per training step.

Usage:
  python bench/fmnist_levers.py [--quick] [--steps N] [--rows NAME ...] [--shard I/N] [--device cuda]
  python bench/fmnist_levers.py --list

Every row is a cached suite run (``ensure_run``), so the screen resumes where it stopped and two
processes can split it: ``--shard 0/2`` and ``--shard 1/2`` each train every second row (run them
at once with ``OMP_NUM_THREADS=1``); a last invocation without ``--shard`` finds every run cached
and writes ``bench/results/fmnist_levers-<mode>.json`` with the whole table (a subset or a shard
writes its own file, named by a digest of its rows and its seed). ``--device cuda`` trains on a
GPU (separate runs and results); every suite script takes it, and evaluates on the
GPU whenever there is one.

The mid-size subnet is the same architecture for every row: the median-FLOPs config among 201
seeded samples, at the space's middle resolution (the 64 px row uses the same stages at 56 px).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
from suite import RUNS, Evaluator, ensure_run, parse_mode, run_path, write_results

from matchnas import cost
from matchnas.io import atomic_write_text
from matchnas.space import SearchSpace, SubnetConfig
from matchnas.space_file import load_space

# One row per lever setting; the name is also the run's name.
# The plain sandwich of the papers: every lever off (the defaults before the screen chose the teacher first).
PLAIN = ["train.teacher_warmup=0", "train.student_ramp=0"]

ROWS: dict[str, list[str]] = {
    "baseline": [],  # today's defaults (the teacher first since the screen)
    "plain_sandwich": PLAIN,  # the screen's reference: each single lever below is added to it
    "teacher_warmup=0.2+student_ramp=0.2": ["train.teacher_warmup=0.2", "train.student_ramp=0.2"],
    "student_sup_weight=0+distill_labelled": [*PLAIN, "train.student_sup_weight=0", "train.distill_labelled=true"],
    "student_sup_weight=0.5": [*PLAIN, "train.student_sup_weight=0.5"],
    "distill_view=strong": [*PLAIN, "train.distill_view=strong"],
    "project_conflicts": [*PLAIN, "train.project_conflicts=true"],
    "tau=0.8": [*PLAIN, "train.tau=0.8"],
    "tau=0.7": [*PLAIN, "train.tau=0.7"],
    "body_lr_scale=0.1": [*PLAIN, "train.body_lr_scale=0.1"],
    "final_lr=0.1": [*PLAIN, "train.final_lr=0.1"],
    "unlabeled_ratio=2": [*PLAIN, "train.unlabeled_ratio=2"],
    "64px": [*PLAIN, "data.image_size=64", "model.space=efficientnet-lite0-64"],
    # Combinations of the levers that helped on their own.
    "teacher_warmup=0.2+student_ramp=0.2+student_sup_weight=0+distill_labelled": [
        "train.teacher_warmup=0.2", "train.student_ramp=0.2", "train.student_sup_weight=0", "train.distill_labelled=true"],
    "teacher_warmup=0.2+student_ramp=0.2+tau=0.8": ["train.teacher_warmup=0.2", "train.student_ramp=0.2", "train.tau=0.8"],
    # What else could lift the maxnet on top of the teacher first: protect its gradient, or train it alone longer.
    "teacher_warmup=0.2+student_ramp=0.2+project_conflicts": [
        "train.teacher_warmup=0.2", "train.student_ramp=0.2", "train.project_conflicts=true"],
    "teacher_warmup=0.4+student_ramp=0.2": ["train.teacher_warmup=0.4", "train.student_ramp=0.2"],
    # Levers on top of the new default (the teacher first): a mean teacher, more unlabelled images
    # per step and a non-zero final learning rate.
    **{f"teacher_warmup=0.2+student_ramp=0.2+{lever}": ["train.teacher_warmup=0.2", "train.student_ramp=0.2", f"train.{lever}"]
       for lever in ("ema_teacher=0.99", "unlabeled_ratio=2", "final_lr=0.1")},
}
SUPERNET = ["train.loss=full"]  # the screen is about the supernet, whatever the protocol's default


def run_name(row: str) -> str:
    """The baseline is the suite's own full-loss supernet at today's defaults (Table 3's row d)."""
    return "supernet-full" if row == "baseline" else "levers-" + row.replace("+", "_").replace("=", "")


def mid_config(space: SearchSpace, num_classes: int, samples: int = 201) -> SubnetConfig:
    """The median-FLOPs architecture of ``samples`` seeded draws from the shipped Lite0 space
    (ranked at 32 px), at ``space``'s middle resolution: every row, the 64 px one included (its
    space has the same stages), evaluates the same architecture."""
    reference = load_space("efficientnet-lite0")
    rng = np.random.default_rng([0, 0x31D])
    configs = [dataclasses.replace(reference.sample(rng), resolution=32) for _ in range(samples)]
    configs.sort(key=lambda c: (cost.flops(reference, c, num_classes), c.id))
    middle = space.resolutions[len(space.resolutions) // 2]
    return dataclasses.replace(configs[len(configs) // 2], resolution=middle)


def seconds_per_step(run_dir, skip: int = 1) -> float:
    """Mean wall time of a training step from ``metrics.jsonl`` (the first ``skip`` steps, which
    pay for allocation and warm caches, are left out). A resumed run's steps count as logged."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [r["seconds"] for r in rows[skip:]] or [r["seconds"] for r in rows]
    return sum(times) / len(times)


def screen_row(row: str, mode, seed: int) -> dict:
    """Train (or reuse) the row's run and measure it; cached next to the run."""
    run_dir = ensure_run(run_name(row), [*SUPERNET, *ROWS[row]], mode, seed)
    cache = run_dir / "levers.json"
    if cache.exists():
        return json.loads(cache.read_text())
    evaluator = Evaluator(run_dir)
    space = evaluator.supernet.space
    mid = mid_config(space, evaluator.supernet.num_classes)
    configs = {"max": space.max(), "mid": mid, "min": space.min()}
    result = {name: evaluator.top1(config) for name, config in configs.items()}
    result["mflops"] = {name: cost.flops(space, c, evaluator.supernet.num_classes) / 1e6 for name, c in configs.items()}
    result["mid_config"] = mid.to_dict()
    result["seconds_per_step"] = seconds_per_step(run_dir)
    atomic_write_text(cache, json.dumps(result, indent=1))
    return result


def table(results: dict[str, dict], mode, seed: int) -> str:
    cached = run_path(run_name("baseline"), mode, seed) / "levers.json"  # a shard may lack the baseline
    base = results.get("baseline") or (json.loads(cached.read_text()) if cached.exists() else None)
    lines = [f"| lever ({mode.steps} steps, seed {seed}) | maxnet % | mid % | minnet % | s/step | step time vs baseline |",
             "|---|---:|---:|---:|---:|---:|"]
    for row, r in results.items():
        ratio = f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}x" if base else "-"
        lines.append(f"| {row} | {100 * r['max']:.1f} | {100 * r['mid']:.1f} | {100 * r['min']:.1f} "
                     f"| {r['seconds_per_step']:.3f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    def options(parser):
        parser.add_argument("--rows", nargs="+", choices=list(ROWS), metavar="NAME", help="run only these rows")
        parser.add_argument("--shard", default="0/1", metavar="I/N", help="run every N-th row starting at row I")
        parser.add_argument("--list", action="store_true", help="print the row names and their settings, then stop")

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    if args.list:
        for row, overrides in ROWS.items():
            print(f"{row}: {' '.join(overrides) or '(the current defaults)'}")
        return
    if not args.seeds:
        mode = dataclasses.replace(mode, seeds=mode.seeds[:1])  # a screen: one seed
    index, _, count = args.shard.partition("/")
    index, count = int(index), int(count or 1)
    if not 0 <= index < count:
        raise SystemExit(f"--shard expects I/N with 0 <= I < N, got {args.shard}")
    chosen = [r for r in (args.rows or list(ROWS))][index::count]
    seed = mode.seeds[0]
    results = {}
    for row in chosen:
        results[row] = screen_row(row, mode, seed)
        print(f"{row}: max {results[row]['max']:.3f} mid {results[row]['mid']:.3f} min {results[row]['min']:.3f} "
              f"{results[row]['seconds_per_step']:.3f} s/step", flush=True)
    text = table(results, mode, seed)
    print(text)
    whole = chosen == list(ROWS)
    # A subset or shard gets its own file (rows digest and seed in the name), so screens do not overwrite each other.
    rows_digest = hashlib.sha1("|".join(chosen).encode()).hexdigest()[:8]
    part = f"shard{index}of{count}" if count > 1 else f"subset-{rows_digest}"
    script = "fmnist_levers" if whole else f"fmnist_levers-{part}-s{seed}"
    path = write_results(script, dataclasses.replace(mode, seeds=(seed,)),
                         {"rows": {r: ROWS[r] for r in chosen}, "results": results, "table": text,
                          "runs": str(RUNS / mode.folder)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
