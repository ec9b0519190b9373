"""The phases of a training run from its ``metrics.jsonl`` (the teacher-first analysis).

Usage: python bench/run_phases.py RUN_DIR [RUN_DIR ...] [--warmup-steps 200]

Per run: the teacher's mean mask rate and pseudo-label accuracy over steps 101-200, 201-400 and
the last 50, and the median seconds of a step during the first ``--warmup-steps`` (step 1 left out)
against the steps after, with what that ratio implies for a whole teacher-first run
(``warmup fraction * ratio + (1 - warmup fraction)`` of a plain sandwich run at equal steps).
Step times within one run share its machine load, which makes them comparable where the runs'
overall s/step are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def mean_over(rows: list[dict], first: int, last: int, key: str) -> float | None:
    values = [r[key] for r in rows if first <= r["step"] <= last and key in r]
    return statistics.mean(values) if values else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--warmup-steps", type=int, default=200)
    args = parser.parse_args()
    print("| run | mask 101-200 | mask 201-400 | mask last 50 | pl acc 101-200 | pl acc last 50 "
          "| warm-up step / later step (median s) | implied run cost vs plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        steps = rows[-1]["step"]
        warm = statistics.median(r["seconds"] for r in rows if 2 <= r["step"] <= args.warmup_steps)
        later = statistics.median(r["seconds"] for r in rows if r["step"] > args.warmup_steps)
        fraction = args.warmup_steps / steps
        cells = [mean_over(rows, 101, 200, "mask_rate"), mean_over(rows, 201, 400, "mask_rate"),
                 mean_over(rows, steps - 49, steps, "mask_rate"), mean_over(rows, 101, 200, "pl_acc"),
                 mean_over(rows, steps - 49, steps, "pl_acc")]
        print(f"| {run.name} | " + " | ".join(map(fmt, cells))
              + f" | {warm / later:.2f} | {fraction * warm / later + 1 - fraction:.2f} |")


if __name__ == "__main__":
    main()
