"""What a zero-cost proxy sees (:class:`ProxyInput`) and how a search makes one (:func:`proxy_input`).

Its own module, below both :mod:`matchnas.proxies` (the registry and the activation-based
proxies) and :mod:`matchnas.proxies_grad` (the gradient proxies), so that each proxy module names
the input type without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from matchnas.data import Normalisation
from matchnas.errors import MatchnasError
from matchnas.nn import recalibrate_bn
from matchnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True, eq=False)
class ProxyInput:
    """What a proxy sees.

    Attributes:
        net: the extracted subnet (:class:`matchnas.nn.StaticNet`), BN already recalibrated.
        images: float ``(N, C, R, R)``, model-ready (normalised), ``R == config.resolution``,
            ``N >= 2``; unlabelled.
        space, config, num_classes: what the cost-model proxies need.
        seed: for proxies that draw random numbers (Zen-score).
    """

    net: nn.Module
    images: torch.Tensor
    space: SearchSpace
    config: SubnetConfig
    num_classes: int
    seed: int = 0

    def __post_init__(self):
        self.space.validate(self.config)
        x = self.images
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise MatchnasError(f"proxy images must be a float N x C x R x R tensor, got {_describe(x)}")
        r = self.config.resolution
        if tuple(x.shape[-2:]) != (r, r):
            raise MatchnasError(f"proxy images are {tuple(x.shape[-2:])} pixels but config {self.config.id} has {r}")
        if x.shape[0] < 2:
            raise MatchnasError(f"proxies need at least 2 images, got {x.shape[0]}")


def proxy_input(supernet, config: SubnetConfig, images: torch.Tensor, seed: int,
                normalisation: Normalisation) -> ProxyInput:
    """What a search hands a proxy: subnet ``config`` extracted with the supernet's (trained or
    pre-trained) weights, in channels-last memory format (2-3x faster here), its BN statistics
    re-estimated on the proxy batch itself; ``images`` are uint8 unlabelled images, normalised
    as the run's backbone wants (``normalisation``: :attr:`matchnas.run.Run.normalisation`, or the
    backbone's :attr:`~matchnas.backbones.Backbone.normalisation`)."""
    if not isinstance(normalisation, Normalisation):
        raise MatchnasError("a proxy's input needs the run's (or the backbone's) input normalisation, and none was given")
    x = normalisation(images, size=config.resolution).contiguous(memory_format=torch.channels_last)
    net = recalibrate_bn(supernet.extract(config).to(memory_format=torch.channels_last), [x])
    return ProxyInput(net, x, supernet.space, config, supernet.num_classes, seed)


def _describe(x) -> str:
    return f"{type(x).__name__} {tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
