"""The plan for a folder of photos, and the step time at 224 px on this machine.

No RGB photo data set is reachable here, so the folder is synthetic: 10 classes of 320 x 256 RGB
images (smooth random colour fields, 8 labelled per class, 200 unlabelled, 5 test images per class);
it shows which settings a photo folder gets and what a step costs, not an accuracy.

    OMP_NUM_THREADS=1 python bench/photo_plan.py [--backbone mobilenetv3-large-100]

Prints ``matchnas train --data DIR --dry-run``'s plan and writes it to
``bench/results/photo_plan-<backbone>.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "bench" / "runs" / "folders" / "synthetic-photos"


def write_photos(root: Path, classes: int = 10, labelled: int = 8, unlabelled: int = 200, test: int = 5) -> Path:
    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(0)

    def save(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((320, 256), Image.Resampling.BICUBIC).save(path, quality=90)

    for k in range(classes):
        for i in range(labelled):
            save(root / "labeled" / f"class{k}" / f"{i}.jpg")
        for i in range(test):
            save(root / "test" / f"class{k}" / f"{i}.jpg")
    for i in range(unlabelled):
        save(root / "unlabeled" / f"{i}.jpg")
    (root / ".complete").touch()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet-lite0")
    args = parser.parse_args()
    folder = write_photos(FOLDER)
    command = [sys.executable, "-m", "matchnas", "train", "--data", str(folder), "--dry-run",
               "--set", f"model.backbone={args.backbone}", "--out", str(ROOT / "bench" / "runs" / "photo-plan")]
    plan = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    print(plan)
    out = ROOT / "bench" / "results" / f"photo_plan-{args.backbone}.txt"
    out.write_text(f"$ {' '.join(['matchnas', *command[3:]])}\n{plan}")


if __name__ == "__main__":
    main()
