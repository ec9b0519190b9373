"""Search-space narrowing before training (MatchNAS's dagger variant, docs/method.md "Choosing
subnets after training"): sample ``K`` configs, score each with a zero-cost proxy on the converted
(pre-trained) supernet, keep the best fraction within each FLOPs bin, and train only on that pool
plus ``a_max`` and ``a_min``. The pool is saved as ``pool.json`` in the run directory."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from matchnas import cost
from matchnas.data import Normalisation
from matchnas.nn import Supernet
from matchnas.space import SubnetConfig


def narrow_space(
    supernet: Supernet, images: torch.Tensor, proxy_name: str, candidates: int, keep: float, bins: int, seed: int,
    normalisation: Normalisation,
) -> tuple[list[SubnetConfig], list[dict]]:
    """The kept pool (max and min included) and one record per scored candidate.

    ``images``: uint8 unlabelled images (a batch of 64 is used), made model input with the run's
    ``normalisation``. Bins are FLOPs quantiles; within
    a bin the best ``ceil(keep * size)`` by the proxy (in its own direction) are kept.
    """
    from matchnas.proxies import get_proxy, proxy_input

    proxy = get_proxy(proxy_name)
    space = supernet.space
    rng = np.random.default_rng([seed, 0xDA6])
    configs = list(dict.fromkeys(space.sample(rng) for _ in range(candidates)))
    batch = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:64]]
    records = []
    was_training = supernet.training
    supernet.eval()
    for config in tqdm(configs, desc=f"narrow ({proxy_name})", unit="config", leave=False):
        score = float(proxy(proxy_input(supernet, config, batch, seed, normalisation)))
        records.append({"config": config, "flops": cost.flops(space, config, supernet.num_classes), "score": score})
    supernet.train(was_training)
    edges = np.quantile([r["flops"] for r in records], np.linspace(0, 1, bins + 1)[1:-1])
    sign = 1.0 if proxy.higher_is_better else -1.0
    kept = []
    for b in range(bins):
        members = [r for r in records if int(np.searchsorted(edges, r["flops"], side="right")) == b]
        members.sort(key=lambda r: -sign * r["score"])
        kept += [r["config"] for r in members[: math.ceil(keep * len(members))]]
    pool = list(dict.fromkeys([space.max(), space.min(), *kept]))
    return pool, records
