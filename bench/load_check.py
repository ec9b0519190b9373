"""Load check: concurrent trainers, kills and resumes; nothing is lost or mixed.

Four `matchnas train` processes on four folders, and two started at the same moment on one
folder with different seeds, run concurrently (the uninterrupted twins train first, one at a time). Each running job is killed (SIGKILL or SIGTERM,
chosen at random) at a random point after its first checkpoint and resumed, ``--kills`` times,
then left to finish. Checked: of the two on one folder exactly one trains and the other is refused
(exit status 2, naming the holder); every finished run equals its uninterrupted twin tensor for
tensor (weights, selection index), and in its metrics and evaluation.

    python bench/load_check.py [--out /tmp/matchnas-load-check] [--steps 16] [--kills 2] [--seed 0]

Exits 0 when every check holds. Tiny settings (32 px, 8 + 8 images a step) keep it to minutes on
two CPU cores; the report is printed and written to OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

TINY = ["train.batch_size=8", "train.warmup_steps=2", "train.recalibration_images=64", "data.image_size=32",
        "data.labels_per_class=3", "data.max_unlabeled=200", "train.checkpoint_every=2"]
TIMING_KEYS = ("images_per_s", "seconds")


def command(out: Path, seed: int, steps: int) -> list[str]:
    sets = [a for o in [*TINY, f"train.steps={steps}", f"train.seed={seed}"] for a in ("--set", o)]
    return [sys.executable, "-m", "matchnas", "train", "--out", str(out), *sets]


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "a"), text=True)


def job(out: Path, seed: int, steps: int, kills: int, rng: random.Random, record: dict,
        proc: subprocess.Popen | None = None) -> None:
    """Train ``out`` (or go on with ``proc``, training it), kill it ``kills`` times at random
    points, resume until it finishes."""
    log = out.parent / f"{out.name}.log"
    proc = proc or start(command(out, seed, steps), log)
    record.update(seed=seed, kills=[], exits=[])
    for _ in range(kills + 1):
        if len(record["kills"]) < kills:
            deadline = time.time() + 600
            while proc.poll() is None and time.time() < deadline and not (out / "checkpoint-latest.pt").exists():
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
            if proc.poll() is None:
                signum = rng.choice([signal.SIGKILL, signal.SIGTERM])
                proc.send_signal(signum)
                record["kills"].append(signal.Signals(signum).name)
        record["exits"].append(proc.wait())
        if record["exits"][-1] in (0, 2):  # finished, or refused (another job holds the folder)
            return
        again = ["--resume", str(out)] if (out / "experiment.yaml").exists() else command(out, seed, steps)[4:]
        proc = start([sys.executable, "-m", "matchnas", "train", *again], log)
    record["exits"].append(proc.wait())


def shared_folder(out: Path, seeds: list[int], steps: int, kills: int, rng: random.Random, records: dict) -> None:
    """Two trainers started at once on ``out`` with different seeds: one must be refused (exit
    status 2) while the other trains; the one that trains is then killed and resumed as any job."""
    log = out.parent / f"{out.name}.log"
    procs = {seed: start(command(out, seed, steps), log) for seed in seeds}
    deadline = time.time() + 600
    while time.time() < deadline and all(p.poll() is None for p in procs.values()):
        time.sleep(0.05)
    ended = [seed for seed, p in procs.items() if p.poll() is not None]
    for seed in ended:
        records[f"shared-s{seed}"] = {"seed": seed, "kills": [], "exits": [procs[seed].returncode]}
    running = [seed for seed in seeds if seed not in ended]
    if len(running) == 1:
        records[f"shared-s{running[0]}"] = {}
        job(out, running[0], steps, kills, rng, records[f"shared-s{running[0]}"], procs[running[0]])


def same_run(a: Path, b: Path) -> str | None:
    """None when ``b`` ended as ``a`` did, else what differs."""
    if not (b / "checkpoint-final.pt").exists():
        return "no final checkpoint"
    x, y = (torch.load(d / "checkpoint-final.pt", weights_only=True) for d in (a, b))
    for key, tensor in x["model"].items():
        if not torch.equal(tensor, y["model"][key]):
            return f"weights differ at {key}"
    if x["selection_index"] != y["selection_index"]:
        return "selection index differs"

    def metrics(d):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    if metrics(a) != metrics(b):
        return "metrics differ"
    if json.loads((a / "eval.json").read_text()) != json.loads((b / "eval.json").read_text()):
        return "evaluation differs"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/matchnas-load-check")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points and signals")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    (root / "twins").mkdir(parents=True)
    (root / "jobs").mkdir()
    seeds, shared_seeds = [0, 1, 2, 3], [0, 4]
    began = time.time()

    for s in sorted({*seeds, *shared_seeds}):  # the uninterrupted twins, one after another (memory)
        if start(command(root / "twins" / f"s{s}", s, args.steps), root / "twins" / f"s{s}.log").wait() != 0:
            raise SystemExit(f"the uninterrupted twin of seed {s} failed: see {root / 'twins' / f's{s}.log'}")
    records: dict[str, dict] = {}
    threads = []
    for i, s in enumerate(seeds):
        records[f"folder-{i}"] = {}
        threads.append(threading.Thread(target=job, args=(root / "jobs" / f"folder-{i}", s, args.steps, args.kills,
                                                          random.Random(args.seed * 100 + i), records[f"folder-{i}"])))
    threads.append(threading.Thread(target=shared_folder, args=(root / "jobs" / "shared", shared_seeds, args.steps,
                                                                args.kills, random.Random(args.seed * 100 + 10), records)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    failures = []
    for name, rec in records.items():
        if name.startswith("shared"):
            continue
        rec["differs"] = same_run(root / "twins" / f"s{rec['seed']}", root / "jobs" / name)
        if rec["differs"] or rec["exits"][-1] != 0:
            failures.append(f"{name}: {rec['differs'] or 'did not finish'}")
    shared = root / "jobs" / "shared"
    trained = yaml_seed(shared)
    pair = [n for n in records if n.startswith("shared")]
    refused = [n for n in pair if records[n]["exits"] == [2] and records[n]["seed"] != trained]
    log = (root / "jobs" / "shared.log").read_text()
    said = any(m in log for m in ("in use by another matchnas process", "already holds a run"))
    if len(pair) != 2 or len(refused) != 1 or not said:
        failures.append(f"shared folder: {len(pair)} trainers, refused {refused}, refusal said: {said}")
    differs = same_run(root / "twins" / f"s{trained}", shared)
    for n in pair:
        if n not in refused:
            records[n]["differs"] = differs
    if differs:
        failures.append(f"shared folder: {differs}")
    report = {"steps": args.steps, "kills_per_job": args.kills, "seconds": round(time.time() - began),
              "jobs": records, "shared_trained_seed": trained, "shared_differs": differs, "failures": failures}
    (root / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    for name, rec in records.items():
        print(f"{name:>9}: seed {rec['seed']}, killed by {rec['kills'] or 'nothing'}, exits {rec['exits']}, "
              f"{'refused (folder held)' if name in refused else 'equal to its twin' if not rec.get('differs') else rec['differs']}")
    print(f"shared folder trained seed {trained}: {'equal to its twin' if differs is None else differs}")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures), f"({report['seconds']} s)")
    return 0 if not failures else 1


def yaml_seed(run_dir: Path) -> int:
    import yaml

    return yaml.safe_load((run_dir / "experiment.yaml").read_text())["train"]["seed"]


if __name__ == "__main__":
    sys.exit(main())
