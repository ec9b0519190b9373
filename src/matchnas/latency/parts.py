"""The shapes a subnet is made of, as the latency lookup table times them (:class:`Part`).

A subnet is a stem, a chain of MBConv blocks and a head; each part's latency depends only on its
shape. :func:`enumerate_parts` walks every distinct shape of a space (what a table times);
:func:`config_parts` lists one config's parts (what a prediction sums).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from torch import nn

from matchnas import cost
from matchnas.nn.blocks import MBConv, hidden_channels
from matchnas.nn.ops import ElasticSqueezeExcite, activation, static_conv2d
from matchnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True, order=True)
class Part:
    """One timed piece of a subnet; ``size`` is the input side in pixels.

    ``kind`` is ``"stem"`` (conv 3x3 stride 2 + BN + ReLU6), ``"block"`` (an MBConv:
    ``in_channels -> hidden -> out_channels``, depthwise ``kernel``/``stride``, with a 1x1
    expansion conv when ``expansion``, a residual addition when ``residual``) or ``"head"``
    (conv 1x1 to ``out_channels`` + BN + ReLU6, global average pool, linear to ``classes``).
    Fields a kind does not use are 0 / False. ``padding`` is the space's convention ("same" adds an
    explicit pad before strided convs, so it is timed); ``act`` the part's activation. ``se`` is a
    block's squeeze-excite ratio (0: none); ``features`` the "mbv3" head's post-pool conv width
    (0: the "lite" head).
    """

    kind: str
    in_channels: int
    out_channels: int
    size: int
    hidden: int = 0
    kernel: int = 0
    stride: int = 0
    residual: bool = False
    expansion: bool = False
    classes: int = 0
    padding: str = "symmetric"
    act: str = "relu6"  # the space's activation for this part (stem_act, the stage's act, head_act)
    se: float = 0.0
    features: int = 0

    def __str__(self) -> str:
        if self.kind == "block":
            extra = ("+res" if self.residual else "") + ("" if self.expansion else " no-pw")
            extra += "" if self.act == "relu6" else f" {self.act}"
            extra += f" se{self.se:g}" if self.se else ""
            return (
                f"block {self.in_channels}>{self.hidden}>{self.out_channels} k{self.kernel} "
                f"s{self.stride} @{self.size}px{extra}"
            )
        extra = f">{self.features}" if self.features else ""
        return f"{self.kind} {self.in_channels}>{self.out_channels}{extra} @{self.size}px"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.size, self.size)

    def module(self) -> nn.Module:
        """A standalone eval-mode module of this shape with random weights."""

        def conv_bn(cin, cout, k=1, stride=1, groups=1):
            return static_conv2d(cin, cout, k, stride, groups, self.padding), nn.BatchNorm2d(cout)

        if self.kind == "stem":
            module = nn.Sequential(*conv_bn(self.in_channels, self.out_channels, 3, 2), activation(self.act))
        elif self.kind == "head":
            features = [nn.Conv2d(self.out_channels, self.features, 1), activation(self.act)] if self.features else []
            module = nn.Sequential(
                *conv_bn(self.in_channels, self.out_channels), activation(self.act), nn.AdaptiveAvgPool2d(1),
                *features, nn.Flatten(1), nn.Linear(self.features or self.out_channels, self.classes),
            )  # fmt: skip
        else:
            pw = conv_bn(self.in_channels, self.hidden) if self.expansion else (None, None)
            dw = conv_bn(self.hidden, self.hidden, self.kernel, self.stride, groups=self.hidden)
            se = ElasticSqueezeExcite(self.hidden, self.se).static(self.hidden) if self.se else None
            module = MBConv(*pw, *dw, *conv_bn(self.hidden, self.out_channels), residual=self.residual,
                            act=activation(self.act), se=se)
        return module.eval()


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel k, padding k // 2 or "same" (as in matchnas.cost)


def enumerate_parts(space: SearchSpace, num_classes: int, in_chans: int = 3) -> list[Part]:
    """Every distinct part shape any config of ``space`` has, walked from the space's choices
    (not sampled), sorted. Blocks at different positions or resolutions with equal shapes count once."""
    parts: set[Part] = set()
    for resolution in space.resolutions:
        parts.add(Part("stem", in_chans, space.stem_width, resolution, padding=space.padding, act=space.stem_act))
        size, widths_in = _out_size(resolution, 2), (space.stem_width,)
        for index, s in enumerate(space.stages):
            size_out = _out_size(size, s.stride)
            for b in range(s.max_depth):
                expansion = max(s.expands[b]) != 1
                pairs = [(i, o) for i in widths_in for o in s.widths] if b == 0 else [(w, w) for w in s.widths]
                for (cin, cout), e, k in itertools.product(pairs, s.expands[b], s.kernels[b]):
                    hidden = hidden_channels(cin, e) if expansion else cin
                    stride, at = (s.stride, size) if b == 0 else (1, size_out)
                    parts.add(Part("block", cin, cout, at, hidden, k, stride, space.residual(index, b), expansion,
                                   padding=space.padding, act=s.act, se=s.se or 0.0))
            size, widths_in = size_out, s.widths
        for cin in widths_in:
            parts.add(Part("head", cin, space.head_width, size, classes=num_classes, padding=space.padding,
                           act=space.head_act, features=space.feature_width))
    return sorted(parts)


def config_parts(space: SearchSpace, config: SubnetConfig, num_classes: int, in_chans: int = 3) -> list[Part]:
    """The parts of subnet ``config`` in execution order, read off :func:`matchnas.cost.layers`
    (the subnet's exact layer list), so the table and the other cost models agree."""
    layers = cost.layers(space, config, num_classes, in_chans)
    by_name = {layer.name: layer for layer in layers}
    stem, head = by_name["stem"], by_name["head"]
    parts = [Part("stem", stem.in_channels, stem.out_channels, stem.size_in, padding=space.padding, act=space.stem_act)]
    blocks = dict.fromkeys(".".join(name.split(".")[:3]) for name in by_name if name.startswith("stages."))
    for block in blocks:
        pw, dw, pwl = by_name.get(f"{block}.conv_pw"), by_name[f"{block}.conv_dw"], by_name[f"{block}.conv_pwl"]
        first = pw or dw
        stage, index = (int(i) for i in block.split(".")[1:])
        parts.append(
            Part("block", first.in_channels, pwl.out_channels, first.size_in, dw.in_channels, dw.kernel,
                 dw.stride, space.residual(stage, index), pw is not None, padding=space.padding,
                 act=space.stages[stage].act, se=space.stages[stage].se or 0.0)
        )  # fmt: skip
    classes = by_name["classifier"].out_channels
    parts.append(Part("head", head.in_channels, head.out_channels, head.size_in, classes=classes, padding=space.padding,
                      act=space.head_act, features=space.feature_width))
    return parts
