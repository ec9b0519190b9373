"""Which subnets a step trains (the sandwich rule), and TOFA's selection index.

The subnets of step ``t`` are a pure function of ``(seed, t)``: every process of a distributed run,
and a resumed run, samples the same ones (METHOD.md, "One training step", DDP note).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from matchnas.io import atomic_write_text
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


class SelectionIndex:
    """TOFA's index (Algorithm 2): ``I(a) += t`` each time ``a`` is sampled at iteration ``t``.

    After training, ``S = {a : I(a) > 0}`` and the fixed rule picks
    ``argmax_{a in S, c(a) <= b} I(a)``. Iterations count from 1 so the first step counts too.
    """

    def __init__(self, scores: dict[SubnetConfig, float] | None = None):
        self.scores: dict[SubnetConfig, float] = dict(scores or {})

    def record(self, config: SubnetConfig, iteration: int) -> None:
        self.scores[config] = self.scores.get(config, 0.0) + float(iteration)

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> str:
        rows = sorted(((c.to_dict(), s) for c, s in self.scores.items()), key=lambda r: -r[1])
        return json.dumps([{"config": c, "score": s} for c, s in rows])

    @classmethod
    def from_json(cls, text: str) -> SelectionIndex:
        return cls({SubnetConfig.from_dict(r["config"]): float(r["score"]) for r in json.loads(text)})

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())
