"""Weak/strong views, per-image RandAugment, cutout, resizing and model-input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from matchnas.data import (
    OP_NAMES,
    apply_op,
    apply_plan,
    cutout,
    draw_plan,
    generator_for,
    resize,
    strong,
    to_model_input,
    weak,
)
from matchnas.errors import MatchnasError


def images(n: int = 32, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("view", [weak, strong])
@pytest.mark.parametrize(("c", "size"), [(1, 8), (1, 28), (3, 32)])
def test_views_keep_shape_and_dtype(view, c: int, size: int) -> None:
    x = images(c=c, size=size)
    out = view(x, generator_for(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("view", [weak, strong])
def test_views_are_deterministic_given_the_generator(view) -> None:
    x = images()
    assert torch.equal(view(x, generator_for(1, 5)), view(x, generator_for(1, 5)))
    assert not torch.equal(view(x, generator_for(1, 5)), view(x, generator_for(1, 6)))


def test_views_do_not_touch_the_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    strong(images(), generator_for(0))
    assert torch.equal(torch.rand(3), expected)


def test_flip_disabled_really_disables() -> None:
    x = images(n=64)
    no_crop = {"pad_fraction": 0.0}
    assert torch.equal(weak(x, generator_for(0), flip=False, **no_crop), x)
    flipped = weak(x, generator_for(0), flip=True, **no_crop)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    same = (flipped == x).flatten(1).all(1)
    assert (mirrored ^ same).all() and 10 < int(mirrored.sum()) < 54  # each image: one or the other


def test_weak_is_a_crop_of_the_reflect_padded_image() -> None:
    x = images(n=16, c=1, size=8)
    out = weak(x, generator_for(3), flip=False)  # pad int(8 / 8) = 1 pixel
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect")
    crops = torch.stack(
        [padded[:, :, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)], dim=1
    )
    matches = (crops == out.float().unsqueeze(1)).flatten(2).all(2)  # N x 9 candidate offsets
    assert matches.any(1).all()
    assert len(set(matches.float().argmax(1).tolist())) > 3  # offsets vary per image


def test_randaugment_draws_operations_per_image() -> None:
    plan = draw_plan(32, generator_for(0))
    assert plan.ops.shape == (32, 2) and plan.magnitudes.abs().max() <= 1
    assert len(set(plan.ops[:, 0].tolist())) > 5  # not one operation for the whole batch
    assert len({plan.names(i) for i in range(32)}) > 20


def test_apply_plan_applies_each_images_own_operations() -> None:
    x = images(n=24)
    plan = draw_plan(24, generator_for(2))
    batched = apply_plan(x, plan)
    for i in range(24):
        one = x[i : i + 1]
        for name, m in zip(plan.names(i), plan.magnitudes[i], strict=True):
            one = apply_op(one, name, m.view(1))
        assert torch.equal(batched[i : i + 1], one), plan.names(i)


def test_strong_views_of_one_image_differ() -> None:
    x = images(n=1).expand(32, -1, -1, -1).contiguous()
    out = strong(x, generator_for(0), flip=False)
    assert len({tuple(img.flatten().tolist()) for img in out}) == 32


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_operation_keeps_shape_dtype_and_is_identity_at_zero(name: str) -> None:
    x = images(n=4, size=12)
    out = apply_op(x, name, torch.tensor([-1.0, -0.3, 0.4, 1.0]))
    assert out.shape == x.shape and out.dtype == torch.uint8
    if name not in ("autocontrast", "equalize"):  # the only operations without a magnitude
        assert torch.equal(apply_op(x, name, torch.zeros(4)), x)


def pil_reference(x: torch.Tensor, op, m: torch.Tensor) -> torch.Tensor:
    out = [
        np.asarray(op(Image.fromarray(img.permute(1, 2, 0).numpy()), float(v)))
        for img, v in zip(x, m, strict=True)
    ]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("name", "reference", "tolerance"),
    [
        ("equalize", lambda im, m: ImageOps.equalize(im), 0),
        ("posterize", lambda im, m: ImageOps.posterize(im, 8 - round(4 * abs(m))), 0),
        ("solarize", lambda im, m: ImageOps.solarize(im, round(256 * (1 - abs(m)))), 0),
        ("autocontrast", lambda im, m: ImageOps.autocontrast(im), 1),
        ("brightness", lambda im, m: ImageEnhance.Brightness(im).enhance(1 + 0.9 * m), 1),
        ("color", lambda im, m: ImageEnhance.Color(im).enhance(1 + 0.9 * m), 1),
        ("contrast", lambda im, m: ImageEnhance.Contrast(im).enhance(1 + 0.9 * m), 1),
        ("sharpness", lambda im, m: ImageEnhance.Sharpness(im).enhance(1 + 0.9 * m), 1),
    ],
)
def test_colour_operations_match_pil(name: str, reference, tolerance: int) -> None:
    x = (images(n=4, size=16) // 2 + 30).to(
        torch.uint8
    )  # not spanning 0..255, so autocontrast acts
    m = torch.tensor([0.5, -0.3, 0.9, -1.0])
    diff = (apply_op(x, name, m).int() - pil_reference(x, reference, m).int()).abs()
    assert int(diff.max()) <= tolerance


def test_translate_by_whole_pixels_is_an_exact_shift_filled_with_fill() -> None:
    x = images(n=2, size=10)
    out = apply_op(x, "translate_x", torch.tensor([1.0, -1.0]), fill=7)  # 0.3 * 10 = 3 pixels
    assert torch.equal(out[0, :, :, :7], x[0, :, :, 3:]) and out[0, :, :, 7:].eq(7).all()
    assert torch.equal(out[1, :, :, 3:], x[1, :, :, :7]) and out[1, :, :, :3].eq(7).all()


def test_cutout_fills_one_clipped_square_per_image() -> None:
    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    mask = cutout(x, generator_for(0), size_fraction=0.5, fill=127)[:, 0] == 127
    rows, cols = mask.any(2), mask.any(1)
    assert (mask == (rows.unsqueeze(2) & cols.unsqueeze(1))).all()  # a rectangle
    assert (rows.sum(1) <= 8).all() and (cols.sum(1) <= 8).all() and (rows.sum(1) >= 4).all()
    assert int((mask.flatten(1).sum(1) == 64).sum()) > 5  # often a full, unclipped 8 x 8 square


def test_resize_antialiases_when_shrinking_and_keeps_dtype() -> None:
    checker = ((torch.arange(32).view(32, 1) + torch.arange(32)) % 2 * 255).to(torch.uint8)
    small = resize(checker.expand(2, 1, 32, 32), 8)
    assert small.dtype == torch.uint8 and small.shape == (2, 1, 8, 8)
    assert (small.int() - 128).abs().max() <= 1  # averaged, not aliased to 0 or 255
    assert resize(torch.rand(1, 3, 8, 8), 32).dtype == torch.float32


def test_to_model_input_normalises_and_repeats_grey() -> None:
    x = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 1, 3, 3)
    out = to_model_input(x, mean=127.0, std=128.0)  # EfficientNet-Lite's
    assert out.shape == (2, 3, 3, 3) and out.dtype == torch.float32
    assert out[0, :, 0].tolist() == [[-127 / 128, 0.0, 1.0]] * 3
    assert to_model_input(images(c=3, size=28), size=32, mean=127.0, std=128.0).shape == (32, 3, 32, 32)
    assert to_model_input(images(c=1, size=8), channels=1, mean=0.0, std=255.0).max() <= 1.0


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(MatchnasError, match="expected uint8"):
        weak(torch.rand(2, 3, 8, 8), generator_for(0))
    with pytest.raises(MatchnasError, match="cannot turn 3-channel images into 1"):
        to_model_input(images(n=1), channels=1, mean=127.0, std=128.0)
    with pytest.raises(MatchnasError, match="unknown RandAugment operation"):
        apply_op(images(n=1), "blur", torch.zeros(1))
