"""Table 3 and accuracy against FLOPs before and after TensorFlow "same" padding.

Usage: python bench/padding_before_after.py [--seed 0]

Reads the results written before the change (``*-before-same-padding.json``, k // 2 padding) and
after it (``fmnist_table3-*-full.json`` row subsets or the whole table, and
``fmnist_accuracy_vs_flops-full.json``) and prints one Markdown table per study for one seed. Run
``python bench/fmnist_table3.py --rows a b d --seeds 0`` and
``python bench/fmnist_accuracy_vs_flops.py --seeds 0`` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def seed_value(result: dict, row: str, net: str, seed: int) -> float | None:
    if result is None or row not in result["top1"] or seed not in result["seeds"]:
        return None
    return result["top1"][row][net][result["seeds"].index(seed)]


def after_table3() -> list[dict]:
    """Every Table 3 result made after the change: the row subsets of the padding study first (the
    fewest rows first: ``-abd-`` was later re-run with the teacher-first default supernet), then the rest."""
    names = sorted((p.name for p in RESULTS.glob("fmnist_table3-*-full.json")), key=lambda n: (len(n), n))
    return [r for r in map(load, names) if r is not None]


def cell(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    before = load("fmnist_table3-full-before-same-padding.json")
    after = after_table3()
    print(f"| Table 3, seed {seed} | maxnet k // 2 | maxnet same | change | minnet k // 2 | minnet same | change |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in ("(a) single, labels only", "(b) single, FixMatch", "(c) supernet, sup", "(d) supernet, full"):
        new = {net: next((v for r in after if (v := seed_value(r, row, net, seed)) is not None), None) for net in ("max", "min")}
        if new["max"] is None:
            continue
        old = {net: seed_value(before, row, net, seed) for net in ("max", "min")}
        cells = []
        for net in ("max", "min"):
            change = f"{100 * (new[net] - old[net]):+.1f}" if old[net] is not None else "—"
            cells += [cell(old[net]), cell(new[net]), change]
        print(f"| {row} | " + " | ".join(cells) + " |")

    old_points = load("fmnist_accuracy_vs_flops-full-before-same-padding.json")
    new_points = load("fmnist_accuracy_vs_flops-full.json")
    if old_points is None or new_points is None or new_points.get("points") == old_points.get("points"):
        return
    print(f"\n| accuracy vs FLOPs, seed {seed} | MFLOPs | supernet % | single labels only % | single FixMatch % |")
    print("|---|---:|---:|---:|---:|")
    for label, result in (("k // 2", old_points), ("same", new_points)):
        for p in result["points"]:
            if p["seed"] == seed:
                print(f"| {label}: {p['config_id']} | {p['mflops']:.2f} | {cell(p['supernet'])} | "
                      f"{cell(p['single_sup'])} | {cell(p['single_fm'])} |")


if __name__ == "__main__":
    main()
