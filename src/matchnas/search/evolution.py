"""NSGA-II over subnet configs with pymoo (TOFA eq. 5, multi-objective form).

Objectives: maximise validation top-1 (inherited weights, BN re-calibrated) and minimise the
budget metric. Individuals are :class:`SubnetConfig` values; the search space's own ``sample``,
``crossover`` and ``mutate`` are the variation operators, driven by pymoo's seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import ElementwiseDuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.problem import ElementwiseProblem
from pymoo.core.sampling import Sampling
from pymoo.optimize import minimize

from matchnas.space import SearchSpace, SubnetConfig


class _Sample(Sampling):
    def __init__(self, space: SearchSpace, seeds: list[SubnetConfig]):
        super().__init__()
        self.space, self.seeds = space, seeds

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        configs = self.seeds[:n_samples]
        configs += [self.space.sample(random_state) for _ in range(n_samples - len(configs))]
        return np.array(configs, dtype=object).reshape(-1, 1)


class _Crossover(Crossover):
    def __init__(self, space: SearchSpace):
        super().__init__(n_parents=2, n_offsprings=1, prob=0.9)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, _ = X.shape
        out = np.empty((1, n_matings, 1), dtype=object)
        for k in range(n_matings):
            out[0, k, 0] = self.space.crossover(X[0, k, 0], X[1, k, 0], random_state)
        return out


class _Mutation(Mutation):
    def __init__(self, space: SearchSpace, prob_per_choice: float):
        super().__init__(prob=1.0)
        self.space, self.prob_per_choice = space, prob_per_choice

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        for i in range(len(X)):
            X[i, 0] = self.space.mutate(X[i, 0], random_state, self.prob_per_choice)
        return X


class _SameConfig(ElementwiseDuplicateElimination):
    def is_equal(self, a, b) -> bool:
        return a.X[0] == b.X[0]


class _Problem(ElementwiseProblem):
    def __init__(self, accuracy: Callable[[SubnetConfig], float], cost: Callable[[SubnetConfig], float], log: dict):
        super().__init__(n_var=1, n_obj=2)
        self.accuracy, self.cost, self.log = accuracy, cost, log

    def _evaluate(self, x, out, *args, **kwargs):
        config = x[0]
        if config not in self.log:
            self.log[config] = (config, self.cost(config), self.accuracy(config))
        _, c, acc = self.log[config]
        out["F"] = [-acc, c]


def nsga2(ctx, accuracy: Callable[[SubnetConfig], float], population: int = 30, generations: int = 10, mutation: float = 0.1,
          seeds: list[SubnetConfig] = ()):
    """Run NSGA-II for ``generations`` generations of ``population`` (at most
    ``population * generations`` distinct evaluations; the max and min subnets, then ``seeds``,
    fill the first population, random configs the rest). Returns ``(evaluated, front)``, each a
    list of ``(config, cost, accuracy)``."""
    space = ctx.space
    log: dict[SubnetConfig, tuple[SubnetConfig, float, float]] = {}
    algorithm = NSGA2(
        pop_size=population,
        sampling=_Sample(space, list(dict.fromkeys([space.max(), space.min(), *seeds]))),
        crossover=_Crossover(space),
        mutation=_Mutation(space, mutation),
        eliminate_duplicates=_SameConfig(),
    )
    result = minimize(_Problem(accuracy, ctx.metric, log), algorithm, ("n_gen", generations), seed=ctx.seed, verbose=False)
    front = sorted((log[x[0]] for x in np.atleast_2d(result.X)), key=lambda t: t[1])
    return list(log.values()), front
