"""``matchnas proxies``: how well each zero-cost proxy ranks subnets of a trained supernet.

For ``n`` random configs (seeded; plus max and min), the ground truth is inherited-weight test
top-1 after BN recalibration; each proxy scores the same configs on a batch of unlabelled images
(as the zero-shot strategy does). Reports Kendall's tau and Spearman's rho (scipy.stats) of the
proxy, signed by its direction so that +1 is a perfect ranking.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from matchnas.io import atomic_write_json, check_writable
from matchnas.lock import run_lock
from matchnas.search.run import build_context


def rank_proxies(run_dir: str | Path, n: int = 50, names: list[str] | None = None) -> str:
    from matchnas.proxies import PROXIES, get_proxy

    run_dir = Path(run_dir)
    names = names or sorted(PROXIES)
    for name in names:  # before the run loads: a typo must not cost the ground-truth evaluations
        get_proxy(name)
    check_writable(run_dir / "proxies.json", "proxies output")
    with run_lock(run_dir, "proxies"):  # no other writer in the run meanwhile (training, search)
        return _rank(run_dir, n, names)


def _rank(run_dir: Path, n: int, names: list[str]) -> str:
    from matchnas.proxies import PROXIES, proxy_input

    ctx = build_context(run_dir, "flops")
    rng = np.random.default_rng([ctx.seed, 0x9A])
    configs = list(dict.fromkeys([ctx.space.max(), ctx.space.min(), *(ctx.space.sample(rng) for _ in range(n))]))
    truth, scores, seconds = [], {name: [] for name in names}, {name: 0.0 for name in names}
    for config in tqdm(configs, desc="proxies", unit="config"):
        truth.append(ctx.run.top1(config))
        inp = proxy_input(ctx.supernet, config, ctx.proxy_images, ctx.seed, ctx.normalisation)
        for name in names:
            began = time.perf_counter()
            scores[name].append(float(PROXIES[name](inp)))
            seconds[name] += time.perf_counter() - began
    rows = []
    for name in names:
        signed = np.asarray(scores[name]) * (1.0 if PROXIES[name].higher_is_better else -1.0)
        tau = stats.kendalltau(signed, truth).statistic
        rho = stats.spearmanr(signed, truth).statistic
        rows.append({"proxy": name, "kendall_tau": float(tau), "spearman_rho": float(rho),
                     "ms_per_config": 1e3 * seconds[name] / len(configs)})
    rows.sort(key=lambda r: -np.nan_to_num(r["kendall_tau"], nan=-2))
    body = {"n_configs": len(configs), "test_top1": truth, "rows": rows,
            "configs": [c.to_dict() for c in configs], "scores": scores}
    atomic_write_json(run_dir / "proxies.json", body)
    lines = [f"{len(configs)} configs; ground truth: inherited-weight test top-1 after BN recalibration "
             f"(range {100 * min(truth):.1f}-{100 * max(truth):.1f}%)",
             "| proxy | Kendall tau | Spearman rho | ms per config |", "|---|---:|---:|---:|"]
    lines += [f"| {r['proxy']} | {r['kendall_tau']:.3f} | {r['spearman_rho']:.3f} | {r['ms_per_config']:.1f} |" for r in rows]
    return "\n".join(lines) + f"\nwrote {run_dir / 'proxies.json'}"
