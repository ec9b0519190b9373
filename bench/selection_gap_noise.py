"""Is a strategy's gap to the best known subnet a measurement? Paired test-set noise of every gap
that ``bench/selection_reference.py`` reported.

    python bench/selection_gap_noise.py bench/runs/folder-defaults/fashion-mnist-40/supernet-s0

For each budget and each strategy's pick, the pick and the best known subnet under the budget are
evaluated image by image on the same test images (the reference's truth split, after the same BN
recalibration): the gap is the mean of ``d_i = [best right] - [pick right]``, its standard error
``sd(d) / sqrt(n)``, and McNemar's exact test (``scipy.stats.binomtest`` on the images exactly one
of the two gets right) says how likely a gap this large is when the two subnets are equally
accurate. A gap under two standard errors is not resolved by this test set. The best known is the
maximum of many such noisy measurements, so its own top-1 is optimistic as well: a small gap
is the most this benchmark can show. Writes ``bench/results/selection_gap_noise-<name>.json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from scipy import stats

from matchnas import evaluate
from matchnas.io import atomic_write_json, read_json
from matchnas.run import open_run
from matchnas.space import SubnetConfig
from selection_reference import carve

RESULTS = Path(__file__).resolve().parent / "results"


def correct(run, config: SubnetConfig, truth) -> torch.Tensor:
    """Per-image correctness (bool) of ``config`` on ``truth``, after the run's BN recalibration."""
    return evaluate.correct(run.subnet(config), truth, config.resolution, normalisation=run.normalisation)


def paired(best: torch.Tensor, pick: torch.Tensor) -> dict:
    d = best.double() - pick.double()
    only_best, only_pick = int((best & ~pick).sum()), int((pick & ~best).sum())
    discordant = only_best + only_pick
    p = stats.binomtest(only_best, discordant, 0.5).pvalue if discordant else 1.0
    return {"gap": 100 * float(d.mean()), "se": 100 * float(d.std(unbiased=True)) / math.sqrt(len(d)),
            "only_best": only_best, "only_pick": only_pick, "mcnemar_p": float(p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", help="the reference's name (default: the run's parent and folder names)")
    args = parser.parse_args()
    name = args.name or f"{args.run_dir.resolve().parent.name}-{args.run_dir.name}"
    results = read_json(RESULTS / f"selection_reference-{name}.json", "selection_reference results")
    run = open_run(args.run_dir, device="cpu")
    _, truth = carve(run.images("held_out"), results["header"]["val_images"], run.experiment.train.seed)
    cache: dict[str, torch.Tensor] = {}

    def hits(config_id: str, config: dict) -> torch.Tensor:
        if config_id not in cache:
            cache[config_id] = correct(run, SubnetConfig.from_dict(config), truth)
        return cache[config_id]

    reference = read_json(RESULTS / f"selection_reference-{name}.reference.json", "the reference cache")["rows"]
    best_by_budget = dict(zip(results["budgets"], results["best_known"].values()))
    rows = []
    for pick in results["picks"]:
        best = best_by_budget[pick["budget"]]
        if pick["config_id"] is None:
            continue
        pick_config = reference[pick["config_id"]]["config"]
        row = {"budget": pick["budget"], "strategy": pick["strategy"], "pick": pick["config_id"],
               "best": best["config_id"], **paired(hits(best["config_id"], best["config"]), hits(pick["config_id"], pick_config))}
        rows.append(row)
        print(f"{pick['budget'] / 1e6:7.2f}M {pick['strategy']:<16} gap {row['gap']:+.2f} +- {row['se']:.2f} "
              f"(best only {row['only_best']}, pick only {row['only_pick']}, McNemar p {row['mcnemar_p']:.3f})", flush=True)
    atomic_write_json(RESULTS / f"selection_gap_noise-{name}.json", {"truth_images": len(truth), "rows": rows})


if __name__ == "__main__":
    main()
