"""The weight-sharing supernet, ``supernet(x, config)``, and extraction of a static subnet.

Layout (EfficientNet-Lite): stem conv 3x3 stride 2 -> BN -> act; the stages of MBConv blocks
(:mod:`matchnas.nn.blocks`); head conv 1x1 -> BN -> act; global average pool; dropout; linear
classifier. With ``space.head == "mbv3"`` (MobileNetV3, Howard et al. 2019, section 5.3) a 1x1 conv
with bias to ``space.feature_width`` and the head activation follow the pool (``head_features``).
The activations are the space's (``stem_act``, each stage's ``act``, ``head_act``;
ReLU6 for EfficientNet-Lite). Strided convs pad as the space says (``space.padding``: TensorFlow "same" for
EfficientNet-Lite, computed from the input size at run time; or symmetric ``k // 2``). Stem and head
widths are fixed; everything in a stage is elastic (docs/method.md,
"Objects": first ``d`` blocks, first ``w`` output channels, first ``e * c_in`` hidden channels,
centre ``k x k`` of each depthwise kernel through the kernel transform).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from matchnas.errors import MatchnasError
from matchnas.nn.blocks import ElasticMBConv, MBConv
from matchnas.nn.ops import ElasticBatchNorm2d, ElasticConv2d, activation, static_conv2d
from matchnas.space import SearchSpace, SubnetConfig


class Supernet(nn.Module):
    """Holds the maxnet's weights; ``forward(x, config)`` runs subnet ``config`` on ``x``.

    Args:
        space: the search space; its maximum choices fix the shape of every weight.
        num_classes: classifier outputs.
        in_chans: input image channels (1 for grey, 3 for RGB).
        bn_eps: batch-norm epsilon, the backbone's (:attr:`matchnas.backbones.Backbone.bn_eps`:
            1e-3 for EfficientNet-Lite, 1e-5 for MobileNetV3); required, because a converted
            network computes another function under another epsilon.
        bn_momentum: batch-norm running-statistics momentum.
        dropout: dropout rate before the classifier (training only).

    ``x`` is ``(N, in_chans, R, R)`` with ``R == config.resolution``, already normalised; the
    output is ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        in_chans: int = 3,
        *,
        bn_eps: float,
        bn_momentum: float = 0.1,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = nn.Sequential(
            static_conv2d(in_chans, space.stem_width, 3, 2, padding=space.padding),
            ElasticBatchNorm2d(space.stem_width, eps=bn_eps, momentum=bn_momentum),
            activation(space.stem_act),
        )
        stages = []
        width_in = space.stem_width
        for s in space.stages:
            width_out = max(s.widths)
            blocks = []
            for i in range(s.max_depth):
                blocks.append(
                    ElasticMBConv(
                        max_in=width_in if i == 0 else width_out,
                        max_out=width_out,
                        max_expand=max(s.expands[i]),
                        kernel_sizes=s.kernels[i],
                        stride=s.stride if i == 0 else 1,
                        residual=space.residual(len(stages), i),
                        bn_eps=bn_eps,
                        bn_momentum=bn_momentum,
                        padding=space.padding,
                        act=s.act,
                        se=s.se,
                    )
                )
            stages.append(nn.ModuleList(blocks))
            width_in = width_out
        self.stages = nn.ModuleList(stages)
        self.head_conv = ElasticConv2d(width_in, space.head_width)
        self.head_bn = ElasticBatchNorm2d(space.head_width, eps=bn_eps, momentum=bn_momentum)
        self.act = activation(space.head_act)
        # MobileNetV3's post-pool conv has a bias and no BN (timm's conv_head); fixed width, not elastic.
        self.head_features = nn.Conv2d(space.head_width, space.feature_width, 1) if space.head == "mbv3" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(space.feature_width or space.head_width, num_classes)

    def forward(self, x: torch.Tensor, config: SubnetConfig) -> torch.Tensor:
        self.space.validate(config)
        if x.shape[-2:] != (config.resolution, config.resolution):
            raise MatchnasError(
                f"input is {tuple(x.shape[-2:])} pixels but config {config.id} has resolution {config.resolution}"
            )
        x = self.stem(x)
        for blocks, stage in zip(self.stages, config.stages):
            for i in range(stage.depth):
                x = blocks[i](x, stage.kernel[i], stage.expand[i], stage.width)
        x = self.act(self.head_bn(self.head_conv(x, self.space.head_width)))
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        if self.head_features is not None:
            x = self.act(self.head_features(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    @torch.no_grad()
    def extract(self, config: SubnetConfig) -> StaticNet:
        """The plain subnet ``config`` selects, with copied weights and BN statistics.

        Its output equals ``self(x, config)`` in eval mode. Re-calibrate BN first
        (:func:`matchnas.nn.recalibrate_bn`) when the shared statistics are not this subnet's.
        """
        self.space.validate(config)
        blocks: list[MBConv] = []
        width_in = self.space.stem_width
        for stage_blocks, stage in zip(self.stages, config.stages):
            for i in range(stage.depth):
                blocks.append(stage_blocks[i].static(width_in, stage.kernel[i], stage.expand[i], stage.width))
                width_in = stage.width
        stem_conv, stem_bn, _ = self.stem
        net = StaticNet(
            stem=nn.Sequential(copy.deepcopy(stem_conv), stem_bn.static(self.space.stem_width), activation(self.space.stem_act)),
            blocks=nn.Sequential(*blocks),
            head=nn.Sequential(
                self.head_conv.static(width_in, self.space.head_width),
                self.head_bn.static(self.space.head_width),
                activation(self.space.head_act),
            ),
            dropout=self.dropout.p,
            features=(
                nn.Sequential(copy.deepcopy(self.head_features), activation(self.space.head_act))
                if self.head_features is not None
                else None
            ),
            classifier=copy.deepcopy(self.classifier),
            resolution=config.resolution,
        )
        return net.train(self.training)


class StaticNet(nn.Module):
    """A standalone subnet: plain convolutions, batch norms, activations and a linear classifier.

    ``resolution`` records the input size the subnet was chosen for (it runs at any size).
    ``features`` (MobileNetV3's head: conv 1x1 with bias + act) runs on the pooled ``(N, C, 1, 1)``.
    """

    def __init__(self, stem, blocks, head, dropout: float, classifier: nn.Linear, resolution: int,
                 features: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        if self.features is not None:
            x = self.features(x)
        return self.classifier(self.dropout(torch.flatten(x, 1)))
