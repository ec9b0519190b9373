"""Batch streams: determinism, resume, epoch coverage, rank shards; per-step generators."""

from __future__ import annotations

import pytest
import torch

from matchnas.data import BatchStream, derive_seed, generator_for
from matchnas.errors import MatchnasError


def test_stream_is_deterministic_by_seed_and_stream() -> None:
    a, b = BatchStream(100, 8, seed=0), BatchStream(100, 8, seed=0)
    assert all(torch.equal(a.batch(t), b.batch(t)) for t in range(30))
    assert not torch.equal(BatchStream(100, 8, seed=1).batch(0), a.batch(0))
    assert not torch.equal(BatchStream(100, 8, seed=0, stream=1).batch(0), a.batch(0))


def test_resuming_at_step_t_gives_the_same_batches() -> None:
    run = BatchStream(37, 5, seed=3)
    first = [run.batch(t) for t in range(40)]
    resumed = BatchStream(37, 5, seed=3)  # a fresh process starting at step 25
    assert all(torch.equal(resumed.batch(t), first[t]) for t in range(25, 40))
    assert torch.equal(resumed.batch(2), first[2])  # going back works too


def test_each_epoch_visits_every_index_once() -> None:
    stream = BatchStream(10, 4, seed=0)  # batches straddle epoch boundaries
    flat = torch.cat([stream.batch(t) for t in range(10)])  # 40 positions = 4 epochs
    for epoch in range(4):
        assert sorted(flat[10 * epoch : 10 * (epoch + 1)].tolist()) == list(range(10))
    assert not torch.equal(flat[:10], flat[10:20])  # a fresh order per epoch


def test_batch_larger_than_the_set_wraps_over_epochs() -> None:
    batch = BatchStream(3, 7, seed=0).batch(0)
    assert batch.shape == (7,) and sorted(batch[:6].tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_shards_partition_the_global_batch(world_size: int) -> None:
    ranks = [BatchStream(50, 8, seed=2, rank=r, world_size=world_size) for r in range(world_size)]
    for step in (0, 7, 13):
        shards = [r.batch(step) for r in ranks]
        assert all(s.shape == (8 // world_size,) for s in shards)
        assert torch.equal(torch.cat(shards), BatchStream(50, 8, seed=2).batch(step))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0, "batch_size": 4}, "from 0 items"),
        ({"n": 5, "batch_size": 0}, "at least 1"),
        ({"n": 5, "batch_size": 6, "world_size": 4}, "not divisible by world size 4"),
        ({"n": 5, "batch_size": 4, "rank": 2, "world_size": 2}, r"rank 2 is not in 0..1"),
    ],
)
def test_stream_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(MatchnasError, match=message):
        BatchStream(seed=0, **kwargs)


def test_generator_for_depends_only_on_its_keys() -> None:
    draw = lambda *keys: torch.rand(4, generator=generator_for(*keys))  # noqa: E731
    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    assert (
        len({tuple(draw(*keys).tolist()) for keys in [(0, 5, 1), (0, 5, 2), (0, 6, 1), (1, 5, 1)]})
        == 4
    )
    assert 0 <= derive_seed(2**40, 3) < 2**63
    with pytest.raises(MatchnasError, match="non-negative"):
        derive_seed(-1)
