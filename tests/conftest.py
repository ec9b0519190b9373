"""Shared fixtures: a tiny search space and supernet that build in milliseconds on CPU."""

import numpy as np
import pytest
import torch

from matchnas.nn import Supernet
from matchnas.space import SearchSpace
from matchnas.space_file import space_from_dict

TINY_SPACE = {
    "name": "tiny",
    "backbone": "none",
    "resolutions": [16, 20],
    "stem_width": 8,
    "head_width": 32,
    "stages": [
        {"stride": 1, "depth": [1], "width": [4, 8], "kernel": [3, 5], "expand": [1]},
        {"stride": 2, "depth": [1, 2, 3], "width": [8, 12], "kernel": [[3, 5], [3, 5, 7], [3]], "expand": [2, 4]},
        {"stride": 2, "depth": [1, 2], "width": [12, 16], "kernel": [3, 5], "expand": [3, 6], "per_block": False},
    ],
}


def randomize_batch_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine parameters, so equality tests can fail."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.normal_(1, 0.3, generator=generator)
                m.bias.normal_(0, 0.3, generator=generator)
            if isinstance(m, torch.nn.ParameterDict):  # kernel transforms: move away from identity
                for p in m.values():
                    p.add_(0.1 * torch.randn(p.shape, generator=generator))


@pytest.fixture
def tiny_space() -> SearchSpace:
    return space_from_dict(TINY_SPACE)


@pytest.fixture
def tiny_supernet(tiny_space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(tiny_space, num_classes=5, bn_eps=1e-3)
    randomize_batch_norms(net, torch.Generator().manual_seed(1))
    return net.eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
