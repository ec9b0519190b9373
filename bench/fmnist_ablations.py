"""MatchNAS ablations on Fashion-MNIST (full loss): pseudo-labels from the maxnet (the default)
versus each subnet's own, and training on the whole space versus a space narrowed before training
by a zero-cost proxy (``narrow.proxy``; MatchNAS-dagger).

Usage: python bench/fmnist_ablations.py [--quick] [--seeds 0 1] [--proxy synflow] [--variants own narrowed]

``--variants`` trains and reports only those variants next to the default (its own result file).
"""

from __future__ import annotations

import json

from suite import parse_mode, report_max_min, run_path, supernet_top1


def main() -> None:
    def options(parser):
        parser.add_argument("--proxy", default="synflow")
        parser.add_argument("--variants", nargs="+", choices=["own", "narrowed"], default=["own", "narrowed"])

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    candidates = 200 if mode.name == "quick" else 1000
    narrowed_label = f"narrowed by {args.proxy}"
    variants = {
        "maxnet pseudo-labels (default)": ("supernet-full", []),
        "own pseudo-labels": ("supernet-full-self", ["train.pseudo_labels=self"]),
        narrowed_label: (f"supernet-full-narrow-{args.proxy}",
                         [f"narrow.proxy={args.proxy}", f"narrow.candidates={candidates}"]),
    }
    if "own" not in args.variants:
        del variants["own pseudo-labels"]
    if "narrowed" not in args.variants:
        del variants[narrowed_label]
    rows = {label: {"max": [], "min": []} for label in variants}
    for seed in mode.seeds:
        for label, (name, overrides) in variants.items():
            result = supernet_top1(name, ["train.loss=full", *overrides], mode, seed)
            for net in ("max", "min"):
                rows[label][net].append(result[net])
    extra = {}
    if narrowed_label in variants:
        pool = json.loads((run_path(variants[narrowed_label][0], mode, mode.seeds[0]) / "pool.json").read_text())
        extra["narrowing"] = {"proxy": args.proxy, "candidates": candidates, "pool_size": len(pool["pool"])}
    script = "fmnist_ablations" + ("" if len(args.variants) == 2 else "-" + args.variants[0])
    report_max_min(script, mode, "MatchNAS ablations", rows, extra)


if __name__ == "__main__":
    main()
