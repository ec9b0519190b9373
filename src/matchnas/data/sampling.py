"""Stateless, seeded batch streams and per-step random generators.

The batches of a run are a pure function of ``(seed, stream, step)``: the stream walks through
epochs, each a fresh permutation of ``0 .. n-1`` seeded by ``(seed, stream, epoch)``; the global
batch of step ``t`` is positions ``t*B .. t*B + B - 1`` of that endless sequence (a batch may span
two epochs). A resumed run therefore sees the same batches without saving any sampler state, and
under data parallelism each rank takes its contiguous slice of the same global batch.
"""

from __future__ import annotations

import numpy as np
import torch

from matchnas.errors import MatchnasError


def derive_seed(*keys: int) -> int:
    """Mix integer keys (e.g. ``seed, step, rank``) into one 63-bit seed.

    Nearby keys give unrelated seeds (numpy's ``SeedSequence`` hashing), so ``(seed, step)`` and
    ``(seed + 1, step)`` do not share random numbers.
    """
    if any(k < 0 for k in keys):
        raise MatchnasError(f"seed keys must be non-negative, got {keys}")
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator_for(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed` of ``keys``.

    For augmentations use e.g. ``generator_for(seed, step, rank, view)``: the views then depend on
    the step, not on how many random numbers earlier steps drew, and resume reproduces them.
    """
    return torch.Generator().manual_seed(derive_seed(*keys))


class BatchStream:
    """Endless seeded batches of indices into a set of ``n`` items.

    Args:
        n: number of items (e.g. ``len(split_sets.labeled)``).
        batch_size: global batch size ``B`` (summed over ranks).
        seed: run seed.
        stream: distinguishes streams of one run (e.g. 0 labelled, 1 unlabelled).
        rank, world_size: this process's slice of each global batch; ``B`` must be divisible by
            ``world_size``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        stream: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1:
            raise MatchnasError(f"cannot draw batches from {n} items")
        if batch_size < 1:
            raise MatchnasError(f"batch size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise MatchnasError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size % world_size:
            raise MatchnasError(
                f"batch size {batch_size} is not divisible by world size {world_size}"
            )
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.rank, self.world_size = rank, world_size
        self._perms: dict[
            int, torch.Tensor
        ] = {}  # cache of recent epochs; results never depend on it

    @property
    def local_batch_size(self) -> int:
        """Indices per rank and step: ``batch_size // world_size``."""
        return self.batch_size // self.world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: int64 ``n``, a permutation of ``0 .. n-1``."""
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            gen = generator_for(self.seed, self.stream, epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def global_batch(self, step: int) -> torch.Tensor:
        """Indices of step ``step`` over all ranks: int64 ``batch_size``."""
        if step < 0:
            raise MatchnasError(f"step must be at least 0, got {step}")
        positions = step * self.batch_size + torch.arange(self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        out = torch.empty(self.batch_size, dtype=torch.int64)
        for epoch in torch.unique(epochs).tolist():
            mask = epochs == epoch
            out[mask] = self.permutation(epoch)[offsets[mask]]
        return out

    def batch(self, step: int) -> torch.Tensor:
        """This rank's indices of step ``step``: int64 ``local_batch_size``."""
        size = self.local_batch_size
        return self.global_batch(step)[self.rank * size : (self.rank + 1) * size]
