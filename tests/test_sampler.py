"""The sandwich sampler: the subnets of a step, a function of ``(seed, step)``."""

import numpy as np

from matchnas.train.sampler import sandwich


def test_sandwich_is_max_min_then_random_and_a_function_of_seed_and_step(tiny_space):
    configs = sandwich(tiny_space, seed=3, step=17, n_random=3)
    assert configs[:2] == [tiny_space.max(), tiny_space.min()] and len(configs) == 5
    assert configs == sandwich(tiny_space, seed=3, step=17, n_random=3)
    assert configs != sandwich(tiny_space, seed=3, step=18, n_random=3)
    assert configs != sandwich(tiny_space, seed=4, step=17, n_random=3)
    assert all(c in tiny_space for c in configs)


def test_sandwich_draws_from_a_pool_when_given(tiny_space):
    pool = tuple(tiny_space.sample(np.random.default_rng(i)) for i in range(3))
    for step in range(20):
        assert all(c in pool for c in sandwich(tiny_space, 0, step, pool=pool)[2:])
