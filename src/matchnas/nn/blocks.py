"""The MBConv (inverted residual) block: elastic for the supernet, static after extraction.

Submodule names follow timm's ``InvertedResidual``: ``conv_pw/bn1`` (expansion, absent when the
block's largest expansion ratio is 1), ``conv_dw/bn2`` (depthwise), ``conv_pwl/bn3`` (linear
projection), and ``se`` (squeeze-excite after the depthwise conv, when the stage has one:
MobileNetV3, Howard et al. 2019). The activation is the stage's ``act`` (EfficientNet-Lite: ReLU6).
``padding`` is the space's convention for the strided depthwise conv
(:func:`matchnas.nn.ops.static_conv2d`).
"""

from __future__ import annotations

import torch
from torch import nn

from matchnas.nn.ops import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticSqueezeExcite,
    activation,
)


def hidden_channels(in_channels: int, expand: float) -> int:
    """Hidden (expanded) width of a block: ``round(expand * in_channels)``."""
    return int(round(expand * in_channels))


class ElasticMBConv(nn.Module):
    """An MBConv block holding the weights of its largest choice.

    ``forward(x, kernel, expand, out_channels)`` runs the subnet block that reads ``x.shape[1]``
    input channels. ``residual`` is fixed by the maxnet's structure (every block of a stage but
    the first), so it never depends on the sampled widths.
    """

    def __init__(
        self,
        max_in: int,
        max_out: int,
        max_expand: float,
        kernel_sizes: tuple[int, ...],
        stride: int,
        residual: bool,
        bn_eps: float,
        bn_momentum: float,
        padding: str = "symmetric",
        act: str = "relu6",
        se: float | None = None,
    ):
        super().__init__()
        self.stride = stride
        self.residual = residual
        max_hidden = hidden_channels(max_in, max_expand)
        if max_expand != 1:
            self.conv_pw = ElasticConv2d(max_in, max_hidden)
            self.bn1 = ElasticBatchNorm2d(max_hidden, eps=bn_eps, momentum=bn_momentum)
        else:
            self.conv_pw = self.bn1 = None
        self.conv_dw = ElasticDepthwiseConv2d(max_hidden, kernel_sizes, stride, padding)
        self.bn2 = ElasticBatchNorm2d(max_hidden, eps=bn_eps, momentum=bn_momentum)
        self.se = ElasticSqueezeExcite(max_hidden, se) if se is not None else None
        self.conv_pwl = ElasticConv2d(max_hidden, max_out)
        self.bn3 = ElasticBatchNorm2d(max_out, eps=bn_eps, momentum=bn_momentum)
        self.act_name = act
        self.act = activation(act)

    def forward(self, x: torch.Tensor, kernel: int, expand: float, out_channels: int) -> torch.Tensor:
        shortcut = x
        if self.conv_pw is not None:
            x = self.act(self.bn1(self.conv_pw(x, hidden_channels(x.shape[1], expand))))
        x = self.act(self.bn2(self.conv_dw(x, kernel)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x, out_channels))
        return x + shortcut if self.residual else x

    def static(self, in_channels: int, kernel: int, expand: float, out_channels: int) -> MBConv:
        """The plain block these choices select, with copied weights and BN statistics."""
        hidden = hidden_channels(in_channels, expand) if self.conv_pw is not None else in_channels
        return MBConv(
            conv_pw=self.conv_pw.static(in_channels, hidden) if self.conv_pw is not None else None,
            bn1=self.bn1.static(hidden) if self.bn1 is not None else None,
            conv_dw=self.conv_dw.static(hidden, kernel),
            bn2=self.bn2.static(hidden),
            conv_pwl=self.conv_pwl.static(hidden, out_channels),
            bn3=self.bn3.static(out_channels),
            residual=self.residual,
            act=activation(self.act_name),
            se=self.se.static(hidden) if self.se is not None else None,
        )


class MBConv(nn.Module):
    """A static MBConv block made of plain ``torch.nn`` layers (no weight sharing)."""

    def __init__(self, conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3, residual: bool, act: nn.Module | None = None,
                 se: nn.Module | None = None):
        super().__init__()
        self.conv_pw, self.bn1 = conv_pw, bn1
        self.conv_dw, self.bn2 = conv_dw, bn2
        self.se = se
        self.conv_pwl, self.bn3 = conv_pwl, bn3
        self.act = nn.ReLU6() if act is None else act
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_pw is not None:
            x = self.act(self.bn1(self.conv_pw(x)))
        x = self.act(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.residual else x
