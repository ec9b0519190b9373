"""MobileNetV3 as data: squeeze-excite, the first block without expansion, the "mbv3" head, the
backbone registry in timm's key layout, and the shipped once-for-all-style spaces."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from matchnas import cost
from matchnas.backbones import BACKBONES, load_weights_file
from matchnas.convert import from_pretrained
from matchnas.errors import MatchnasError
from matchnas.latency import Runner, config_parts, enumerate_parts
from matchnas.nn import Supernet
from matchnas.nn.ops import SqueezeExcite, make_divisible, se_channels
from matchnas.space_file import load_space, space_from_dict

from .conftest import randomize_batch_norms

SMALL = "mobilenetv3-large-100-32"


@pytest.fixture(scope="module")
def small_supernet():
    """A random-weight supernet over the small-image MobileNetV3 space (no checkpoint needed)."""
    space = load_space(SMALL)
    torch.manual_seed(0)
    net = Supernet(space, num_classes=7, bn_eps=1e-5)
    randomize_batch_norms(net, torch.Generator().manual_seed(1))
    with torch.no_grad():  # nonzero SE biases, so a wrong slice of them shows
        for name, p in net.named_parameters():
            if ".se." in name and name.endswith("bias"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(hash(name) % 1000))
    return net.eval()


def _configs(space, n, seed):
    rng = np.random.default_rng(seed)
    return [space.max(), space.min()] + [space.sample(rng) for _ in range(n)]


def test_squeeze_excite_width_follows_the_hidden_width_as_timm_rounds_it():
    assert [make_divisible(v) for v in (16 * 0.25, 72 * 0.25, 120 * 0.25, 200 * 0.25, 672 * 0.25)] == [8, 24, 32, 48, 168]
    assert se_channels(480, 0.25) == 120 and se_channels(240, 0.25) == 64


def test_the_shipped_spaces_describe_mobilenetv3():
    space = load_space("mobilenetv3-large-100")
    assert (space.head, space.feature_width, space.padding, space.stem_act) == ("mbv3", 1280, "symmetric", "hswish")
    assert [s.se for s in space.stages] == [None, None, 0.25, None, 0.25, 0.25]
    assert [s.act for s in space.stages] == ["relu"] * 3 + ["hswish"] * 3
    assert space.residual(0, 0) and not space.residual(1, 0)  # the first block adds its input, as timm's
    assert space_from_dict(space.to_dict()) == space
    assert load_space(SMALL).resolutions == (24, 28, 32) and load_space(SMALL).digest != space.digest


@pytest.mark.parametrize("data, message", [
    ({"se": 1.5}, "se must be none or a ratio in (0, 1], got 1.5"),
    ({"se": "half"}, "se must be none or a ratio"),
])  # fmt: skip
def test_bad_squeeze_excite_is_a_one_line_error(data, message):
    raw = load_space(SMALL).to_dict()
    raw["stages"][2].update(data)
    with pytest.raises(MatchnasError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        space_from_dict(raw)


def test_mbv3_head_needs_its_feature_width():
    raw = load_space(SMALL).to_dict()
    raw.pop("feature_width")
    with pytest.raises(MatchnasError, match="feature_width is needed with head: mbv3"):
        space_from_dict(raw)


def test_extraction_equals_the_supernet_and_has_plain_squeeze_excite(small_supernet):
    space = small_supernet.space
    for config in _configs(space, 12, 0):
        x = torch.randn(2, 3, config.resolution, config.resolution, generator=torch.Generator().manual_seed(2))
        static = small_supernet.extract(config).eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), small_supernet(x, config), rtol=1e-5, atol=1e-5)
        ses = [m for m in static.modules() if isinstance(m, SqueezeExcite)]
        assert len(ses) == sum(s.depth for s, ss in zip(config.stages, space.stages) if ss.se)
        for se in ses:
            assert se.conv_reduce.out_channels == se_channels(se.conv_reduce.in_channels, 0.25)
        assert static.features[0].bias is not None and static.features[0].out_channels == 1280


def test_flops_and_params_equal_the_counted_module(small_supernet):
    space = small_supernet.space
    for config in _configs(space, 6, 1):
        static = small_supernet.extract(config).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(torch.zeros(1, 3, config.resolution, config.resolution))
        assert cost.flops(space, config, 7) == counter.get_total_flops()
        assert cost.params(space, config, 7) == sum(p.numel() for p in static.parameters())


def test_latency_parts_carry_squeeze_excite_and_the_head(small_supernet):
    space = small_supernet.space
    config = space.sample(np.random.default_rng(3))
    parts = config_parts(space, config, 7)
    assert set(parts) <= set(enumerate_parts(space, 7))
    blocks = [p for p in parts if p.kind == "block"]
    assert [p.se for p in blocks] == [ss.se or 0.0 for s, ss in zip(config.stages, space.stages) for _ in range(s.depth)]
    assert blocks[0].residual and parts[-1].features == 1280
    se_block = next(p for p in blocks if p.se)
    assert isinstance(se_block.module().se, SqueezeExcite) and "se0.25" in str(se_block)
    head = parts[-1].module()
    assert head(torch.zeros(1, *parts[-1].input_shape[1:])).shape == (1, 7)


def test_onnx_runs_a_mobilenetv3_subnet_like_torch(small_supernet):
    for config in _configs(small_supernet.space, 1, 4)[1:]:
        static = small_supernet.extract(config).eval()
        shape = (2, 3, config.resolution, config.resolution)
        runner = Runner(static, shape, "onnxruntime")
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            expected = static(x).numpy()
        assert np.abs(runner.outputs(x.numpy()) - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


# -- the registry and the weights file ----------------------------------------------------------------
def test_unknown_backbone_is_a_one_line_error():
    with pytest.raises(MatchnasError, match="unknown backbone 'mobilenetv4'; known: efficientnet-lite0"):
        from_pretrained("mobilenetv4")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(MatchnasError, match=f"{tmp_path / 'nope.pth'}: no such weights file"):
        from_pretrained("mobilenetv3-large-100", weights=str(tmp_path / "nope.pth"))


def test_weights_with_wrong_keys_name_the_file(tmp_path):
    path = tmp_path / "lite.pth"
    torch.save({"_conv_stem.weight": torch.zeros(16, 3, 3, 3)}, path)
    with pytest.raises(MatchnasError, match=rf"{path}: unexpected key '_conv_stem.weight' for mobilenetv3-large-100"):
        from_pretrained("mobilenetv3-large-100", weights=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(MatchnasError, match="junk.pth: not a readable weights file"):
        load_weights_file(tmp_path / "junk.pth")


def test_weights_files_are_read_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(MatchnasError, match="evil.pth: not a readable weights file"):
        load_weights_file(path)


# -- fidelity: the converted maxnet is geffnet's MobileNetV3-Large --------------------------------------
@pytest.fixture(scope="module")
def geffnet_and_weights(tmp_path_factory):
    geffnet = pytest.importorskip("geffnet")
    torch.manual_seed(0)
    reference = geffnet.mobilenetv3_large_100()
    randomize_batch_norms(reference, torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("mbv3") / "mobilenetv3_large_100.pth"
    torch.save(reference.state_dict(), path)
    return reference.eval(), path


def test_converted_maxnet_equals_geffnet(geffnet_and_weights):
    """The once-for-all space's maxnet is deeper (4 blocks per stage), wider (expansion 6) and has
    larger kernels (7) than the checkpoint; the additions change nothing. In float64 the logits agree
    to rounding (the function is the same); in float32 to 1e-4 of the largest logit."""
    reference, path = geffnet_and_weights
    net = from_pretrained("mobilenetv3-large-100", weights=str(path)).eval()
    assert net.classifier.out_features == 1000 and net.space.max().stages[1].depth == 4
    for resolution in (224, 160):
        config = dataclasses.replace(net.space.max(), resolution=resolution)
        x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(resolution))
        with torch.no_grad():
            expected, got = reference(x), net(x, config)
            expected64, got64 = reference.double()(x.double()), net.double()(x.double(), config)
            reference.float(), net.float()
        assert (got64 - expected64).abs().max() <= 1e-9 * expected64.abs().max()
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_normalisation_is_the_backbones_and_old_runs_keep_lites():
    from matchnas.data import LITE_NORMALISATION, Normalisation, to_model_input

    images = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    norm = Normalisation.from_record(BACKBONES["mobilenetv3-large-100"].normalisation.to_record())
    x = norm(images)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    assert Normalisation.from_record(None) == LITE_NORMALISATION == BACKBONES["efficientnet-lite0"].normalisation
    assert torch.equal(LITE_NORMALISATION(images), to_model_input(images, mean=127.0, std=128.0))
