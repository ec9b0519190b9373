"""RandAugment with the operations drawn per image, on uint8 batches.

RandAugment (Cubuk et al. 2020) applies ``n_ops`` operations drawn uniformly from a fixed list.
FixMatch (Sohn et al. 2020, section 2.3 and appendix D) draws a random magnitude for every
operation and image instead of one global magnitude; so does this module. Per image and round it
draws an operation index and a signed magnitude ``m`` uniform in [-1, 1]; unsigned operations use
``|m|``. Ranges (as in FixMatch's pool, ``a = |m|``):

=============  =========================================================
identity       no change
autocontrast   stretch each channel's min..max to 0..255
equalize       histogram equalisation per channel (PIL's algorithm)
brightness     blend with black, factor ``1 + 0.9 m``
color          blend with the grey (luma) image, factor ``1 + 0.9 m``
contrast       blend with the image's mean grey level, factor ``1 + 0.9 m``
sharpness      blend with PIL's SMOOTH-filtered image, factor ``1 + 0.9 m``
posterize      keep the top ``8 - round(4 a)`` bits
solarize       invert values at or above ``round(256 (1 - a))``
rotate         ``30 m`` degrees about the centre
shear_x/y      shear ``0.3 m`` about the centre
translate_x/y  ``0.3 m`` of the width / height
=============  =========================================================

Geometric operations sample bilinearly and fill uncovered pixels with ``fill``. Every operation
maps uint8 to uint8 (rounding after each, as PIL does), so the drawing (:func:`draw_plan`) and
the applying (:func:`apply_plan`) are separate, and the plan says which image got which
operation. Images drawing the same operation are transformed together in one batched call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from matchnas.errors import MatchnasError

_ENHANCE_RANGE = 0.9
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Float ``M x C x H x W`` -> luma ``M x 1 x H x W`` (the image itself when C = 1)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    factor = _per_image(1.0 + _ENHANCE_RANGE * m)
    x = x.float()
    return _to_uint8(degenerate + factor * (x - degenerate))


def _identity(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    return x


def _autocontrast(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    xf = x.float()
    lo, hi = xf.amin(dim=(2, 3), keepdim=True), xf.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1.0)
    return torch.where(hi > lo, _to_uint8((xf - lo) * scale), x)


def _equalize(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    offsets = 256 * torch.arange(n * c, device=x.device).unsqueeze(1)
    hist = torch.bincount((flat + offsets).flatten(), minlength=256 * n * c).view(n * c, 256)
    last_bin = 255 - (hist > 0).flip(1).int().argmax(dim=1, keepdim=True)
    step = (h * w - hist.gather(1, last_bin)) // 255
    cum_before = hist.cumsum(dim=1) - hist
    lut = ((step // 2 + cum_before) // step.clamp(min=1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))
    return lut.gather(1, flat).to(torch.uint8).view(n, c, h, w)


def _brightness(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    return _blend(x, torch.zeros((), device=x.device), m)


def _color(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    return _blend(x, _grey(x.float()), m)


def _contrast(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    mean = _grey(x.float()).mean(dim=(1, 2, 3), keepdim=True).round()
    return _blend(x, mean, m)


def _sharpness(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    xf = x.float()
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    smooth = xf.clone()  # PIL keeps the one-pixel border unfiltered
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(xf, kernel, groups=c).round()
    return _blend(x, smooth, m)


def _posterize(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    bits = 8 - (4 * m.abs()).round().long()
    mask = (255 << (8 - bits)) & 255
    return x & _per_image(mask).to(torch.uint8)


def _solarize(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    threshold = _per_image((256 * (1 - m.abs())).round())
    return torch.where(x.float() >= threshold, 255 - x, x)


def _affine(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor, fill: int) -> torch.Tensor:
    """Warp by output->input maps ``p_in = matrix @ p_out + shift`` in pixels about the centre.

    ``matrix``: float ``M x 2 x 2``, ``shift``: float ``M x 2`` (x, y) in pixels.
    """
    n, _, h, w = x.shape
    to_norm = torch.tensor([2.0 / w, 2.0 / h], device=x.device)
    # affine_grid works in [-1, 1] coordinates: scale pixels to them on both sides.
    theta = torch.cat(
        [to_norm.view(1, 2, 1) * matrix / to_norm.view(1, 1, 2), (to_norm * shift).unsqueeze(2)],
        dim=2,
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    # Sampling x - fill with zero padding, then adding fill back, fills the uncovered area.
    warped = F.grid_sample(
        x.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return _to_uint8(warped + fill)


def _linear(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([a, b], dim=1), torch.stack([c, d], dim=1)], dim=1)


def _rotate(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    angle = m * (30.0 * math.pi / 180.0)
    cos, sin = angle.cos(), angle.sin()
    return _affine(x, _linear(cos, -sin, sin, cos), torch.zeros(len(m), 2, device=x.device), fill)


def _shear_x(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(
        x, _linear(one, 0.3 * m, zero, one), torch.zeros(len(m), 2, device=x.device), fill
    )


def _shear_y(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(
        x, _linear(one, zero, 0.3 * m, one), torch.zeros(len(m), 2, device=x.device), fill
    )


def _translate(x: torch.Tensor, m: torch.Tensor, fill: int, axis: int) -> torch.Tensor:
    """Shift by ``0.3 m`` of the width (``axis=0``) or height (``axis=1``)."""
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    shift = torch.zeros(len(m), 2, device=x.device)
    shift[:, axis] = 0.3 * m * x.shape[3 - axis]
    return _affine(x, _linear(one, zero, zero, one), shift, fill)


def _translate_x(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    return _translate(x, m, fill, axis=0)


def _translate_y(x: torch.Tensor, m: torch.Tensor, fill: int) -> torch.Tensor:
    return _translate(x, m, fill, axis=1)


Op = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
OPS: dict[str, Op] = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "rotate": _rotate,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
OP_NAMES = tuple(OPS)


@dataclass(frozen=True, eq=False)
class RandAugmentPlan:
    """The operations drawn for a batch.

    Attributes:
        ops: int64 ``N x n_ops``, indices into :data:`OP_NAMES`, applied left to right.
        magnitudes: float32 ``N x n_ops``, signed magnitudes in [-1, 1].
    """

    ops: torch.Tensor
    magnitudes: torch.Tensor

    def names(self, image: int) -> tuple[str, ...]:
        """The operation names applied to image ``image``, in order."""
        return tuple(OP_NAMES[k] for k in self.ops[image].tolist())


def draw_plan(n: int, generator: torch.Generator, n_ops: int = 2) -> RandAugmentPlan:
    """Draw ``n_ops`` operations and magnitudes for each of ``n`` images (CPU tensors)."""
    if n_ops < 0:
        raise MatchnasError(f"n_ops must be at least 0, got {n_ops}")
    ops = torch.randint(len(OP_NAMES), (n, n_ops), generator=generator)
    magnitudes = torch.rand(n, n_ops, generator=generator) * 2.0 - 1.0
    return RandAugmentPlan(ops, magnitudes)


def apply_op(
    images: torch.Tensor, name: str, magnitudes: torch.Tensor, fill: int = 127
) -> torch.Tensor:
    """Apply operation ``name`` to every image of uint8 ``M x C x H x W`` with its magnitude.

    ``magnitudes``: float ``M`` in [-1, 1]. Returns uint8 ``M x C x H x W``.
    """
    if name not in OPS:
        raise MatchnasError(f"unknown RandAugment operation {name!r}: expected one of {OP_NAMES}")
    return OPS[name](images, magnitudes.to(images.device, torch.float32), fill)


def apply_plan(images: torch.Tensor, plan: RandAugmentPlan, fill: int = 127) -> torch.Tensor:
    """Apply a plan to uint8 ``N x C x H x W`` images; returns a new uint8 tensor of that shape."""
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(plan.ops):
        raise MatchnasError(
            f"expected uint8 N x C x H x W images with N = {len(plan.ops)}, "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    out = images.clone()
    ops, magnitudes = plan.ops.to(images.device), plan.magnitudes.to(images.device)
    for round_ in range(ops.shape[1]):
        for k, name in enumerate(OP_NAMES):
            chosen = (ops[:, round_] == k).nonzero().squeeze(1)
            if name != "identity" and chosen.numel():
                out[chosen] = OPS[name](out[chosen], magnitudes[chosen, round_], fill)
    return out


def randaugment(
    images: torch.Tensor, generator: torch.Generator, n_ops: int = 2, fill: int = 127
) -> torch.Tensor:
    """Per-image RandAugment of uint8 ``N x C x H x W`` images (see the module docstring)."""
    return apply_plan(images, draw_plan(len(images), generator, n_ops), fill)
