"""Accuracy of a subnet: extract it, re-calibrate its BN on weak views of training images, and
measure top-1 on a labelled set (docs/method.md, "Evaluation protocol").

Every function takes the run's input ``normalisation`` (:attr:`matchnas.run.RunData.normalisation`)
as a required argument: there is no default, so no backbone's images meet another's normalisation.
"""

from __future__ import annotations

import torch

from matchnas import devices
from matchnas.data import ImageSet, Normalisation, generator_for, weak
from matchnas.nn import StaticNet, Supernet, recalibrate_bn
from matchnas.space import SubnetConfig


def recalibration_batches(
    images: torch.Tensor, resolution: int, n_images: int, seed: int, flip: bool, batch_size: int = 128,
    *, normalisation: Normalisation,
) -> list[torch.Tensor]:
    """``n_images`` seeded weak views of ``images`` (uint8 ``N x C x H x W``), model-ready at
    ``resolution``, in equal-sized batches."""
    gen = generator_for(seed, 0xBC)
    idx = torch.randperm(images.shape[0], generator=gen)[: min(n_images, images.shape[0])]
    views = normalisation(weak(images[idx], gen, flip=flip), size=resolution)
    return list(views.split(batch_size))


@torch.no_grad()
def correct(net: torch.nn.Module, images: ImageSet, resolution: int, batch_size: int = 256,
            *, normalisation: Normalisation) -> torch.Tensor:
    """Per image of a labelled set, whether ``net`` (in eval mode, on its device) gets it right (bool, CPU)."""
    net.eval()
    device = next(net.parameters()).device
    hits = []
    for start in range(0, len(images), batch_size):
        x = normalisation(images.images[start : start + batch_size], size=resolution).to(device)
        hits.append(net(x).argmax(1).cpu() == images.labels[start : start + batch_size])
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def accuracy(net: torch.nn.Module, images: ImageSet, resolution: int, batch_size: int = 256,
             *, normalisation: Normalisation) -> float:
    """Top-1 accuracy (fraction) of ``net`` in eval mode on a labelled set, on ``net``'s device."""
    return int(correct(net, images, resolution, batch_size, normalisation=normalisation).sum()) / len(images)


def calibrated_subnet(
    supernet: Supernet, config: SubnetConfig, train_images: torch.Tensor, n_images: int, seed: int, flip: bool,
    *, normalisation: Normalisation,
) -> StaticNet:
    """The extracted subnet with BN statistics re-estimated for it (the supernet is untouched), on
    the supernet's device, in the device's memory format (:mod:`matchnas.devices`)."""
    net = supernet.extract(config)
    device = next(net.parameters()).device
    net = net.to(memory_format=devices.memory_format(device))
    batches = [b.to(device).contiguous(memory_format=devices.memory_format(device)) for b in
               recalibration_batches(train_images, config.resolution, n_images, seed, flip, normalisation=normalisation)]
    return recalibrate_bn(net, batches)
