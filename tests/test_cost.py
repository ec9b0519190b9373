"""Cost models are pure functions of the config; they must agree exactly with the extracted module."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from matchnas import cost
from matchnas.convert import BACKBONES
from matchnas.nn import MBConv, Supernet
from matchnas.space_file import load_space


def _measured_flops(module: nn.Module, resolution: int, in_chans: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros(1, in_chans, resolution, resolution))
    return counter.get_total_flops()


def _measured_peak_activations(module: nn.Module, resolution: int, in_chans: int) -> int:
    """Peak live activations per image, measured from real tensor shapes with hooks, under the
    convention of :mod:`matchnas.cost` (a conv+BN+ReLU6 is one layer; residual input held)."""
    held, peak = [0], [0]

    def block_pre(block, args):
        held[0] = args[0].numel() if block.residual else 0
        block._first = block.conv_pw if block.conv_pw is not None else block.conv_dw

    def block_post(block, args, out):
        held[0] = 0

    def layer(owner):
        def hook(m, args, out):
            extra = 0 if (owner is not None and m is owner._first) else held[0]
            peak[0] = max(peak[0], args[0].numel() + out.numel() + extra)
        return hook

    for m in module.modules():
        if isinstance(m, MBConv):
            m.register_forward_pre_hook(block_pre)
            m.register_forward_hook(block_post)
            for conv in (m.conv_pw, m.conv_dw, m.conv_pwl):
                if conv is not None:
                    conv.register_forward_hook(layer(m))
    for m in (module.stem[0], module.head[0], module.pool, module.classifier):
        m.register_forward_hook(layer(None))
    with torch.no_grad():
        module(torch.zeros(1, in_chans, resolution, resolution))
    return peak[0]


@pytest.mark.parametrize("space_name, in_chans", [("tiny", 3), ("efficientnet-lite0", 3), ("efficientnet-lite0", 1)])
def test_costs_equal_the_extracted_module(space_name, in_chans, tiny_space):
    space = tiny_space if space_name == "tiny" else load_space(space_name)
    net = Supernet(space, num_classes=10, in_chans=in_chans, bn_eps=1e-3).eval()
    rng = np.random.default_rng(0)
    for config in [space.max(), space.min()] + [space.sample(rng) for _ in range(15)]:
        sub = net.extract(config).eval()
        assert cost.flops(space, config, 10, in_chans) == _measured_flops(sub, config.resolution, in_chans)
        assert cost.params(space, config, 10, in_chans) == sum(p.numel() for p in sub.parameters())
        peak = _measured_peak_activations(sub, config.resolution, in_chans)
        assert cost.peak_memory(space, config, 10, in_chans, batch_size=8) == peak * 8 * 4


def test_lite0_maxnet_at_224_has_the_published_size():
    """EfficientNet-Lite0: 4.65M parameters and ~385M multiply-adds at 224 px (1000 classes)."""
    space = load_space("efficientnet-lite0-224")
    kernels = [k for _, k, *_ in BACKBONES["efficientnet-lite0"].stages]
    stages = tuple(replace(s, kernel=(k,) * s.depth) for s, k in zip(space.max().stages, kernels))
    config = replace(space.max(), stages=stages)
    assert cost.params(space, config, 1000) == 4_652_008
    assert round(cost.flops(space, config, 1000) / 2e6) == 385


def test_costs_grow_with_the_config(tiny_space):
    lo, hi = tiny_space.min(), tiny_space.max()
    for fn in cost.COST_FUNCTIONS.values():
        assert fn(tiny_space, lo, 10) < fn(tiny_space, hi, 10)
