"""What a selection strategy is given and what it returns: :class:`SearchContext` (the trained
supernet, a cost metric, the selection index, the data it may use), one :class:`Pick` per budget,
and the :class:`SearchResult` that holds them with every config evaluated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import torch

from matchnas.errors import MatchnasError
from matchnas.nn import Supernet
from matchnas.search.budgets import Metric
from matchnas.search.candidates import BudgetFamily, budget_family
from matchnas.selection_index import SelectionIndex
from matchnas.space import SubnetConfig

if TYPE_CHECKING:
    from matchnas.data import Normalisation
    from matchnas.run import Run


@dataclass
class SearchContext:
    """What a strategy may use. ``validation_accuracy`` (config -> top-1 on the validation split
    after BN recalibration, cached) is None when the run has no validation data;
    ``proxy_images`` is a uint8 batch of unlabelled training images; ``label_free`` (config ->
    the label-free score, higher is better, cached) is None when there are no unlabelled images;
    ``notes`` are one-line remarks for the user (e.g. how ``--val-dir`` classes were matched)."""

    supernet: Supernet
    metric: Metric
    seed: int = 0
    index: SelectionIndex | None = None
    pool: tuple[SubnetConfig, ...] | None = None
    validation_accuracy: Callable[[SubnetConfig], float] | None = None
    proxy_images: torch.Tensor | None = None
    options: dict[str, float] = field(default_factory=dict)
    run: Run | None = None  # the trained run, when the context was built from one
    label_free: Callable[[SubnetConfig], float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def normalisation(self) -> Normalisation | None:
        """The run's input normalisation (None without a run: a proxy then refuses to guess one)."""
        return self.run.normalisation if self.run is not None else None

    @property
    def space(self):
        return self.supernet.space

    def require_validation(self, strategy: str) -> Callable[[SubnetConfig], float]:
        if self.validation_accuracy is None:
            raise MatchnasError(
                f"strategy '{strategy}' needs a validation split: train with data.val_per_class=N "
                "or pass --val-dir with labeled/<class>/ images"
            )
        return self.validation_accuracy

    def require_label_free(self, strategy: str) -> Callable[[SubnetConfig], float]:
        if self.label_free is None:
            raise MatchnasError(f"strategy '{strategy}' needs unlabelled images for the label-free score, and the run has none")
        return self.label_free

    def objective(self, strategy: str) -> tuple[Callable[[SubnetConfig], float], str]:
        """What a search ranks by, and its name: validation top-1 when there is a validation
        split, else the label-free score; neither is an error naming both."""
        if self.validation_accuracy is not None:
            return self.validation_accuracy, "val top-1"
        if self.label_free is not None:
            return self.label_free, getattr(self.label_free, "name", "label-free")
        raise MatchnasError(
            f"strategy '{strategy}' needs a validation split (data.val_per_class=N or --val-dir with "
            "labeled/<class>/ images) or unlabelled images for the label-free score, and the run has neither"
        )

    @cached_property
    def family(self) -> BudgetFamily:
        """The candidates that spend the budget (:mod:`matchnas.search.candidates`), within the
        narrowed pool (plus ``a_max`` and ``a_min``) when the run has one."""
        allowed_set = {*self.pool, self.space.max(), self.space.min()} if self.pool else None
        allowed = allowed_set.__contains__ if allowed_set is not None else None
        return budget_family(self.space, self.metric, allowed=allowed)

    def spending(self, budgets: list[float]) -> list[SubnetConfig]:
        """The budget-spending candidates of every budget, without duplicates."""
        return [config for config, _ in self.family.union(budgets)]


@dataclass(frozen=True)
class Pick:
    """The answer for one budget. ``config`` is None when no config meets the budget; then
    ``cost`` is the cheapest candidate's cost."""

    budget: float
    config: SubnetConfig | None
    cost: float
    score: float | None = None


@dataclass
class SearchResult:
    picks: list[Pick]
    evaluated: list[tuple[SubnetConfig, float, float]] = field(default_factory=list)  # config, cost, score
    front: list[tuple[SubnetConfig, float, float]] = field(default_factory=list)
    score_name: str = "score"
    seconds: float = 0.0
    higher_is_better: bool = True  # the direction of the evaluated configs' score
