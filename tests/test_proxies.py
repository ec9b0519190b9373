"""Zero-cost proxies: finite, deterministic, side-effect free, and true to their definitions."""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from matchnas import cost
from matchnas.convert import from_pretrained
from matchnas.errors import MatchnasError
from matchnas.nn import recalibrate_bn
from matchnas.proxies import PROXIES, FunctionProxy, ProxyInput, add_proxy, get_proxy, register_proxy, score_all
from matchnas.space_file import load_space

NAMES = list(PROXIES)
DIRECTIONS = {  # grasp: Abdelfattah et al.'s sum(-W * Hg), larger taken as better
    "params": True,
    "flops": True,
    "grad_norm": True,
    "snip": True,
    "grasp": True,
    "fisher": True,
    "jacob_cov": True,
    "naswot": True,
    "synflow": True,
    "zen": True,
    "zico": True,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one thread is as fast, and far faster when the two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def _input(supernet, config, n=8, seed=0) -> ProxyInput:
    net = supernet.extract(config)
    images = _images(n, config.resolution, seed)
    recalibrate_bn(net, [images])
    return ProxyInput(net, images, supernet.space, config, supernet.num_classes)


@pytest.fixture(scope="module")
def lite0_input() -> ProxyInput:
    supernet = from_pretrained("efficientnet-lite0", num_classes=10)
    config = replace(supernet.space.sample(np.random.default_rng(3)), resolution=24)
    return _input(supernet, config, n=16)


def _snapshot(net: nn.Module):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [m.training for m in net.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in net.parameters()],
    )


# ------------------------------------------------------------------ every registry entry


@pytest.mark.parametrize("which", ["tiny_max", "tiny_min", "lite0"])
@pytest.mark.parametrize("name", NAMES)
def test_returns_finite_float(name, which, tiny_supernet, request):
    if which == "lite0":
        inp = request.getfixturevalue("lite0_input")
    else:
        space = tiny_supernet.space
        inp = _input(tiny_supernet, space.max() if which == "tiny_max" else space.min())
    value = get_proxy(name)(inp)
    assert isinstance(value, float) and math.isfinite(value)


@pytest.mark.parametrize("name", NAMES)
def test_is_deterministic(name, tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.sample(np.random.default_rng(1)))
    assert get_proxy(name)(inp) == get_proxy(name)(inp)
    again = ProxyInput(copy.deepcopy(inp.net), inp.images.clone(), inp.space, inp.config, inp.num_classes)
    assert get_proxy(name)(again) == get_proxy(name)(inp)


@pytest.mark.parametrize("name", NAMES)
def test_leaves_net_unchanged(name, tiny_supernet):
    """Weights, BN statistics, train/eval modes, requires_grad, .grad and the global RNG survive,
    also when the caller has a net in train mode, frozen parameters, and grad or autograd off."""
    inp = _input(tiny_supernet, tiny_supernet.space.max())
    inp.net.train()
    inp.net.blocks[0].eval()
    for p in inp.net.stem.parameters():
        p.requires_grad_(False)
    inp.net.classifier.weight.grad = torch.ones_like(inp.net.classifier.weight)
    before, rng_state = _snapshot(inp.net), torch.get_rng_state()
    with torch.no_grad():
        get_proxy(name)(inp)
    with torch.inference_mode():
        get_proxy(name)(inp)
    after = _snapshot(inp.net)
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1]
    assert [r for r, _ in before[2]] == [r for r, _ in after[2]]
    assert all((a is None and b is None) or torch.equal(a, b) for (_, a), (_, b) in zip(before[2], after[2]))
    assert torch.equal(rng_state, torch.get_rng_state())


# ------------------------------------------------------------------ registry


def test_every_proxy_declares_its_direction():
    assert {name: p.higher_is_better for name, p in PROXIES.items()} == DIRECTIONS
    assert all(p.name == name for name, p in PROXIES.items())


def test_duplicate_name_raises():
    before = dict(PROXIES)
    with pytest.raises(MatchnasError, match="already registered"):
        register_proxy("synflow", higher_is_better=False)(lambda inp: 0.0)
    assert PROXIES == before


def test_a_class_can_implement_the_protocol(tiny_supernet):
    class Depth:
        name = "test_depth"
        higher_is_better = True

        def __call__(self, inp):
            return float(sum(stage.depth for stage in inp.config.stages))

    add_proxy(Depth())
    try:
        inp = _input(tiny_supernet, tiny_supernet.space.max())
        assert get_proxy("test_depth")(inp) == 6.0
        assert score_all(inp, ["test_depth"]) == {"test_depth": 6.0}
    finally:
        del PROXIES["test_depth"]


def test_a_non_finite_score_raises_instead_of_returning(tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.min())
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(MatchnasError, match="gave"):
            FunctionProxy("bad", True, lambda inp, bad=bad: bad)(inp)


def test_unknown_name_error_lists_known_names():
    with pytest.raises(MatchnasError) as err:
        get_proxy("synflo")
    assert all(name in str(err.value) for name in NAMES)


def test_score_all_matches_each_proxy(tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.min())
    scores = score_all(inp, ["params", "naswot", "zen"])
    assert scores == {n: get_proxy(n)(inp) for n in ["params", "naswot", "zen"]}
    assert list(score_all(inp)) == NAMES
    with pytest.raises(MatchnasError, match="unknown zero-cost proxy"):
        score_all(inp, ["params", "nope"])


def test_input_is_checked(tiny_supernet):
    config = tiny_supernet.space.max()
    net = tiny_supernet.extract(config)
    with pytest.raises(MatchnasError, match="pixels"):
        ProxyInput(net, _images(4, config.resolution + 1), tiny_supernet.space, config, 5)
    with pytest.raises(MatchnasError, match="at least 2"):
        ProxyInput(net, _images(1, config.resolution), tiny_supernet.space, config, 5)


# ------------------------------------------------------------------ definitions


@pytest.mark.parametrize("space_name", ["tiny", "efficientnet-lite0"])
def test_params_and_flops_equal_cost_model(space_name, tiny_space, tiny_supernet, lite0_input):
    if space_name == "tiny":
        space, inps = tiny_space, [_input(tiny_supernet, c) for c in (tiny_space.max(), tiny_space.min())]
    else:
        space, inps = load_space(space_name), [lite0_input]
    for inp in inps:
        assert get_proxy("params")(inp) == cost.params(space, inp.config, inp.num_classes)
        assert get_proxy("flops")(inp) == cost.flops(space, inp.config, inp.num_classes)
        assert get_proxy("params")(inp) == sum(p.numel() for p in inp.net.parameters())


def test_params_and_flops_rank_max_above_min(tiny_supernet):
    big, small = (_input(tiny_supernet, c) for c in (tiny_supernet.space.max(), tiny_supernet.space.min()))
    for name in ("params", "flops"):
        assert get_proxy(name)(big) > get_proxy(name)(small)


def _naive_synflow(net: nn.Module, resolution: int, dtype: torch.dtype) -> float:
    """sum |W * dR/dW| computed directly, without rescaling or logs: abs weights, no biases,
    identity activations, each BN as its gain |γ|/sqrt(var+eps) (mean and shift set to 0)."""
    net = copy.deepcopy(net).to(dtype).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.abs_(), m.bias.zero_(), m.running_mean.zero_()
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.zero_()
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = torch.autograd.grad(net(torch.ones(1, 3, resolution, resolution, dtype=dtype)).sum(), weights)
    return sum((w * g).sum().item() for w, g in zip(weights, grads))


def test_synflow_is_the_log_of_the_direct_sum(tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.max())
    direct = _naive_synflow(inp.net, inp.config.resolution, torch.float64)
    assert math.isfinite(direct) and direct > 0
    assert get_proxy("synflow")(inp) == pytest.approx(math.log(direct), rel=1e-9)


def test_synflow_does_not_overflow_where_fp32_does(tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.max())
    with torch.no_grad():  # every BN gain x1e4: ~20 BNs on a path make a 1e80 signal
        for m in inp.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(1e4)
    assert not math.isfinite(_naive_synflow(inp.net, inp.config.resolution, torch.float32))
    direct64 = _naive_synflow(inp.net, inp.config.resolution, torch.float64)
    assert get_proxy("synflow")(inp) == pytest.approx(math.log(direct64), rel=1e-9)
    with torch.no_grad():  # and x1e24 per BN overflows float64 too; log space does not care
        for m in inp.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(1e20)
    assert not math.isfinite(_naive_synflow(inp.net, inp.config.resolution, torch.float64))
    assert math.isfinite(get_proxy("synflow")(inp)) and get_proxy("synflow")(inp) > math.log(direct64) + 100


def _relu6_units(net: nn.Module, resolution: int) -> int:
    units = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: units.append(a[0][0].numel()))
        for m in net.modules()
        if isinstance(m, nn.ReLU6)
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, resolution, resolution))
    for h in hooks:
        h.remove()
    return sum(units)


def test_naswot_identical_images_give_a_rank_one_kernel(tiny_supernet):
    """N copies of one image agree on every unit: K_H = units * 11^T, log det(K_H + I) =
    log(N * units + 1); distinct images have far less correlated codes and score higher."""
    distinct = _input(tiny_supernet, tiny_supernet.space.max(), n=8)
    r = distinct.config.resolution
    same = replace(distinct, images=distinct.images[:1].expand(8, 3, r, r).clone())
    units = _relu6_units(distinct.net, r)
    assert get_proxy("naswot")(same) == pytest.approx(math.log(8 * units + 1), rel=1e-12)
    assert get_proxy("naswot")(distinct) > get_proxy("naswot")(same) + 8


def test_jacob_cov_penalises_identical_jacobians(tiny_supernet):
    distinct = _input(tiny_supernet, tiny_supernet.space.max(), n=8)
    r = distinct.config.resolution
    same = replace(distinct, images=distinct.images[:1].expand(8, 3, r, r).clone())
    k = 1e-5  # one eigenvalue 8, seven 0: -(log(8+k) + 1/(8+k) + 7 (log k + 1/k))
    expected = -(math.log(8 + k) + 1 / (8 + k) + 7 * (math.log(k) + 1 / k))
    assert get_proxy("jacob_cov")(same) == pytest.approx(expected, rel=1e-6)
    assert get_proxy("jacob_cov")(distinct) > expected


def test_zen_depends_on_the_seed_only_through_its_gaussian_draws(tiny_supernet):
    inp = _input(tiny_supernet, tiny_supernet.space.max())
    other_images = replace(inp, images=_images(8, inp.config.resolution, seed=5))
    assert get_proxy("zen")(other_images) == get_proxy("zen")(inp)  # data-free
    assert get_proxy("zen")(replace(inp, seed=1)) != get_proxy("zen")(inp)
