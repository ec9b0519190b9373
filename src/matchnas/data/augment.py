"""Weak and strong views of uint8 batches, resizing, and the model's input normalisation.

Dtype contract: the views take and return uint8 ``N x C x H x W`` (0..255, C in {1, 3}), so they
run at the data's native resolution and round like PIL-based pipelines; :func:`to_model_input`
then resizes to the subnet's resolution and normalises to float32. A training step is therefore::

    x_w = normalisation(weak(x, gen, flip=source.allow_flip), size=resolution)
    x_s = normalisation(strong(u, gen, flip=source.allow_flip), size=resolution)

with ``normalisation`` the run's :class:`~matchnas.data.Normalisation` (it calls
:func:`to_model_input` with the backbone's mean and std).

Randomness: every random function takes an explicit CPU ``torch.Generator`` (e.g.
:func:`matchnas.data.sampling.generator_for` of ``(seed, step, rank, view)``) and draws all its
numbers up front with it; no global random state is read. Inputs may live on any device; the
random numbers are drawn on the CPU and moved there.

Views (FixMatch, Sohn et al. 2020, section 2.3):

- weak: horizontal flip with probability 1/2 (optional) and a random crop of the image padded
  by 1/8 of its side with reflection, each drawn per image.
- strong: weak, then per-image RandAugment (:mod:`matchnas.data.randaugment`), then cutout of a
  square of half the side filled with the normalisation mean (127).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from matchnas.data.randaugment import randaugment
from matchnas.errors import MatchnasError

TFLITE_MEAN = 127.0
TFLITE_STD = 128.0


def _check_uint8(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise MatchnasError(
            f"expected uint8 N x C x H x W images with C in {{1, 3}}, "
            f"got {images.dtype} of shape {tuple(images.shape)}"
        )


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``N x C x H x W`` images to ``size x size`` (bilinear, antialiased when shrinking).

    uint8 input is resized in float and rounded back to uint8; float input stays float.
    """
    if size < 1:
        raise MatchnasError(f"image size must be positive, got {size}")
    if images.shape[-2:] == (size, size):
        return images
    # antialias=True only changes the result when shrinking.
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def to_model_input(
    images: torch.Tensor,
    size: int | None = None,
    channels: int = 3,
    *,
    mean: float | tuple[float, ...],
    std: float | tuple[float, ...],
) -> torch.Tensor:
    """uint8 ``N x C x H x W`` (0..255) -> float32 ``N x channels x size x size`` model input.

    Resizes to ``size x size`` when ``size`` is given (see :func:`resize`), computes
    ``(x - mean) / std`` on the 0..255 scale (the backbone's, given by the caller: usually through
    :class:`~matchnas.data.Normalisation`, which calls this) and repeats grey images to 3 channels when ``channels == 3``. A per-channel
    ``mean``/``std`` (3 values, e.g. ImageNet's for MobileNetV3) applies after the repeat; a grey
    model (``channels == 1``) takes their averages.
    """
    _check_uint8(images)
    if channels not in (images.shape[1], 3):
        raise MatchnasError(
            f"cannot turn {images.shape[1]}-channel images into {channels} channels"
        )
    x = images.float()
    if size is not None:
        x = resize(x, size)
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        x = (x - mean) / std
        return x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] != channels else x
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    mean_t, std_t = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (mean, std))
    if channels == 1:
        mean_t, std_t = mean_t.mean().reshape(1), std_t.mean().reshape(1)
    return ((x - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)).contiguous()


def _reflect(index: torch.Tensor, length: int) -> torch.Tensor:
    """Map indices in ``-length+1 .. 2*length-2`` into ``0 .. length-1`` by mirror reflection."""
    index = index.abs()
    return torch.where(index > length - 1, 2 * (length - 1) - index, index)


def weak(
    images: torch.Tensor, generator: torch.Generator, flip: bool = True, pad_fraction: float = 0.125
) -> torch.Tensor:
    """Weak view: random horizontal flip (when ``flip``) and reflect-pad-and-crop, per image.

    Args:
        images: uint8 ``N x C x H x W``.
        generator: CPU generator for the flips and crop offsets.
        flip: whether to flip (disable for classes a mirror changes, e.g. digits).
        pad_fraction: padding as a fraction of the side, ``int(pad_fraction * H)`` pixels
            (4 for 32 px, 3 for 28 px, 1 for 8 px).

    Returns:
        uint8 ``N x C x H x W``.
    """
    _check_uint8(images)
    n, c, h, w = images.shape
    pad_h, pad_w = int(pad_fraction * h), int(pad_fraction * w)
    if not (0 <= pad_h < h and 0 <= pad_w < w):
        raise MatchnasError(f"pad_fraction {pad_fraction} does not fit {h} x {w} images")
    flips = torch.rand(n, generator=generator) < 0.5  # drawn even when off: crops stay the same
    dy = torch.randint(-pad_h, pad_h + 1, (n, 1), generator=generator)
    dx = torch.randint(-pad_w, pad_w + 1, (n, 1), generator=generator)
    cols = torch.arange(w).expand(n, w)
    if flip:
        cols = torch.where(flips.unsqueeze(1), cols.flip(1), cols)
    # Crop of the padded image = source pixels shifted by (dy, dx), reflected at the borders;
    # gathering rows then columns does pad, crop and flip without building the padded tensor.
    rows = _reflect(torch.arange(h) + dy, h).to(images.device)
    cols = _reflect(cols + dx, w).to(images.device)
    out = images.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def cutout(
    images: torch.Tensor, generator: torch.Generator, size_fraction: float = 0.5, fill: int = 127
) -> torch.Tensor:
    """Fill one square of side ``round(size_fraction * min(H, W))`` per image with ``fill``.

    The square's centre is uniform over the image; the square is clipped at the borders
    (DeVries & Taylor 2017). uint8 ``N x C x H x W`` in and out.
    """
    _check_uint8(images)
    n, _, h, w = images.shape
    side = round(size_fraction * min(h, w))
    cy = torch.randint(0, h, (n, 1), generator=generator)
    cx = torch.randint(0, w, (n, 1), generator=generator)
    in_rows = (torch.arange(h) >= cy - side // 2) & (torch.arange(h) < cy - side // 2 + side)
    in_cols = (torch.arange(w) >= cx - side // 2) & (torch.arange(w) < cx - side // 2 + side)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1).to(images.device)
    return images.masked_fill(mask, fill)


def strong(
    images: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    n_ops: int = 2,
    cutout_fraction: float = 0.5,
    fill: int = 127,
) -> torch.Tensor:
    """Strong view: :func:`weak`, per-image RandAugment with ``n_ops`` operations, then cutout.

    uint8 ``N x C x H x W`` in and out; ``fill`` (default: the normalisation mean) fills the
    cutout square and the area that geometric operations uncover.
    """
    x = weak(images, generator, flip=flip)
    x = randaugment(x, generator, n_ops=n_ops, fill=fill)
    return cutout(x, generator, size_fraction=cutout_fraction, fill=fill)
