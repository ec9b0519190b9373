"""The economics of training once, on the user's path: one supernet run plus one search for K = 5
budgets, against K FixMatch models trained one per device, each on the architecture the search
picked for that device's budget, with the same command and steps.

    python bench/train_once.py --source fashion-mnist --labels 40 --seeds 0 1

Per seed: the supernet is bench/folder_defaults.py's run (``matchnas train --data DIR``, trained
here if missing); ``matchnas search RUN --budgets B1,..,B5`` with the default strategy picks one
subnet per budget (the five budgets of bench/selection_reference.py: 0, 25, 50, 75 and 99% of the
way from the minnet's FLOPs to the maxnet's); each pick is then trained alone with
``matchnas train --data DIR --single pick.json`` (its own folder, resumed when interrupted). The
supernet side's top-1 is the search's test top-1 of the pick after BN recalibration.

Times are the runs' own measured wall times (``timing.json``) and the plans' estimates (timed
steps at the start of each run). Both depend on whatever else shared the machine during and at the
start of each run, so the training time is also computed from step times measured in one process
(``train_throughput.run_seconds``): a sandwich step, a teacher warm-up step (the
maxnet alone) and a step of each pick trained alone, in turn on the same batches of the folder, so
that all see the same load; a run's training time is its steps times its median step. The ratio
is reported for all three. Results: ``bench/results/train_once-<source>-<labels>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from folder_defaults import RESULTS, RUNS, run, train_cli, write_folder
from selection_reference import five_budgets
from train_throughput import folder_experiment, run_seconds

from matchnas.io import atomic_write_json
from matchnas.run import open_run
from matchnas.search.run import build_context
from matchnas.space import SubnetConfig
from matchnas.space_file import load_space


def search_picks(run_dir: Path, out: Path) -> dict:
    """The default strategy's picks for the five budgets (``matchnas search``, reused once written)."""
    selections = out / "selections.json"
    if not selections.exists():
        budgets = five_budgets(build_context(open_run(run_dir, device="cpu"), "flops"))
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "search.txt", "w") as log:
            subprocess.run([sys.executable, "-m", "matchnas", "search", str(run_dir), "--budgets",
                            ",".join(str(int(b)) for b in budgets), "--out", str(out)], check=True, stdout=log)
    return json.loads(selections.read_text())


def step_seconds(run_dir: Path, folder: Path, picks: dict[str, SubnetConfig]) -> dict:
    """Training seconds of the supernet run and of each pick's single run, from median steps
    measured in turn in this process on the folder (module docstring)."""
    experiment = folder_experiment(run_dir, folder)
    return run_seconds(experiment, load_space(experiment.model.space), picks)


def one_seed(folder: Path, name: str, seed: int, previous: dict) -> dict:
    """One seed's row; the step times of ``previous`` (this seed's row of an earlier invocation)
    are kept, so a rerun only adds what is missing."""
    base = RUNS / "folder-defaults" / name
    supernet = run(folder, "supernet", seed, base / f"supernet-s{seed}")
    selections = search_picks(base / f"supernet-s{seed}", RUNS / "train-once" / name / f"search-s{seed}")
    devices = []
    for pick in selections["picks"]:
        config_file = RUNS / "train-once" / name / f"pick-{pick['config_id']}.json"
        config_file.write_text(json.dumps(pick["config"]))
        single = train_cli(folder, ["--single", str(config_file)], seed,
                           base / f"pick-{pick['config_id']}-s{seed}")
        devices.append({"budget": pick["budget"], "config_id": pick["config_id"], "mflops": pick["cost"] / 1e6,
                        "supernet_top1": pick["test_top1"], "single_top1": single["top1"]["single"],
                        "single_s": single["timing"]["measured_s"]["total"],
                        "single_estimate_s": single["timing"]["estimate_s"]["total"]})
    steps = previous.get("training_s_one_process") or step_seconds(
        base / f"supernet-s{seed}", folder, {p["config_id"]: SubnetConfig.from_dict(p["config"]) for p in selections["picks"]})
    return {"supernet_s": supernet["timing"]["measured_s"]["total"], "training_s_one_process": steps,
            "supernet_estimate_s": supernet["timing"]["estimate_s"]["total"],
            "search_s": selections["seconds"], "strategy": selections["strategy"], "devices": devices}


def table(results: dict, name: str) -> str:
    lines = [f"{name}: one supernet + one search against K = 5 per-device FixMatch models (top-1 %)",
             "| seed | budget MFLOPs | pick | MFLOPs | supernet's subnet | trained alone | difference |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for seed, r in sorted(results.items()):
        for d in r["devices"]:
            diff = 100 * (d["supernet_top1"] - d["single_top1"])
            lines.append(f"| {seed} | {d['budget'] / 1e6:.2f} | {d['config_id']} | {d['mflops']:.2f} | "
                         f"{100 * d['supernet_top1']:.1f} | {100 * d['single_top1']:.1f} | {diff:+.1f} |")
    lines += ["", "| seed | strategy | supernet + search (s) | 5 models (s) | ratio | ratio of the plans' estimates "
                  "| ratio of training times from one process, + search |", "|---:|---|---:|---:|---:|---:|---:|"]
    for seed, r in sorted(results.items()):
        once = r["supernet_s"] + r["search_s"]
        separate = sum(d["single_s"] for d in r["devices"])
        estimated = (r["supernet_estimate_s"] + r["search_s"]) / sum(d["single_estimate_s"] for d in r["devices"])
        steps = r["training_s_one_process"]
        one_process = (steps["supernet"] + r["search_s"]) / sum(steps[d["config_id"]] for d in r["devices"])
        lines.append(f"| {seed} | {r['strategy']} | {once:.0f} | {separate:.0f} | {once / separate:.2f} | {estimated:.2f} "
                     f"| {one_process:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="fashion-mnist")
    parser.add_argument("--labels", type=int, default=40, help="labelled images per class in the folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    name = f"{args.source}-{args.labels}"
    folder = write_folder(args.source, args.labels, RUNS / "folders" / name)
    path = RESULTS / f"train_once-{name}.json"
    results = {str(k): v for k, v in (json.loads(path.read_text()) if path.exists() else {}).items()}
    for seed in args.seeds:
        results[str(seed)] = one_seed(folder, name, seed, results.get(str(seed), {}))
        atomic_write_json(path, results)
        print(table(results, name), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
