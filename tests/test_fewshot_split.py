"""Few-shot splitting: partitions, routing of configs to sub-supernets, gradient matching."""

import dataclasses

import numpy as np
import pytest
import torch

from matchnas.errors import MatchnasError
from matchnas.train.fewshot_split import (
    Edge,
    Partition,
    SplitPlan,
    SplitSupernet,
    best_partition,
    candidate_edges,
    gradient_matching,
    part_schedule,
    plan_split,
    set_partitions,
)

# tiny space: stage 1 is per-block (block 0 kernel [3, 5], expand [2, 4]); stage 2 is per-stage
PLAN = SplitPlan("gm", 3, (
    Partition(Edge(1, "kernel"), ((3,), (5,))),
    Partition(Edge(2, "expand"), ((6,), (3,))),
))


@pytest.mark.parametrize("n, groups, count", [(3, 2, 3), (4, 2, 7), (4, 3, 6), (5, 2, 15), (2, 2, 1)])
def test_set_partitions_are_every_partition_once(n, groups, count):
    items = tuple(range(n))
    found = list(set_partitions(items, groups))
    assert len(found) == count == len({frozenset(frozenset(g) for g in p) for p in found})  # Stirling numbers
    for partition in found:
        assert len(partition) == groups and all(partition)
        assert sorted(x for g in partition for x in g) == list(items)


def test_best_partition_keeps_the_agreeing_choices_together():
    similarity = np.array([[1.0, 0.1, 0.8], [0.1, 1.0, -0.3], [0.8, -0.3, 1.0]])
    groups, across = best_partition(similarity, (3, 4, 6), 2)
    assert groups == ((3, 6), (4,))
    assert across == pytest.approx((0.1 - 0.3) / 2)


def test_every_config_is_served_by_exactly_the_part_whose_subspace_holds_it(tiny_space, rng):
    assert PLAN.num_parts == 4
    subspaces = [PLAN.subspace(tiny_space, i) for i in range(4)]
    for _ in range(200):
        config = tiny_space.sample(rng)
        part = PLAN.part_of(config)
        assert [config in s for s in subspaces] == [i == part for i in range(4)]
    for i, sub in enumerate(subspaces):
        for config in (sub.max(), sub.min(), sub.sample(rng)):
            assert PLAN.part_of(config) == i and config in tiny_space
    assert subspaces[0].stages[1].kernels[0] == (3,) and subspaces[0].stages[1].kernels[1] == (3, 5, 7)
    assert set(subspaces[1].stages[2].expands) == {(3,)}  # per-stage choice: every block restricted


def test_plan_round_trips_through_json(tiny_space):
    again = SplitPlan.from_dict(PLAN.to_dict())
    assert again == PLAN and again.num_parts == 4
    assert [part_schedule(PLAN, s) for s in range(3, 9)] == [0, 1, 2, 3, 0, 1]


def test_split_supernet_routes_forward_and_extraction(tiny_supernet, tiny_space, rng):
    split = SplitSupernet.from_parent(tiny_supernet, PLAN).eval()
    with torch.no_grad():
        split.parts[2].classifier.weight.add_(1.0)  # only part 2 changes
        for _ in range(12):
            config = tiny_space.sample(rng)
            x = torch.randn(2, 3, config.resolution, config.resolution)
            expected = split.parts[PLAN.part_of(config)](x, config)
            assert torch.equal(split(x, config), expected)
            assert torch.allclose(split.extract(config).eval()(x), expected, atol=1e-5)
            same_as_parent = torch.equal(split(x, config), tiny_supernet(x, config))
            assert same_as_parent == (PLAN.part_of(config) != 2)


def test_split_supernet_state_dict_round_trips(tiny_supernet):
    split = SplitSupernet.from_parent(tiny_supernet, PLAN)
    with torch.no_grad():
        split.parts[1].classifier.bias.fill_(3.0)
    fresh = SplitSupernet.from_parent(tiny_supernet, PLAN)
    fresh.load_state_dict(split.state_dict())
    assert torch.equal(fresh.parts[1].classifier.bias, torch.full_like(fresh.parts[1].classifier.bias, 3.0))


def test_gradient_matching_is_the_cosine_of_batch_averaged_gradients(tiny_supernet, tiny_space):
    edge = Edge(1, "expand")  # choices (2, 4)
    directions = {2: torch.tensor([1.0, 0.0]), 4: torch.tensor([1.0, 1.0])}

    def gradient_of(model, config, batch):
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        params[0].grad.view(-1)[:2] = batch * directions[edge.value(config)]

    similarity = gradient_matching(tiny_supernet, tiny_space, edge, [1.0, 3.0], gradient_of, seed=0)
    assert similarity.shape == (2, 2)
    assert similarity[0, 1] == similarity[1, 0] == pytest.approx(1 / np.sqrt(2))
    assert np.allclose(np.diag(similarity), 1.0)
    assert all(p.grad is None for p in tiny_supernet.parameters())


def test_gradient_matching_on_a_real_loss_is_a_similarity(tiny_supernet, tiny_space):
    tiny_supernet.train()
    images = torch.randn(8, 3, 20, 20)
    labels = torch.randint(0, 5, (8,))

    def gradient_of(model, config, batch):
        x = torch.nn.functional.interpolate(images, size=config.resolution)
        torch.nn.functional.cross_entropy(model(x, config), labels).backward()

    similarity = gradient_matching(tiny_supernet, tiny_space, Edge(1, "kernel"), [0, 1], gradient_of, seed=0)
    assert np.allclose(similarity, similarity.T) and np.allclose(np.diag(similarity), 1.0)
    assert -1.0 <= similarity[0, 1] < 1.0


def test_gm_splits_the_edges_whose_choices_disagree_most(tiny_supernet):
    def gradient_of(model, config, batch):
        # stage 1's expand choices pull in opposite directions; every other edge agrees
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        sign = 1.0 if config.stages[1].expand[0] == 2 else -1.0
        params[0].grad.view(-1)[0] = sign
        params[0].grad.view(-1)[1] = 0.1

    plan = plan_split("gm", tiny_supernet, 1, "expand", 2, step=5, seed=0, batches=[0], gradient_of=gradient_of)
    assert [p.edge for p in plan.partitions] == [Edge(1, "expand")] and plan.step == 5
    assert plan.scores["stage 1 expand"]["across_similarity"] < plan.scores["stage 2 expand"]["across_similarity"]


def test_random_split_is_seeded_and_valid(tiny_supernet, tiny_space):
    plans = [plan_split("random", tiny_supernet, 2, "kernel", 2, 4, seed, [], None) for seed in (0, 0, 1)]
    assert plans[0] == plans[1]
    for plan in plans:
        assert plan.num_parts == 4 and len({p.edge for p in plan.partitions}) == 2
    with pytest.raises(MatchnasError, match="split.edges=4 but the space has only 3 stages"):
        plan_split("random", tiny_supernet, 4, "kernel", 2, 4, 0, [], None)
    assert candidate_edges(tiny_space, "expand", 2) == [Edge(1, "expand"), Edge(2, "expand")]
    assert dataclasses.replace(PLAN, scores={"x": 1}) == PLAN  # scores are a record, not identity
