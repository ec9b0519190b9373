"""Zero-cost proxies: score a subnet with the trained supernet's weights, without training.

MatchNAS (docs/method.md, "Choosing subnets after training", zero-shot search) ranks the candidates
that meet a budget by a proxy computed on one batch of **unlabelled** images. Every proxy is one
function of a :class:`ProxyInput`, found by name in one registry (:data:`PROXIES`,
:func:`get_proxy`); the list of proxies follows the survey (Li et al. 2023, "Zero-Shot Neural
Architecture Search: Challenges, Solutions, and Opportunities", arXiv 2307.01998) and each
definition the original paper cited in its docstring.

Shared conventions:
- The caller's ``net`` is never modified: a proxy that runs the network works on a deep copy
  (weights, BN statistics, train/eval mode, ``requires_grad`` and ``.grad`` stay as they were).
- The copy runs in **eval mode** (the caller's recalibrated BN statistics, no dropout) unless a
  docstring says otherwise (Zen-score uses batch statistics, as its paper defines).
- The data are unlabelled: the label-needing proxies (grad_norm, snip, grasp, fisher, zico) use
  the network's own argmax predictions as labels and the mean cross-entropy over the batch.
- "Layers" means every ``nn.Conv2d`` and ``nn.Linear`` (Abdelfattah et al.'s ``mode='param'``).
- A proxy returns a finite Python float or raises :class:`MatchnasError`; the same inputs and
  ``seed`` give the same score.

What a proxy sees, :class:`ProxyInput`, and how a search makes one, :func:`proxy_input`, live in
:mod:`matchnas.proxy_input`. The gradient proxies (grad_norm, snip, grasp, fisher, zico,
jacob_cov) live in :mod:`matchnas.proxies_grad` and are registered here; params, flops, naswot,
synflow and zen are defined here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from matchnas import cost, proxies_grad
from matchnas.errors import MatchnasError
from matchnas.proxies_grad import autograd_on, eval_copy, model_ready, weight_layers
from matchnas.proxy_input import ProxyInput, proxy_input

ZEN_ALPHA = 0.01  # Zen-NAS perturbation scale (Lin et al. 2021)
_LOG_FLOOR = 1e-300  # log() of anything smaller is taken at this floor instead of -inf


class Proxy(Protocol):
    """A zero-cost proxy: ``proxy(inp)`` is a finite float; ``higher_is_better`` says its sign."""

    name: str
    higher_is_better: bool

    def __call__(self, inp: ProxyInput) -> float: ...


@dataclass(frozen=True)
class FunctionProxy:
    """A proxy made from a plain function; checks that the result is a finite float."""

    name: str
    higher_is_better: bool
    fn: Callable[[ProxyInput], float]

    def __call__(self, inp: ProxyInput) -> float:
        value = float(self.fn(inp))
        if not math.isfinite(value):
            raise MatchnasError(f"proxy {self.name!r} gave {value} for config {inp.config.id}")
        return value


PROXIES: dict[str, Proxy] = {}


def add_proxy(proxy: Proxy) -> Proxy:
    """Register an object that implements :class:`Proxy`; a name already taken is an error."""
    if proxy.name in PROXIES:
        raise MatchnasError(f"a zero-cost proxy named {proxy.name!r} is already registered")
    if not isinstance(proxy.higher_is_better, bool):
        raise MatchnasError(f"proxy {proxy.name!r}: higher_is_better must be True or False")
    PROXIES[proxy.name] = proxy
    return proxy


def register_proxy(name: str, *, higher_is_better: bool) -> Callable[[Callable[[ProxyInput], float]], Proxy]:
    """Decorator: ``@register_proxy("snip", higher_is_better=True)`` on ``fn(inp) -> float``
    registers it and replaces it by its :class:`FunctionProxy`."""

    def wrap(fn: Callable[[ProxyInput], float]) -> Proxy:
        return add_proxy(FunctionProxy(name, higher_is_better, fn))

    return wrap


def get_proxy(name: str) -> Proxy:
    """The registered proxy called ``name``."""
    try:
        return PROXIES[name]
    except KeyError:
        raise MatchnasError(f"unknown zero-cost proxy {name!r}; known: {', '.join(sorted(PROXIES))}") from None


def score_all(inp: ProxyInput, names: Iterable[str] | None = None) -> dict[str, float]:
    """``{name: score}`` for ``names`` (default: every registered proxy, in registration order)."""
    names = list(PROXIES) if names is None else list(names)
    proxies = [get_proxy(n) for n in names]  # unknown names fail before any work is done
    return {p.name: p(inp) for p in proxies}


# ---------------------------------------------------------------------------- helpers


def _safe_log(x: float) -> float:
    return math.log(max(float(x), _LOG_FLOOR))


# ---------------------------------------------------------------------------- cost models


@register_proxy("params", higher_is_better=True)
def params(inp: ProxyInput) -> float:
    """Number of parameters of the subnet, :func:`matchnas.cost.params` (survey, "#Params").
    Larger is better. No network run; BN/ReLU6 play no role."""
    return float(cost.params(inp.space, inp.config, inp.num_classes, in_chans=inp.images.shape[1]))


@register_proxy("flops", higher_is_better=True)
def flops(inp: ProxyInput) -> float:
    """Forward FLOPs for one image (2 per multiply-add), :func:`matchnas.cost.flops` (survey,
    "FLOPs"). Larger is better. No network run; BN/ReLU6 play no role."""
    return float(cost.flops(inp.space, inp.config, inp.num_classes, in_chans=inp.images.shape[1]))


# ---------------------------------------------------------------------------- gradient proxies

for _name, _fn in (
    ("grad_norm", proxies_grad.grad_norm),
    ("snip", proxies_grad.snip),
    ("grasp", proxies_grad.grasp),
    ("fisher", proxies_grad.fisher),
    ("zico", proxies_grad.zico),
    ("jacob_cov", proxies_grad.jacob_cov),
):
    register_proxy(_name, higher_is_better=True)(_fn)
del _name, _fn


# ---------------------------------------------------------------------------- activations and data-free scores


def _active_code(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Hardtanh):  # ReLU6 = Hardtanh(0, 6): on its identity piece
        return (x > module.min_val) & (x < module.max_val)
    return x > 0


@register_proxy("naswot", higher_is_better=True)
def naswot(inp: ProxyInput) -> float:
    """``log det(K_H + I)``, ``K_H[i, j]`` the number of ReLU6 units (every call of every
    ``nn.ReLU``/``nn.ReLU6``) whose binary codes agree on images ``i`` and ``j`` (Mellor et al.
    2021, "Neural Architecture Search without Training", via ``slogdet``). ReLU6 code: ``0 < x < 6``, the unit
    lies on its identity piece (it passes its input and its gradient); plain ReLU and hard swish
    (a space's ``act: hswish``, MobileNetV3): ``x > 0``, the ReLU it smooths.
    The ridge ``I`` (one unit's worth, next to entries of size ~units) keeps the score finite
    when images share a pattern: ``N`` identical images give exactly ``log(N * units + 1)``.
    Larger is better. Eval mode (recalibrated BN)."""
    net, x, _ = eval_copy(inp, False)
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)
    units = [0]

    def hook(module, args):  # a pre-hook: an in-place activation would overwrite its input
        signs = _active_code(module, args[0]).flatten(1).to(torch.float32) * 2 - 1
        # agreements = (units + s s^T) / 2 with s = ±1; fp32 sums of ±1 are exact while a layer
        # has fewer than 2^24 units per image (Lite0 at 224 px has at most ~1.2M)
        kernel.add_((signs @ signs.T).double().cpu())
        units[0] += signs.shape[1]

    activations = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish))]
    handles = [m.register_forward_pre_hook(hook) for m in activations]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    if units[0] == 0:
        raise MatchnasError("naswot needs ReLU, ReLU6 or hard-swish modules in the network; found none")
    kernel = (kernel + units[0]) / 2 + torch.eye(n, dtype=torch.float64)
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign.item() <= 0 or not math.isfinite(logdet.item()):
        raise MatchnasError(f"naswot: the activation kernel is not positive definite (sign {sign.item()})")
    return logdet.item()


class _ChannelScale(nn.Module):
    """Multiplies channel ``c`` by ``scale[c]``: the linear part of an eval-mode BN."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


def _linearise(net: nn.Module) -> None:
    """In place: ReLU/ReLU6 -> identity, BN -> its gain ``|γ| / sqrt(running_var + eps)``, all
    weights -> ``|W|``, biases -> 0. What remains is linear with non-negative coefficients."""
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.Hardtanh)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.modules.batchnorm._BatchNorm):
                var = child.running_var
                var = torch.ones(child.num_features, dtype=torch.float64) if var is None else var
                gamma = child.weight.detach().abs() if child.weight is not None else torch.ones_like(var)
                setattr(parent, child_name, _ChannelScale((gamma / torch.sqrt(var + child.eps)).to(var)))
    with torch.no_grad():
        for m in weight_layers(net):
            m.weight.abs_()
            if m.bias is not None:
                m.bias.zero_()


@register_proxy("synflow", higher_is_better=True)
def synflow(inp: ProxyInput) -> float:
    """``log sum |W ⊙ dR/dW|`` over all layer weights, ``R = 1^T f_|W|(1)`` the summed output of
    the network with absolute weights on an all-ones input (Tanaka et al. 2020; Abdelfattah et
    al. 2021). Data-free: the images only give the input shape. Larger is better.
    BN: the original removes it (untrained nets); with trained weights a conv's scale only
    means something together with its BN, so each BN becomes its eval-mode gain
    ``|γ|/sqrt(var+eps)`` (recalibrated statistics) and its shift is dropped. ReLU6 becomes the
    identity: on the all-positive signal ReLU is the identity, while ReLU6 would clip at 6 and
    zero every gradient behind it. Biases are zeroed, so the network is linear and positively
    homogeneous: it runs in float64 and the signal is divided by its maximum after the stem,
    every block and the head, with the logs of the divisors added back (exact, since
    ``R`` and every ``dR/dW`` scale with the same constant) -- no overflow at any depth."""
    log_scale = [0.0]

    def rescale(module, args, out):
        s = out.detach().abs().amax().clamp_min(_LOG_FLOOR)
        log_scale[0] += math.log(s.item())
        return out / s

    with autograd_on():
        net = copy.deepcopy(inp.net).eval().double()
        for p in net.parameters():
            p.requires_grad_(False)
            p.grad = None
        _linearise(net)
        weights = [m.weight for m in weight_layers(net)]
        for w in weights:
            w.requires_grad_(True)
        points = [getattr(net, n) for n in ("stem", "head") if isinstance(getattr(net, n, None), nn.Module)]
        if isinstance(getattr(net, "blocks", None), nn.Sequential):
            points += list(net.blocks.children())
        for m in points:
            m.register_forward_hook(rescale)
        ones = torch.ones((1, *inp.images.shape[1:]), dtype=torch.float64, device=inp.images.device)
        grads = torch.autograd.grad(net(ones).sum(), weights, allow_unused=True)
    total = sum((w.detach() * g).sum().item() for w, g in zip(weights, grads) if g is not None)
    return _safe_log(total) + log_scale[0]


@register_proxy("zen", higher_is_better=True)
def zen(inp: ProxyInput) -> float:
    """``log E_n ||f(x_n) - f(x_n + α ε_n)||_F + sum_i log sqrt(mean_c σ²_ic)`` (Lin et al. 2021,
    "Zen-NAS", the Zen-score): ``f`` the pre-GAP feature map (the input of the last
    ``nn.AdaptiveAvgPool2d``), ``x, ε ~ N(0, I)`` of the images' shape drawn from ``seed``,
    ``α = 0.01``, ``σ²_ic`` the batch variance of BN ``i``'s input channel ``c`` on ``x``. BN
    runs in train mode (batch statistics), as the paper defines; the trained weights are kept
    (the paper re-draws them Gaussian). The paper's norm is Frobenius (their code sums absolute
    values). Data-free: the images give only the shape. Larger is better. ReLU6 as is."""
    net = copy.deepcopy(inp.net).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise MatchnasError("zen needs the pre-GAP features: no nn.AdaptiveAvgPool2d in the network")
    for m in norms:
        m.train()
    gen = torch.Generator().manual_seed(inp.seed)  # drawn on the CPU: the same numbers on any device
    x = model_ready(torch.randn(inp.images.shape, generator=gen).to(inp.images.device), net)
    eps = model_ready(torch.randn(inp.images.shape, generator=gen).to(inp.images.device), net)
    features, variances = [], []
    hooks = [pools[-1].register_forward_pre_hook(lambda m, args: features.append(args[0]))]
    hooks += [m.register_forward_pre_hook(lambda m, args: variances.append(_batch_var(args[0]))) for m in norms]
    with torch.no_grad():
        net(x)
        for h in hooks[1:]:
            h.remove()
        net(x + ZEN_ALPHA * eps)
    hooks[0].remove()
    diff = (features[0].double() - features[1].double()).flatten(1).norm(dim=1).mean().item()
    return _safe_log(diff) + sum(0.5 * _safe_log(v) for v in variances)


def _batch_var(x: torch.Tensor) -> float:
    """Mean over channels of the batch variance per channel (what train-mode BN divides by)."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.double().var(dim=dims, unbiased=False).mean().item()


__all__ = [
    "PROXIES",
    "FunctionProxy",
    "Proxy",
    "ProxyInput",
    "add_proxy",
    "get_proxy",
    "proxy_input",
    "register_proxy",
    "score_all",
]
