"""The user's path, measured: a data set written out as an image folder, trained with
``matchnas train --data DIR`` and nothing else (but the seed), against single FixMatch models
trained by the same command with ``--single max`` and ``--single min``.

    python bench/folder_defaults.py --source fashion-mnist --labels 40 --seeds 0 1
    python bench/folder_defaults.py --source digits --labels 10 --seeds 0 1 --runs supernet

The folder (``bench/runs/folders/<source>-<labels>/``): ``labeled/<class>/`` holds ``--labels``
seeded images per class of the source's training split, ``unlabeled/`` the rest of it, ``test/``
the source's test split; PNG at the native size. Each run is a subprocess of the CLI, resumed when
a previous invocation was interrupted; its plan goes to ``plan.txt``. Results (top-1, and the
measured time over the plan's estimate) go to ``bench/results/folder_defaults-<source>-<labels>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from matchnas.data import load_source
from matchnas.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "bench" / "runs"
RESULTS = ROOT / "bench" / "results"
KINDS = {"supernet": [], "max": ["--single", "max"], "min": ["--single", "min"]}


def write_folder(source_name: str, labels: int, root: Path) -> Path:
    """The source as a user's folder (written once; a finished folder has a ``.complete`` mark)."""
    if (root / ".complete").exists():
        return root
    source = load_source(source_name)
    rng = np.random.default_rng(0)
    names = [c.replace("/", "_") for c in source.classes]
    train_labels = source.train_labels.numpy()
    chosen = np.concatenate([rng.permutation(np.flatnonzero(train_labels == k))[:labels] for k in range(len(names))])
    is_labelled = np.zeros(len(train_labels), bool)
    is_labelled[chosen] = True

    def save(images, index: int, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        array = images[index].numpy()
        Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(path)

    for i in range(len(train_labels)):
        where = f"labeled/{names[train_labels[i]]}" if is_labelled[i] else "unlabeled"
        save(source.train.images, i, root / where / f"train-{i:05d}.png")
    for i, label in enumerate(source.test.labels.tolist()):
        save(source.test.images, i, root / "test" / names[label] / f"test-{i:05d}.png")
    (root / ".complete").touch()
    return root


def run(folder: Path, kind: str, seed: int, out: Path) -> dict:
    """Train (or finish) one run of ``kind`` (supernet, max, min) with the CLI; returns its
    eval.json and timing.json."""
    return train_cli(folder, KINDS[kind], seed, out)


def train_cli(folder: Path, options: list[str], seed: int, out: Path) -> dict:
    """``matchnas train --data folder --out out *options`` (resumed where it stopped) as a
    subprocess; returns the run's eval.json and timing.json."""
    if not (out / "eval.json").exists():
        if (out / "checkpoint-latest.pt").exists():
            command = ["--resume", str(out)]
        else:
            command = ["--data", str(folder), "--out", str(out), *options]
            command += ["--set", f"train.seed={seed}"] if seed else []
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.plan.txt", "a") as log:
            subprocess.run([sys.executable, "-m", "matchnas", "train", *command], check=True, stdout=log)
    timing = json.loads((out / "timing.json").read_text())
    return {"top1": json.loads((out / "eval.json").read_text()), "timing": timing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="fashion-mnist")
    parser.add_argument("--labels", type=int, default=40, help="labelled images per class in the folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", default="supernet,max,min", help="which of supernet, max, min to train")
    args = parser.parse_args()
    name = f"{args.source}-{args.labels}"
    folder = write_folder(args.source, args.labels, RUNS / "folders" / name)
    result_path = RESULTS / f"folder_defaults-{name}.json"
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    for seed in args.seeds:
        for kind in args.runs.split(","):
            out = RUNS / "folder-defaults" / name / f"{kind}-s{seed}"
            results[f"{kind}-s{seed}"] = run(folder, kind, seed, out)
            latest = json.loads(result_path.read_text()) if result_path.exists() else {}
            atomic_write_json(result_path, {**latest, **results})  # another lane may have written
            print(table(json.loads(result_path.read_text()), name), flush=True)


def table(results: dict, name: str) -> str:
    lines = [f"{name}: `matchnas train --data DIR` (top-1 %, measured time / plan's estimate)",
             "| seed | supernet maxnet | supernet minnet | single FixMatch max | single FixMatch min |",
             "|---|---:|---:|---:|---:|"]
    seeds = sorted({int(key.rsplit("-s", 1)[1]) for key in results})
    for seed in seeds:
        cells = []
        for kind, end in (("supernet", "max"), ("supernet", "min"), ("max", "single"), ("min", "single")):
            r = results.get(f"{kind}-s{seed}")
            if r is None:
                cells.append("-")
                continue
            ratio = r["timing"].get("measured_over_estimate") if end != "min" else None
            cells.append(f"{100 * r['top1'][end]:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
