"""Elastic primitives: one per op (pointwise conv, depthwise conv, batch norm).

Each holds the weights of the largest choice and takes the smaller choice as a ``forward``
argument; none stores an "active" size. Input channels are read from the input tensor, output
channels and kernel size are arguments. ``static(...)`` returns the plain ``torch.nn`` layer with
copied weights that the same arguments select (docs/method.md, "Objects": slicing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from matchnas.space import PADDINGS


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one spatial side: ``(before, after)`` pixels.

    The output has ``ceil(size / stride)`` pixels and the total padding is what that needs,
    ``max((out - 1) * stride + kernel - size, 0)``, with the odd pixel after. With stride 1 and an
    odd kernel this is ``k // 2`` on both sides; with stride 2 on an even side it is asymmetric
    (k=3: 0 before, 1 after; k=5: 1, 2), which is how EfficientNet-Lite was trained."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded for a "SAME" conv with no padding of its own, from the
    input's actual size (so every resolution and every elastic kernel gets its own pads)."""
    top, bottom = same_pads(int(x.shape[-2]), kernel, stride)
    left, right = same_pads(int(x.shape[-1]), kernel, stride)
    return F.pad(x, (left, right, top, bottom))


def check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")


class Conv2dSame(nn.Conv2d):
    """A plain conv with TensorFlow "SAME" padding computed from the input size at run time
    (its own ``padding`` is 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


def static_conv2d(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                  padding: str = "symmetric") -> nn.Conv2d:
    """A bias-free ``nn.Conv2d`` with the space's padding convention (``"same"`` or
    ``"symmetric"`` = ``k // 2``). Stride 1 with an odd kernel pads ``k // 2`` either way, so only
    strided "same" convs need :class:`Conv2dSame`."""
    check_padding(padding)
    if padding == "same" and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel, stride, 0, groups=groups, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)


class ElasticConv2d(nn.Module):
    """A dense (groups=1), bias-free conv whose first ``out_channels`` filters and first input
    channels are used. Weight: ``(max_out, max_in, k, k)``; padding ``k // 2``."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        weight = self.weight[:out_channels, : x.shape[1]]
        return F.conv2d(x, weight, None, self.stride, self.padding)

    def static(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        k = self.weight.shape[-1]
        conv = nn.Conv2d(in_channels, out_channels, k, self.stride, self.padding, bias=False)
        conv.weight.data.copy_(self.weight.data[:out_channels, :in_channels])
        return conv


class ElasticDepthwiseConv2d(nn.Module):
    """A depthwise conv with elastic channels and kernel size (OFA's kernel transformation).

    The weight is ``(max_channels, 1, K, K)`` for the largest kernel ``K``. A smaller kernel ``k``
    is the centre ``k x k`` of the next larger kernel, flattened and multiplied by a learned
    ``k^2 x k^2`` matrix shared by all channels (``transform_k``, initialised to the identity, so a
    pre-trained kernel's centre crop is exact at conversion). Transforms chain: 7 -> 5 -> 3.

    ``padding`` is ``"same"`` (TensorFlow, computed for the input's size and the chosen kernel at
    run time) or ``"symmetric"`` (``k // 2``).
    """

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int = 1,
                 padding: str = "symmetric"):
        super().__init__()
        check_padding(padding)
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        self.padding = padding
        k_max = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k_max, k_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {str(k): nn.Parameter(torch.eye(k * k)) for k in self.kernel_sizes[:-1]}
        )

    def kernel(self, channels: int, k: int) -> torch.Tensor:
        """The effective ``(channels, 1, k, k)`` kernel."""
        weight = self.weight[:channels]
        for larger, smaller in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1]):
            if larger == k:
                break
            start = (larger - smaller) // 2
            crop = weight[:, :, start : start + smaller, start : start + smaller]
            weight = (crop.reshape(channels, smaller * smaller) @ self.transforms[str(smaller)].T).reshape(
                channels, 1, smaller, smaller
            )
        return weight

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.kernel(channels, k)
        if self.weight.stride(1) == 1 and weight.stride(1) != 1:
            # A channels-last supernet must pass channels-last strides (k*k, 1, k, 1), as a static
            # channels-last conv does. `.contiguous(memory_format=...)` leaves (k*k, k*k, k, 1)
            # alone (the size-1 dim makes it "already" channels-last), yet PyTorch then takes a
            # depthwise weight-gradient path 10-30x slower on small maps (bench/supernet_overhead.py).
            restrided = weight.new_empty_strided(weight.shape, (k * k, 1, k, 1))
            weight = restrided.copy_(weight)
        if self.padding == "same" and self.stride > 1:
            return F.conv2d(pad_same(x, k, self.stride), weight, None, self.stride, 0, 1, channels)
        return F.conv2d(x, weight, None, self.stride, k // 2, 1, channels)

    def static(self, channels: int, k: int) -> nn.Conv2d:
        conv = static_conv2d(channels, channels, k, self.stride, groups=channels, padding=self.padding)
        with torch.no_grad():
            conv.weight.copy_(self.kernel(channels, k))
        return conv


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``C`` channels of its input (``C`` read from the input).

    In training mode the running statistics of those channels are updated in place through views,
    as in OFA's ``DynamicBatchNorm2d``; they are shared by every subnet, which is why each subnet
    is re-calibrated before evaluation (docs/method.md, "BN recalibration").
    """

    synchronized = False  # set by matchnas.train.distributed.synchronize_batch_norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.training and self.synchronized:
            return self._synchronized_forward(x, c)
        factor = self.momentum if self.momentum is not None else 0.0
        if self.training and self.momentum is None:  # cumulative average, used by recalibration
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:c],
            self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            self.training,
            factor,
            self.eps,
        )

    def _synchronized_forward(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """Batch statistics over the global batch of all ranks (SyncBatchNorm), through
        differentiable all-reduces: first the per-channel sums and the count (the mean), then the
        sums of squared deviations (the variance; two passes, since E[x^2] - E[x]^2 loses the
        variance to cancellation in float32 when a channel's mean dwarfs its spread)."""
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        sums = all_reduce(torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([x.numel() // c])]))
        count = sums[-1]
        mean = sums[:c] / count
        centred = xf - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum((0, 2, 3))) / count
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean[:c].mul_(1 - m).add_(m * mean)
            self.running_var[:c].mul_(1 - m).add_(m * var * count / (count - 1).clamp_min(1.0))
        scale = self.weight[:c] * torch.rsqrt(var + self.eps)
        return (centred * scale.view(1, c, 1, 1) + self.bias[:c].view(1, c, 1, 1)).to(x.dtype)

    def static(self, channels: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(self, name)[:channels])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


def activation(name: str) -> nn.Module:
    """The module of a space's activation name (:data:`matchnas.space.ACTIVATIONS`)."""
    return {"relu6": nn.ReLU6, "hswish": nn.Hardswish, "relu": nn.ReLU}[name]()


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, at least ``divisor`` and never more
    than 10% below ``value``: the channel rounding of MobileNetV2/V3 that timm and once-for-all use
    for the squeeze-excite width (``make_divisible(hidden * 0.25, 8)``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def se_channels(hidden: int, ratio: float) -> int:
    """Reduced width of a squeeze-excite over ``hidden`` channels (timm's MobileNetV3 with
    ``reduce_mid``; OFA's ``DynamicSE``): it follows the active hidden width."""
    return make_divisible(hidden * ratio, 8)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as MobileNetV3 has it (Howard et al. 2019, section 5.3; Hu et al. 2018):
    global average pool -> 1x1 conv (bias) to ``reduced`` -> ReLU -> 1x1 conv (bias) back ->
    hard sigmoid gate, multiplied into the ``(N, C, H, W)`` input. Submodule names are timm's."""

    def __init__(self, conv_reduce: nn.Conv2d, conv_expand: nn.Conv2d):
        super().__init__()
        self.conv_reduce, self.conv_expand = conv_reduce, conv_expand
        self.act = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(scale)


class ElasticSqueezeExcite(nn.Module):
    """A squeeze-excite whose channels and reduced width follow its input (OFA's ``DynamicSE``,
    Cai et al. 2020): with ``C`` input channels it uses the first ``C`` channels and the first
    ``se_channels(C, ratio)`` reduced channels of the largest choice's weights."""

    def __init__(self, max_channels: int, ratio: float):
        super().__init__()
        self.ratio = ratio
        reduced = se_channels(max_channels, ratio)
        self.conv_reduce = nn.Conv2d(max_channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, max_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = se_channels(c, self.ratio)
        scale = x.mean((2, 3), keepdim=True)
        scale = F.relu(F.conv2d(scale, self.conv_reduce.weight[:r, :c], self.conv_reduce.bias[:r]))
        scale = F.conv2d(scale, self.conv_expand.weight[:c, :r], self.conv_expand.bias[:c])
        return x * F.hardsigmoid(scale)

    def static(self, channels: int) -> SqueezeExcite:
        r = se_channels(channels, self.ratio)
        reduce, expand = nn.Conv2d(channels, r, 1), nn.Conv2d(r, channels, 1)
        with torch.no_grad():
            reduce.weight.copy_(self.conv_reduce.weight[:r, :channels])
            reduce.bias.copy_(self.conv_reduce.bias[:r])
            expand.weight.copy_(self.conv_expand.weight[:channels, :r])
            expand.bias.copy_(self.conv_expand.bias[:channels])
        return SqueezeExcite(reduce, expand)
