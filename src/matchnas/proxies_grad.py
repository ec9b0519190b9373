"""The gradient proxies of :mod:`matchnas.proxies` (grad_norm, snip, grasp, fisher, zico,
jacob_cov) and the network copy every network-running proxy works on.

Registered in :mod:`matchnas.proxies` (import that module, not this one); the conventions there
apply: eval mode, self-labelled cross-entropy, "layers" = every ``nn.Conv2d`` and ``nn.Linear``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from matchnas.proxy_input import ProxyInput

ZICO_BATCHES = 4  # mini-batches the images are split into for ZiCo's mean/std over batches
JACOB_COV_K = 1e-5  # Mellor et al. (v1) eigenvalue offset


@contextmanager
def autograd_on() -> Iterator[None]:
    """Gradients on, also when the caller runs under ``torch.no_grad()`` or ``inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` of ``net``: the layers a saliency score sums over."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def eval_copy(inp: ProxyInput, weights_require_grad: bool) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
    """An eval-mode deep copy of the net in which only the layer weights require grad (the
    caller's flags may be anything), the images in its dtype, and the layer weights.

    Both are channels-last: oneDNN's depthwise convolutions run ~3-4x faster that way on CPU."""
    net = copy.deepcopy(inp.net).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    weights = [m.weight for m in weight_layers(net)]
    for w in weights:
        w.requires_grad_(weights_require_grad)
    return net, model_ready(inp.images, net), weights


def model_ready(images: torch.Tensor, net: nn.Module) -> torch.Tensor:
    """A channels-last copy of ``images`` in ``net``'s dtype."""
    dtype = next(net.parameters()).dtype
    # a copy: the caller's images may be inference-mode tensors, which autograd refuses to save
    return images.detach().to(dtype).clone(memory_format=torch.channels_last)


def _self_labelled_loss(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against the network's own argmax predictions (the data are unlabelled)."""
    logits = net(images)
    return F.cross_entropy(logits, logits.detach().argmax(dim=1))


def grad_norm(inp: ProxyInput) -> float:
    """``sum_l ||dL/dW_l||_2`` over layers (Frobenius norm per layer), Abdelfattah et al. 2021,
    "Zero-Cost Proxies for Lightweight NAS". ``L`` is the cross-entropy against the
    net's own argmax labels. Larger is better. Eval mode: BN is the fixed affine map of the
    recalibrated statistics; ReLU6 as is."""
    with autograd_on():
        net, x, weights = eval_copy(inp, True)
        grads = torch.autograd.grad(_self_labelled_loss(net, x), weights)
    return sum(g.double().norm().item() for g in grads)


def snip(inp: ProxyInput) -> float:
    """``sum |W ⊙ dL/dW|`` over all layer weights (connection sensitivity; Lee et al. 2019, as a
    network score in Abdelfattah et al. 2021). Self-labelled cross-entropy. Larger is
    better. Eval mode; BN and ReLU6 as is."""
    with autograd_on():
        net, x, weights = eval_copy(inp, True)
        grads = torch.autograd.grad(_self_labelled_loss(net, x), weights)
    return sum((w.detach().double() * g.double()).abs().sum().item() for w, g in zip(weights, grads))


def grasp(inp: ProxyInput) -> float:
    """``sum -W ⊙ (H g)`` over all layer weights, ``g = dL/dW``, ``H`` the Hessian of ``L``
    (Wang et al. 2020; the network score of Abdelfattah et al. 2021). ``Hg`` comes
    from double back-propagation of ``g.detach() · dL/dW``. Convention: the score is returned as
    Abdelfattah et al. sum it (no sign flip) and larger is taken as better, the direction of the
    correlations they report. Self-labelled cross-entropy, eval mode (BN affine); ReLU6 has zero
    second derivative, so ``Hg`` comes from products of first derivatives across layers."""
    with autograd_on():
        net, x, weights = eval_copy(inp, True)
        grads = torch.autograd.grad(_self_labelled_loss(net, x), weights, create_graph=True)
        z = sum((g.detach() * gf).sum() for g, gf in zip(grads, grads))
        hg = torch.autograd.grad(z, weights, allow_unused=True)
    return sum(-(w.detach().double() * h.double()).sum().item() for w, h in zip(weights, hg) if h is not None)


def fisher(inp: ProxyInput) -> float:
    """``sum_layers sum_channels 0.5 * mean_n (sum_{h,w} a ⊙ dL/da)^2`` with ``a`` each layer's
    output (before BN), per image ``n`` (Theis et al. 2018, Turner et al. 2020; Abdelfattah et
    al. 2021). Self-labelled cross-entropy. Larger is better. Eval mode; BN and ReLU6
    as is."""
    acts: list[torch.Tensor] = []
    with autograd_on():
        net, x, _ = eval_copy(inp, True)  # weights need grad so that the layer outputs are in the graph
        handles = [m.register_forward_hook(lambda m, a, out: acts.append(out)) for m in weight_layers(net)]
        loss = _self_labelled_loss(net, x)
        for h in handles:
            h.remove()
        grads = torch.autograd.grad(loss, acts)
    total = 0.0
    for a, g in zip(acts, grads):
        per_channel = (a.detach().double() * g.double()).flatten(2).sum(2) if a.dim() > 2 else a.detach() * g
        total += 0.5 * per_channel.double().pow(2).mean(0).sum().item()
    return total


def zico(inp: ProxyInput) -> float:
    """``sum_l log( sum_{θ in W_l, std>0} mean_b|g_θ| / std_b(g_θ) )``, ``g_θ`` the gradient of
    the self-labelled cross-entropy on mini-batch ``b`` (Li et al. 2023, "ZiCo"; their
    code skips weights with zero std and layers whose sum is 0). The images are split into
    ``ZICO_BATCHES`` mini-batches (population std). Larger is better. Eval mode, so a mini-batch's
    gradient does not depend on the others through BN; ReLU6 as is."""
    chunks = torch.tensor_split(inp.images, min(ZICO_BATCHES, inp.images.shape[0]))
    per_batch: list[list[torch.Tensor]] = []
    with autograd_on():
        net, _, weights = eval_copy(inp, True)
        for chunk in chunks:
            chunk = model_ready(chunk, net)
            per_batch.append(list(torch.autograd.grad(_self_labelled_loss(net, chunk), weights)))
    total = 0.0
    for layer_grads in zip(*per_batch):
        # elementwise over the few batches: a reduction over dim 0 of (B, P) is ~10x slower
        rows = [g.flatten() for g in layer_grads]
        mean = sum(rows) / len(rows)
        var = (sum((g - mean).square() for g in rows) / len(rows)).double()
        mean_abs = (sum(g.abs() for g in rows) / len(rows)).double()
        ratio = torch.where(var > 0, mean_abs / var.sqrt(), 0.0).sum().item()  # fp64: no overflow
        if ratio > 0:
            total += math.log(ratio)
    return total


def jacob_cov(inp: ProxyInput) -> float:
    """``-sum_i [log(λ_i + k) + 1 / (λ_i + k)]``, ``λ_i`` the eigenvalues of the correlation
    matrix of the per-image input Jacobians ``J_n = d(sum_c y_nc)/dx_n``, ``k = 1e-5`` (Mellor et
    al. 2020, arXiv v1 of "NAS without training"; Abdelfattah et al. 2021). Larger is better
    (less correlated Jacobians). Eval mode, so image ``n``'s output depends on ``x_n`` only;
    ReLU6 as is. A Jacobian with zero variance is correlated with nothing (its row of the
    correlation matrix is that of the identity), and eigenvalues are clamped at 0."""
    with autograd_on():
        net, x, _ = eval_copy(inp, False)
        x.requires_grad_(True)
        (jac,) = torch.autograd.grad(net(x).sum(), x)
    j = jac.flatten(1).double()
    j = j - j.mean(dim=1, keepdim=True)
    norm = j.norm(dim=1, keepdim=True)
    j = torch.where(norm > 0, j / norm.clamp_min(1e-300), torch.zeros_like(j))
    corr = j @ j.T
    corr.diagonal().fill_(1.0)  # rows with zero variance: correlated with themselves only
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0) + JACOB_COV_K
    return -(eig.log() + 1.0 / eig).sum().item()
