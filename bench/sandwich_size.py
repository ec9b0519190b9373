"""How many random subnets a sandwich step trains (``train.n_random``), on the user's path: the
default (2, the sandwich of four of BigNAS and AlphaNet) against fewer, in accuracy and in cost.

    python bench/sandwich_size.py --source fashion-mnist --labels 40 --n-random 1 --seeds 0 1

Per seed and ``n_random``: ``matchnas train --data DIR --set train.n_random=N`` (the seed as
bench/folder_defaults.py passes it; resumed when interrupted). The default's runs are
folder_defaults.py's supernets. Every supernet is evaluated at the same architectures: the maxnet,
the minnet and bench/train_once.py's five picks of that seed (the default search's picks of the
default's supernet), top-1 on the test split after BN recalibration (``Run.top1``, what ``matchnas
eval`` prints). Step times: a warm-up step (the maxnet alone) and a sandwich step of each
``n_random``, in turn in one process on the folder's batches, so that all see the same load; a
run's training time is its warm-up steps at the warm-up median plus the rest at its sandwich
median. Results: ``bench/results/sandwich_size-<source>-<labels>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from folder_defaults import KINDS, RESULTS, RUNS, run, train_cli, write_folder
from train_throughput import folder_experiment, run_seconds

from matchnas.io import atomic_write_json
from matchnas.run import open_run
from matchnas.space import SubnetConfig
from matchnas.space_file import load_space

DEFAULT_N_RANDOM = 2


def architectures(name: str, seed: int) -> dict[str, dict]:
    """The configs every supernet of ``seed`` is evaluated at: train_once.py's five picks by id."""
    selections = RUNS / "train-once" / name / f"search-s{seed}" / "selections.json"
    if not selections.exists():
        raise SystemExit(f"{selections}: run bench/train_once.py for seed {seed} first")
    return {pick["config_id"]: pick["config"] for pick in json.loads(selections.read_text())["picks"]}


def evaluate(run_dir: Path, picks: dict[str, dict], cached: dict) -> dict[str, float]:
    """Top-1 of the maxnet, the minnet and each pick of the run (cached entries kept)."""
    missing = [key for key in ["max", "min", *picks] if key not in cached]
    if missing:
        trained = open_run(run_dir)
        for key in missing:
            config = trained.config(key) if key in ("max", "min") else SubnetConfig.from_dict(picks[key])
            cached[key] = trained.top1(config)
    return cached


def step_seconds(run_dir: Path, folder: Path, n_randoms: list[int]) -> dict:
    """Training seconds of a supernet run at each ``n_random`` from interleaved median steps
    (:func:`train_throughput.run_seconds`), keyed by ``n_random``; ``median_step`` names each
    sandwich step ``sandwich-N``."""
    experiment = folder_experiment(run_dir, folder)
    default = experiment.train.n_random
    seconds = run_seconds(experiment, load_space(experiment.model.space), {}, tuple(n_randoms))
    median = {(f"sandwich-{default}" if name == "sandwich" else name): s for name, s in seconds["median_step"].items()}
    return {"median_step": median, **{str(n): seconds["supernet" if n == default else f"supernet-{n}"] for n in n_randoms}}


def save(out_file: Path, seed: int, row: dict) -> None:
    """Write ``row`` as seed's entry, re-reading the file first (one process per seed may run)."""
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    results[str(seed)] = row
    atomic_write_json(out_file, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="fashion-mnist")
    parser.add_argument("--labels", type=int, default=40)
    parser.add_argument("--n-random", type=int, nargs="+", default=[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    name = f"{args.source}-{args.labels}"
    folder = write_folder(args.source, args.labels, RUNS / "folders" / name)
    out_file = RESULTS / f"sandwich_size-{name}.json"
    for seed in args.seeds:
        picks = architectures(name, seed)
        previous = json.loads(out_file.read_text()) if out_file.exists() else {}
        row = previous.get(str(seed), {"top1": {}, "seconds": {}})
        for n in [DEFAULT_N_RANDOM, *sorted(set(args.n_random) - {DEFAULT_N_RANDOM})]:  # the default's (cheap) first
            if n == DEFAULT_N_RANDOM:
                run_dir = RUNS / "folder-defaults" / name / f"supernet-s{seed}"
                run(folder, "supernet", seed, run_dir)
            else:
                run_dir = RUNS / "sandwich-size" / name / f"n_random{n}-s{seed}"
                train_cli(folder, [*KINDS["supernet"], "--set", f"train.n_random={n}"], seed, run_dir)
            row["top1"][str(n)] = evaluate(run_dir, picks, row["top1"].get(str(n), {}))
            save(out_file, seed, row)
        wanted = sorted(map(int, row["top1"]))  # the default, the asked-for and any earlier sizes
        if any(str(n) not in row["seconds"] for n in wanted):  # all timed again, in one process
            row["seconds"] = step_seconds(RUNS / "folder-defaults" / name / f"supernet-s{seed}", folder, wanted)
            save(out_file, seed, row)
    print(table(name, json.loads(out_file.read_text())))


def table(name: str, results: dict) -> str:
    lines = [f"{name}: `matchnas train --data DIR --set train.n_random=N` (top-1 %; training s from one-process step times)"]
    for seed, row in sorted(results.items()):
        keys = ["max", *[k for k in row["top1"][str(DEFAULT_N_RANDOM)] if k not in ("max", "min")], "min"]
        lines += ["", f"seed {seed}", "| n_random | " + " | ".join(keys) + " | training s |",
                  "|---:|" + "---:|" * (len(keys) + 1)]
        for n, top1 in sorted(row["top1"].items()):
            cells = [f"{100 * top1[k]:.2f}" if k in top1 else "" for k in keys]
            seconds = row["seconds"].get(n)
            lines.append(f"| {n} | " + " | ".join(cells) + (f" | {seconds:.0f} |" if seconds else " | |"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
