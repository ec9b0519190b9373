"""TOFA's Table 4 on Fashion-MNIST: the supernet trained with each loss variant, maxnet and minnet
top-1: ``sup`` (labels only), ``fm`` (labels + FixMatch), ``kd`` (labels + in-place distillation
from the maxnet), ``full`` (all three, the default).

Usage: python bench/fmnist_table4.py [--quick] [--seeds 0 1]
"""

from __future__ import annotations

from suite import final_metrics, parse_mode, report_max_min, run_path, supernet_top1

LOSSES = ("sup", "fm", "kd", "full")


def main() -> None:
    _, mode = parse_mode(__doc__.splitlines()[0])
    rows = {f"loss={loss}": {"max": [], "min": []} for loss in LOSSES}
    for seed in mode.seeds:
        for loss in LOSSES:
            result = supernet_top1(f"supernet-{loss}", [f"train.loss={loss}"], mode, seed)
            for net in ("max", "min"):
                rows[f"loss={loss}"][net].append(result[net])
    metrics = {loss: [final_metrics(run_path(f"supernet-{loss}", mode, s)) for s in mode.seeds] for loss in LOSSES}
    report_max_min("fmnist_table4", mode, "Table 4", rows, {"final_metrics": metrics})


if __name__ == "__main__":
    main()
