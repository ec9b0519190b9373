"""What a block is, as data: the space's activations (stem_act, each stage's act, head_act) reach
the supernet, extraction, the cost functions, the latency parts and the proxies."""

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from matchnas import cost
from matchnas.data import LITE_NORMALISATION
from matchnas.errors import MatchnasError
from matchnas.latency import Runner, config_parts, enumerate_parts
from matchnas.nn import Supernet
from matchnas.proxies import PROXIES, proxy_input
from matchnas.space_file import load_space, space_from_dict

from .conftest import TINY_SPACE, randomize_batch_norms

MIXED = {  # MobileNetV3's pattern: relu early, hard swish late and in the stem and head
    **TINY_SPACE,
    "stem_act": "hswish",
    "head_act": "hswish",
    "stages": [dict(stage, act=act) for stage, act in zip(TINY_SPACE["stages"], ["relu", "relu", "hswish"])],
}


@pytest.fixture
def mixed_supernet():
    space = space_from_dict(MIXED)
    torch.manual_seed(0)
    net = Supernet(space, num_classes=5, bn_eps=1e-3)
    randomize_batch_norms(net, torch.Generator().manual_seed(1))
    return net.eval()


def test_activations_are_read_from_the_space_and_round_trip():
    space = space_from_dict(MIXED)
    assert (space.stem_act, [s.act for s in space.stages], space.head_act) == ("hswish", ["relu", "relu", "hswish"], "hswish")
    assert space_from_dict(space.to_dict()) == space
    assert space.digest != space_from_dict(TINY_SPACE).digest


def test_the_default_activation_leaves_lite_spaces_and_their_digests_as_they_were():
    lite = load_space("efficientnet-lite0")
    explicit = {**lite.to_dict(), "stem_act": "relu6", "head_act": "relu6",
                "stages": [dict(s, act="relu6") for s in lite.to_dict()["stages"]]}  # fmt: skip
    assert "stem_act" not in lite.to_dict() and all("act" not in s for s in lite.to_dict()["stages"])
    assert space_from_dict(explicit).digest == lite.digest
    kinds = {type(m) for m in Supernet(lite, 10, bn_eps=1e-3).extract(lite.max()).modules()}
    assert nn.ReLU6 in kinds and not kinds & {nn.ReLU, nn.Hardswish}


@pytest.mark.parametrize("where, data", [
    ("stem_act", {**TINY_SPACE, "stem_act": "gelu"}),
    ("stages[1]: act", {**TINY_SPACE, "stages": [TINY_SPACE["stages"][0], dict(TINY_SPACE["stages"][1], act="swish"),
                                                 TINY_SPACE["stages"][2]]}),
])  # fmt: skip
def test_unknown_activation_is_a_one_line_error(where, data):
    with pytest.raises(MatchnasError, match=re.escape(f"{where} must be one of relu6, hswish, relu")):
        space_from_dict(data)


def test_extraction_equals_the_supernet_with_the_space_activations(mixed_supernet):
    space = mixed_supernet.space
    rng = np.random.default_rng(0)
    for config in [space.max(), space.min()] + [space.sample(rng) for _ in range(20)]:
        x = torch.randn(2, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(1))
        static = mixed_supernet.extract(config).eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), mixed_supernet(x, config), rtol=1e-5, atol=1e-5)
        assert isinstance(static.stem[2], nn.Hardswish) and isinstance(static.head[2], nn.Hardswish)
        stage_of_block = [i for i, s in enumerate(config.stages) for _ in range(s.depth)]
        expected = [{0: nn.ReLU, 1: nn.ReLU, 2: nn.Hardswish}[i] for i in stage_of_block]
        assert [type(b.act) for b in static.blocks] == expected


def test_flops_and_params_still_equal_the_counted_module(mixed_supernet):
    space = mixed_supernet.space
    rng = np.random.default_rng(1)
    for config in [space.max(), space.min()] + [space.sample(rng) for _ in range(5)]:
        static = mixed_supernet.extract(config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(torch.zeros(1, 3, config.resolution, config.resolution))
        assert cost.flops(space, config, 5) == counter.get_total_flops()
        assert cost.params(space, config, 5) == sum(p.numel() for p in static.parameters())


def test_latency_parts_carry_the_activation_and_time_it(mixed_supernet):
    space = mixed_supernet.space
    config = space.max()
    parts = config_parts(space, config, 5)
    assert set(parts) <= set(enumerate_parts(space, 5))
    assert parts[0].act == "hswish" and parts[-1].act == "hswish"
    assert [p.act for p in parts[1:-1]] == ["relu"] * (1 + config.stages[1].depth) + ["hswish"] * config.stages[2].depth
    block = next(p for p in parts if p.act == "hswish" and p.kind == "block")
    assert isinstance(block.module().act, nn.Hardswish) and "hswish" in str(block)


def test_onnx_runs_a_hard_swish_subnet_like_torch(mixed_supernet):
    config = mixed_supernet.space.sample(np.random.default_rng(5))
    static = mixed_supernet.extract(config).eval()
    runner = Runner(static, (2, 3, config.resolution, config.resolution), "onnxruntime")
    x = torch.randn(2, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = static(x).numpy()
    assert np.abs(runner.outputs(x.numpy()) - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_naswot_counts_hard_swish_units(mixed_supernet):
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inp = proxy_input(mixed_supernet, mixed_supernet.space.max(), images, seed=0, normalisation=LITE_NORMALISATION)
    assert np.isfinite(PROXIES["naswot"](inp))
