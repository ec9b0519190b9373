"""What the label-free score costs, and what cheaper versions of it lose: Kendall tau with test
top-1 over the reference's random subnets, for fewer scored images and fewer BN-recalibration images.

    python bench/agreement_cost.py bench/runs/folder-defaults/fashion-mnist-40/supernet-s0

Needs the subnets' test top-1 from ``bench/selection_reference.py`` on the same run (its
``.reference.json``). For each recalibration count R (``--recalibration 512 256 128``; the run's
own, 512, is the product's default) every random subnet is BN-recalibrated on R images and scores
the first n of the run's seeded unlabelled sample (``matchnas.search.agreement.unlabelled_sample``:
the first n of 2000 are exactly the sample the product draws with n images), for
n in ``--images 250 500 1000 2000``; the maxnet, recalibrated the same way, is the teacher. Time
per subnet is measured per part (recalibration, then each chunk of images), so the time for n
images is the recalibration plus the chunks up to n. Writes
``bench/results/agreement_cost-<name>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from scipy import stats
from tqdm import tqdm

from matchnas import devices
from matchnas.evaluate import recalibration_batches
from matchnas.io import atomic_write_json, read_json
from matchnas.nn import recalibrate_bn
from matchnas.run import open_run
from matchnas.search.agreement import agreement_scores, unlabelled_sample
from matchnas.space import SubnetConfig

RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def timed_logits(run, config: SubnetConfig, images: torch.Tensor, chunks: list[int], recal: int) -> tuple[torch.Tensor, list[float]]:
    """Logits of ``config`` on ``images`` after recalibration on ``recal`` images, and the seconds
    spent: ``[recalibration, chunk 1, chunk 2, ...]`` (chunks as image counts)."""
    t = run.experiment.train
    fmt = devices.memory_format(torch.device("cpu"))
    start = time.perf_counter()
    batches = recalibration_batches(run.data.recalibration_pool, config.resolution, recal, t.seed, run.data.flip,
                                    normalisation=run.normalisation)
    net = recalibrate_bn(run.supernet.extract(config).to(memory_format=fmt),
                         [b.contiguous(memory_format=fmt) for b in batches])
    seconds = [time.perf_counter() - start]
    outputs = []
    for part in images.split(chunks):
        start = time.perf_counter()
        x = run.normalisation(part, size=config.resolution).contiguous(memory_format=fmt)
        outputs.append(net(x).float())
        seconds.append(time.perf_counter() - start)
    return torch.cat(outputs), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", help="the reference's name (default: the run's parent and folder names)")
    parser.add_argument("--images", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--recalibration", type=int, nargs="+", default=[512, 256, 128])
    args = parser.parse_args()
    name = args.name or f"{args.run_dir.resolve().parent.name}-{args.run_dir.name}"
    rows = read_json(RESULTS / f"selection_reference-{name}.reference.json", "a selection reference")["rows"]
    randoms = [r for r in rows.values() if "random" in r["kinds"]]
    truth = [r["test_top1"] for r in randoms]
    run = open_run(args.run_dir, device="cpu")
    sizes = sorted(args.images)
    images = unlabelled_sample(run, sizes[-1])
    chunks = [b - a for a, b in zip([0, *sizes[:-1]], sizes)]
    path = RESULTS / f"agreement_cost-{name}.json"
    results = read_json(path, "agreement-cost results") if path.exists() else {}
    for recal in args.recalibration:
        if str(recal) in results:
            continue
        teacher, _ = timed_logits(run, run.supernet.space.max(), images, chunks, recal)
        teacher = torch.softmax(teacher.double(), dim=1)
        scores = {n: {"agreement": [], "kl": []} for n in sizes}
        seconds = {n: [] for n in sizes}
        for row in tqdm(randoms, desc=f"recalibration {recal}"):
            logits, parts = timed_logits(run, SubnetConfig.from_dict(row["config"]), images, chunks, recal)
            for i, n in enumerate(sizes):
                agree, kl = agreement_scores(teacher[:n], logits[:n])
                scores[n]["agreement"].append(agree)
                scores[n]["kl"].append(-kl)
                seconds[n].append(sum(parts[: i + 2]))
        results[str(recal)] = {
            str(n): {"kendall_tau_agreement": float(stats.kendalltau(scores[n]["agreement"], truth).statistic),
                     "kendall_tau_neg_kl": float(stats.kendalltau(scores[n]["kl"], truth).statistic),
                     "seconds_per_subnet": sum(seconds[n]) / len(seconds[n])} for n in sizes}
        results["subnets"] = len(randoms)
        atomic_write_json(path, results)
    print(f"{name}: label-free score over {len(randoms)} random subnets (Kendall tau with test top-1)")
    print("| recalibration images | scored images | tau agreement | tau -KL | s per subnet | s per 100 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for recal in args.recalibration:
        for n in sizes:
            r = results[str(recal)][str(n)]
            print(f"| {recal} | {n} | {r['kendall_tau_agreement']:+.3f} | {r['kendall_tau_neg_kl']:+.3f} | "
                  f"{r['seconds_per_subnet']:.2f} | {100 * r['seconds_per_subnet']:.0f} |")


if __name__ == "__main__":
    main()
