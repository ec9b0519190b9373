"""Elastic ops, the MBConv block, the supernet and extraction."""

from matchnas.nn.blocks import ElasticMBConv, MBConv
from matchnas.nn.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d
from matchnas.nn.recalibrate import recalibrate_bn
from matchnas.nn.supernet import StaticNet, Supernet

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticMBConv",
    "MBConv",
    "StaticNet",
    "Supernet",
    "recalibrate_bn",
]
