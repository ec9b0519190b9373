"""MatchNAS ablations on Fashion-MNIST (full loss): pseudo-labels from the maxnet (the default)
versus each subnet's own, and training on the whole space versus a space narrowed before training
by a zero-cost proxy (``narrow.proxy``; MatchNAS-dagger).

Usage: python bench/fmnist_ablations.py [--quick] [--seeds 0 1] [--proxy synflow]
"""

from __future__ import annotations

import json

from suite import parse_mode, report_max_min, run_path, supernet_top1


def main() -> None:
    args, mode = parse_mode(__doc__.splitlines()[0], lambda p: p.add_argument("--proxy", default="synflow"))
    candidates = 200 if mode.name == "quick" else 1000
    variants = {
        "maxnet pseudo-labels (default)": ("supernet-full", []),
        "own pseudo-labels": ("supernet-full-self", ["train.pseudo_labels=self"]),
        f"narrowed by {args.proxy}": (f"supernet-full-narrow-{args.proxy}",
                                      [f"narrow.proxy={args.proxy}", f"narrow.candidates={candidates}"]),
    }
    rows = {label: {"max": [], "min": []} for label in variants}
    for seed in mode.seeds:
        for label, (name, overrides) in variants.items():
            result = supernet_top1(name, ["train.loss=full", *overrides], mode, seed)
            for net in ("max", "min"):
                rows[label][net].append(result[net])
    narrowed = run_path(variants[f"narrowed by {args.proxy}"][0], mode, mode.seeds[0]) / "pool.json"
    pool = json.loads(narrowed.read_text())
    report_max_min("fmnist_ablations", mode, "MatchNAS ablations", rows,
                   {"narrowing": {"proxy": args.proxy, "candidates": candidates, "pool_size": len(pool["pool"])}})


if __name__ == "__main__":
    main()
