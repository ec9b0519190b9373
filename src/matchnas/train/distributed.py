"""Training beyond one process: torchrun, devices, gradient synchronisation.

Launch with ``torchrun --nproc_per_node N -m matchnas train ...``. Every rank samples the same
subnets and draws the same augmented global batch from ``(seed, step)`` and trains on its slice of
it, so a run's data does not depend on the number of ranks (and resume works with any number).
Gradients are averaged across ranks once per step, after the whole sandwich has run backward
(the ranks never talk during the sandwich's earlier backward passes). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from matchnas import devices
from matchnas.errors import MatchnasError


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU; ``cuda`` uses GPU ``local_rank``."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise MatchnasError("train.device=cuda but no CUDA GPU is visible")
        torch.cuda.set_device(local_rank)
        devices.prepare("cuda")
        return torch.device("cuda", local_rank)
    if preference == "mps":
        if not torch.backends.mps.is_available():
            raise MatchnasError("train.device=mps but MPS is not available")
        return torch.device("mps")
    if preference == "cpu":
        return torch.device("cpu")
    raise MatchnasError(f"train.device must be auto, cpu, cuda or mps, got '{preference}'")


def setup(preference: str = "auto") -> Placement:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): NCCL on CUDA,
    gloo otherwise. A plain ``python -m matchnas`` is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world_size == 1:
        return Placement(0, 1, device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Placement(dist.get_rank(), dist.get_world_size(), device)


def teardown(placement: Placement) -> None:
    """Leave the process group (no barrier: a rank that failed must not hang the others here)."""
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


def check_replicas(model: torch.nn.Module, placement: Placement) -> None:
    """Raise if the ranks' parameters differ: a float64 checksum per rank, gathered (on the
    ranks' device: NCCL, the backend on GPUs, reduces only CUDA tensors)."""
    if not placement.distributed:
        return
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = [torch.zeros_like(checksum) for _ in range(placement.world_size)]
    dist.all_gather(sums, checksum)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise MatchnasError(f"ranks hold different weights (checksums {[float(s) for s in sums]})")


def synchronize_batch_norms(model: torch.nn.Module, placement: Placement) -> None:
    """Make every batch norm compute its training statistics over all ranks (SyncBatchNorm)."""
    from matchnas.nn import ElasticBatchNorm2d

    if placement.distributed:
        for m in model.modules():
            if isinstance(m, ElasticBatchNorm2d):
                m.synchronized = True


def average_gradients(model: torch.nn.Module, placement: Placement) -> None:
    """Average the accumulated gradients over ranks in one all-reduce. Parameters no subnet of
    the step used have no gradient on any rank (every rank trained the same subnets) and stay
    without one, exactly as in a one-process run."""
    if not placement.distributed:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= placement.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_metrics(metrics: dict[str, float], placement: Placement) -> dict[str, float]:
    """The mean of each metric over ranks (every rank must report the same keys)."""
    if not placement.distributed:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=placement.device)
    dist.all_reduce(values)
    return {k: float(v) / placement.world_size for k, v in zip(keys, values)}


def any_rank(flag: bool, placement: Placement) -> bool:
    """True on every rank when ``flag`` is true on one of them (one all-reduce of one number), so
    that all ranks stop at the same step."""
    if not placement.distributed:
        return flag
    value = torch.tensor([float(flag)], device=placement.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard(batch: torch.Tensor, placement: Placement) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (sizes must divide evenly)."""
    if not placement.distributed:
        return batch
    size = batch.shape[0] // placement.world_size
    return batch[placement.rank * size : (placement.rank + 1) * size]
