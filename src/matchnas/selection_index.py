"""TOFA's selection index ``I(a)``, recorded by training (every sampled subnet, weighted by the
iteration) and read by the ``fixed`` selection strategy; saved in every checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from matchnas.io import atomic_write_text
from matchnas.space import SubnetConfig


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
