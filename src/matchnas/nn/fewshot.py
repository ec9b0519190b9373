"""A few-shot supernet (GM-NAS): the split plan (which edges were split into which groups of
choices) and :class:`SplitSupernet`, the sub-supernets behind the supernet interface. How a plan
is made (gradient matching) is training's business: :mod:`matchnas.train.fewshot_split`."""

from __future__ import annotations

import copy
import math
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from matchnas.errors import MatchnasError
from matchnas.nn.supernet import Supernet
from matchnas.space import SearchSpace, SubnetConfig

DIMENSIONS = ("kernel", "expand")


@dataclass(frozen=True)
class Edge:
    """The ``dimension`` ("kernel" or "expand") choice of the first block of stage ``stage``.

    ``dimension`` is the field's name in a :class:`StageConfig`; the stage space's field is its
    plural (``kernels``, ``expands``)."""

    stage: int
    dimension: str

    @property
    def space_field(self) -> str:
        return self.dimension + "s"

    def choices(self, space: SearchSpace) -> tuple:
        return getattr(space.stages[self.stage], self.space_field)[0]

    def value(self, config: SubnetConfig) -> Any:
        return getattr(config.stages[self.stage], self.dimension)[0]

    def with_value(self, space: SearchSpace, config: SubnetConfig, value: Any) -> SubnetConfig:
        """``config`` with this edge set to ``value`` (the whole stage in a per_block: false stage)."""
        s = config.stages[self.stage]
        n = s.depth if not space.stages[self.stage].per_block else 1
        old = getattr(s, self.dimension)
        new = (value,) * n + old[n:]
        stage = dataclasses.replace(s, **{self.dimension: new})
        stages = config.stages[: self.stage] + (stage,) + config.stages[self.stage + 1 :]
        return dataclasses.replace(config, stages=stages)

    def __str__(self) -> str:
        return f"stage {self.stage} {self.dimension}"


@dataclass(frozen=True)
class Partition:
    """How one edge's choices are grouped; ``groups[g]`` is a tuple of choices."""

    edge: Edge
    groups: tuple[tuple, ...]

    def group_of(self, value: Any) -> int:
        for g, group in enumerate(self.groups):
            if value in group:
                return g
        raise MatchnasError(f"{self.edge} choice {value!r} is in no group of the split {self.groups}")


@dataclass(frozen=True)
class SplitPlan:
    """The split of a run: one partition per split edge. Sub-supernet ``i`` holds, for each edge,
    the group given by ``i``'s mixed-radix digits (first edge most significant)."""

    method: str
    step: int  # the training step at which the parent was split
    partitions: tuple[Partition, ...]
    scores: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)  # for the record

    @property
    def num_parts(self) -> int:
        return math.prod(len(p.groups) for p in self.partitions)

    def part_of(self, config: SubnetConfig) -> int:
        index = 0
        for p in self.partitions:
            index = index * len(p.groups) + p.group_of(p.edge.value(config))
        return index

    def groups_of_part(self, part: int) -> list[int]:
        digits = []
        for p in reversed(self.partitions):
            part, g = divmod(part, len(p.groups))
            digits.append(g)
        return digits[::-1]

    def subspace(self, space: SearchSpace, part: int) -> SearchSpace:
        """The configs sub-supernet ``part`` serves, as a search space (sample/max/min work)."""
        stages = list(space.stages)
        for p, g in zip(self.partitions, self.groups_of_part(part)):
            s = stages[p.edge.stage]
            allowed = tuple(c for c in p.edge.choices(space) if c in p.groups[g])
            old = getattr(s, p.edge.space_field)
            new = (allowed,) + (old[1:] if s.per_block else (allowed,) * (len(old) - 1))
            stages[p.edge.stage] = dataclasses.replace(s, **{p.edge.space_field: new})
        return dataclasses.replace(space, stages=tuple(stages))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "step": self.step,
            "partitions": [
                {"stage": p.edge.stage, "dimension": p.edge.dimension, "groups": [list(g) for g in p.groups]}
                for p in self.partitions
            ],
            "scores": self.scores,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitPlan:
        partitions = tuple(
            Partition(Edge(int(p["stage"]), str(p["dimension"])), tuple(tuple(g) for g in p["groups"]))
            for p in data["partitions"]
        )
        return cls(str(data["method"]), int(data["step"]), partitions, dict(data.get("scores", {})))


class SplitSupernet(nn.Module):
    """Sub-supernets behind the supernet interface: ``forward(x, config)`` and ``extract(config)``
    go to the part that serves ``config``; ``space`` is the whole space."""

    def __init__(self, parts: list[Supernet], plan: SplitPlan):
        super().__init__()
        if len(parts) != plan.num_parts:
            raise MatchnasError(f"the split has {plan.num_parts} parts but {len(parts)} sub-supernets were given")
        self.parts = nn.ModuleList(parts)
        self.plan = plan
        self.space = parts[0].space
        self.num_classes = parts[0].num_classes
        self.in_chans = parts[0].in_chans

    @classmethod
    def from_parent(cls, parent: Supernet, plan: SplitPlan) -> SplitSupernet:
        return cls([copy.deepcopy(parent) for _ in range(plan.num_parts)], plan)

    @property
    def dropout(self) -> nn.Dropout:
        return self.parts[0].dropout

    def part(self, config: SubnetConfig) -> Supernet:
        return self.parts[self.plan.part_of(config)]

    def forward(self, x: torch.Tensor, config: SubnetConfig) -> torch.Tensor:
        return self.part(config)(x, config)

    def extract(self, config: SubnetConfig):
        return self.part(config).extract(config)
