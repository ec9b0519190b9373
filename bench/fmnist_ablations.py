"""MatchNAS ablations on Fashion-MNIST (full loss): pseudo-labels from the maxnet (the default)
versus each subnet's own, and training on the whole space versus a space narrowed before training
by a zero-cost proxy (``narrow.proxy``; MatchNAS-dagger).

Usage: python bench/fmnist_ablations.py [--quick] [--seeds 0 1] [--proxy synflow] [--variants own narrowed]

``--variants`` trains and reports only those variants next to the default (its own result file).
"""

from __future__ import annotations

import json

from suite import parse_mode, report_max_min, run_path, supernet_top1


VARIANTS = ("own", "narrowed")


def main() -> None:
    def options(parser):
        parser.add_argument("--proxy", default="synflow")
        parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    candidates = 200 if mode.name == "quick" else 1000
    narrowed_label = f"narrowed by {args.proxy}"
    optional = {  # key: (row label, run name, overrides)
        "own": ("own pseudo-labels", "supernet-full-self", ["train.pseudo_labels=self"]),
        "narrowed": (narrowed_label, f"supernet-full-narrow-{args.proxy}",
                     [f"narrow.proxy={args.proxy}", f"narrow.candidates={candidates}"]),
    }
    chosen = [key for key in VARIANTS if key in args.variants]
    variants = {"maxnet pseudo-labels (default)": ("supernet-full", []),
                **{optional[key][0]: optional[key][1:] for key in chosen}}
    rows = {label: {"max": [], "min": []} for label in variants}
    for seed in mode.seeds:
        for label, (name, overrides) in variants.items():
            result = supernet_top1(name, ["train.loss=full", *overrides], mode, seed)
            for net in ("max", "min"):
                rows[label][net].append(result[net])
    extra = {}
    if "narrowed" in chosen:
        pool = json.loads((run_path(optional["narrowed"][1], mode, mode.seeds[0]) / "pool.json").read_text())
        extra["narrowing"] = {"proxy": args.proxy, "candidates": candidates, "pool_size": len(pool["pool"])}
    script = "fmnist_ablations" + ("" if len(chosen) == len(VARIANTS) else "-" + "_".join(chosen))
    report_max_min(script, mode, "MatchNAS ablations", rows, extra)

if __name__ == "__main__":
    main()
