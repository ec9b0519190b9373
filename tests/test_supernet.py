import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from matchnas.errors import MatchnasError
from matchnas.nn import ElasticDepthwiseConv2d, StaticNet, Supernet
from matchnas.nn.blocks import ElasticMBConv, MBConv
from matchnas.nn.ops import same_pads

from matchnas.space_file import load_space, space_from_dict
from tests.conftest import TINY_SPACE, randomize_batch_norms


def _input(config, n=3, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, config.resolution, config.resolution, generator=g)


@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_extracted_equals_supernet_for_random_configs(padding):
    space = space_from_dict({**TINY_SPACE, "resolutions": [15, 16, 20], "padding": padding})
    torch.manual_seed(0)
    supernet = Supernet(space, num_classes=5, bn_eps=1e-3)
    randomize_batch_norms(supernet, torch.Generator().manual_seed(1))
    supernet.eval()
    rng = np.random.default_rng(0)
    configs = [space.max(), space.min()] + [space.sample(rng) for _ in range(60)]
    for config in configs:
        x = _input(config)
        with torch.no_grad():
            expected = supernet(x, config)
            got = supernet.extract(config).eval()(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "size, kernel, stride, pads",
    [(32, 3, 2, (0, 1)), (32, 5, 2, (1, 2)), (31, 3, 2, (1, 1)), (31, 5, 2, (2, 2)), (16, 3, 1, (1, 1)),
     (16, 5, 1, (2, 2)), (2, 5, 2, (1, 2)), (1, 3, 2, (1, 1))],
)
def test_same_padding_is_tensorflows(size, kernel, stride, pads):
    assert same_pads(size, kernel, stride) == pads


def test_extracted_equals_supernet_on_lite0_space():
    space = load_space("efficientnet-lite0")  # TensorFlow "same" padding at 24, 28 and 32 px
    assert space.padding == "same"
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10, bn_eps=1e-3)
    randomize_batch_norms(net, torch.Generator().manual_seed(0))
    net.eval()
    rng = np.random.default_rng(1)
    sampled = [dataclasses.replace(space.sample(rng), resolution=r) for r in space.resolutions for _ in range(3)]
    for config in [space.max(), space.min()] + sampled:
        x = _input(config, n=2)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(config)(x), net(x, config), rtol=1e-5, atol=1e-5)


def test_extracted_module_has_no_weight_sharing_code(tiny_supernet, tiny_space):
    net = tiny_supernet.extract(tiny_space.max())
    assert isinstance(net, StaticNet)
    allowed = (StaticNet, MBConv, nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU6, nn.Linear, nn.Dropout,
               nn.AdaptiveAvgPool2d)
    assert all(isinstance(m, allowed) for m in net.modules())


def test_extracted_weights_are_copies(tiny_supernet, tiny_space):
    config = tiny_space.max()
    net = tiny_supernet.extract(config)
    x = _input(config)
    with torch.no_grad():
        before = tiny_supernet(x, config)
        for p in net.parameters():
            p.add_(1.0)
        torch.testing.assert_close(tiny_supernet(x, config), before)


def test_channels_last_gives_the_same_output(tiny_supernet, tiny_space):
    config = tiny_space.sample(np.random.default_rng(5))
    x = _input(config)
    with torch.no_grad():
        expected = tiny_supernet(x, config)
        net = tiny_supernet.to(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last), config)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_the_active_slice(tiny_space):
    net = Supernet(tiny_space, num_classes=5, bn_eps=1e-3).train()
    config = tiny_space.min()
    net(_input(config), config).sum().backward()
    block = net.stages[1][0]
    assert block.conv_pw.weight.grad[:, tiny_space.min().stages[0].width:].abs().sum() == 0
    assert block.conv_pw.weight.grad[: 2 * 4].abs().sum() > 0
    assert net.stages[1][1].conv_pw.weight.grad is None  # inactive block


def test_kernel_transform_starts_as_centre_crop():
    conv = ElasticDepthwiseConv2d(6, (3, 5, 7))
    assert torch.equal(conv.kernel(6, 7), conv.weight)
    assert torch.allclose(conv.kernel(4, 5), conv.weight[:4, :, 1:6, 1:6])
    assert torch.allclose(conv.kernel(4, 3), conv.weight[:4, :, 2:5, 2:5])


def test_block_static_matches_elastic():
    torch.manual_seed(0)
    block = ElasticMBConv(8, 8, 6, (3, 5), 1, residual=True, bn_eps=1e-3, bn_momentum=0.1).eval()
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(block.static(6, 3, 4, 6).eval()(x), block(x, 3, 4, 6))


def test_bad_inputs_are_refused(tiny_supernet, tiny_space):
    config = tiny_space.max()
    with pytest.raises(MatchnasError, match="resolution"):
        tiny_supernet(_input(tiny_space.min()), config)
    outside = config.__class__(resolution=64, stages=config.stages)
    with pytest.raises(MatchnasError, match="resolution 64"):
        tiny_supernet.extract(outside)
