"""Which subnets a step trains (the sandwich rule); TOFA's selection index is :mod:`matchnas.selection_index`.

The subnets of step ``t`` are a pure function of ``(seed, t)``: every process of a distributed run,
and a resumed run, samples the same ones (docs/method.md, "One training step", DDP note).
"""

from __future__ import annotations

import numpy as np

from matchnas.space import SearchSpace, SubnetConfig


def sandwich(
    space: SearchSpace,
    seed: int,
    step: int,
    n_random: int = 2,
    pool: tuple[SubnetConfig, ...] | None = None,
) -> list[SubnetConfig]:
    """``[a_max, a_min, a_r1, ..., a_rn]`` for step ``step``. Random subnets are drawn from the
    space, or uniformly from ``pool`` when the space was narrowed before training."""
    rng = np.random.default_rng([seed, step, 0x5A4D])
    if pool:
        randoms = [pool[int(i)] for i in rng.integers(len(pool), size=n_random)]
    else:
        randoms = [space.sample(rng) for _ in range(n_random)]
    return [space.max(), space.min(), *randoms]
