"""BN recalibration (docs/method.md, "BN recalibration"; OFA's ``set_running_statistics``).

Shared BN statistics belong to no single subnet, so before a subnet is evaluated, searched on,
exported or measured, its running statistics are reset and re-estimated on a few hundred training
images. Run it on the *extracted* subnet: the supernet's shared statistics stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Reset every BN's running mean/variance and set them to the average of the per-batch
    statistics over ``batches`` (a cumulative average, ``momentum=None``; equal-sized batches give
    the exact mean over all images). Other layers run in eval mode (no dropout). Returns ``module``
    in eval mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    module.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    for x in batches:
        module(x)
        seen += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    if seen == 0:
        raise ValueError("recalibrate_bn needs at least one batch")
    return module
