"""Pre-trained EfficientNet-Lite checkpoints -> supernet (docs/method.md, "From a pre-trained network
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
smaller expansion), the first blocks / the most important channels are kept. A backbone that
``grows`` (MobileNetV3 into once-for-all's space) may meet a space deeper or with more hidden channels
than its checkpoint; the additions leave the function unchanged (a grown network starts as the
pre-trained one, as in Net2Net, Chen et al. 2016): a new block's last BN has zero scale and shift,
so it adds zero to its residual (Goyal et al. 2017's zero-gamma init); a new hidden channel's
projection weights (and, under squeeze-excite, its weights into the reduce conv and out of new
reduced channels) are zero. Their other weights keep the supernet's random initialisation, so
gradients reach them from the first step.
"""

from __future__ import annotations

import torch

from matchnas.backbones import BACKBONES, Backbone, get_backbone, rename
from matchnas.errors import MatchnasError
from matchnas.nn.supernet import Supernet
from matchnas.space import SearchSpace
from matchnas.space_file import load_space

__all__ = ["BACKBONES", "Backbone", "check_fits", "from_pretrained", "get_backbone", "sort_channels"]


def check_fits(space: SearchSpace, backbone: Backbone) -> None:
    """Refuse a space whose largest choices do not fit inside ``backbone`` (see ``from_pretrained``)."""
    _check_fits(space, backbone)


def from_pretrained(
    backbone: str = "efficientnet-lite0",
    space: SearchSpace | str | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    seed: int = 0,
    weights: str | None = None,
) -> Supernet:
    """Build a supernet whose maxnet is the pre-trained ``backbone``.

    Args:
        backbone: a key of :data:`BACKBONES`.
        space: a :class:`SearchSpace`, a shipped space name or a YAML path; default: the space
            shipped under the backbone's name.
        num_classes: ``None`` keeps the 1000-class ImageNet classifier; an int builds a new one
            (initialised from ``seed``).
        in_chans: 3 (RGB) or 1 (grey).
        weights: a local weights file (.pth / .safetensors) in the backbone's key layout; default:
            the backbone's package or download.
    """
    spec = get_backbone(backbone)
    space = load_space(space or spec.space) if not isinstance(space, SearchSpace) else space
    if in_chans not in (1, 3):
        raise MatchnasError(f"in_chans must be 1 or 3, got {in_chans}")
    _check_fits(space, spec)
    state = rename(spec.load_state_dict(weights), spec, str(weights or spec.name))
    sort_channels(state, [r for r, *_ in spec.stages], fixed_outputs=_residual_first_stages(spec))
    if in_chans == 1:
        state["stem.0.weight"] = state["stem.0.weight"].sum(dim=1, keepdim=True)
    if num_classes is not None:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    supernet = Supernet(space, num_classes or 1000, in_chans=in_chans, bn_eps=spec.bn_eps)
    _load_fitted(supernet, state, grow=spec.grows)
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
    if (space.stem_width, space.head_width, space.feature_width) != (spec.stem_width, spec.head_width, spec.feature_width):
        raise MatchnasError(
            f"{where}: stem/head/feature widths must be {spec.stem_width}/{spec.head_width}/{spec.feature_width}"
        )
    for i, (s, (repeats, _, stride, expand, width)) in enumerate(zip(space.stages, spec.stages)):
        if s.stride != stride:
            raise MatchnasError(f"{where}: stage {i} stride {s.stride}, the network has {stride}")
        if s.max_depth > repeats and not spec.grows:
            raise MatchnasError(f"{where}: stage {i} depth {s.max_depth} > {repeats} pre-trained blocks")
        if max(s.widths) > width:
            raise MatchnasError(f"{where}: stage {i} width {max(s.widths)} > pre-trained {width}")
        largest_expand = max(max(e) for e in s.expands)
        if (largest_expand > expand and not spec.grows) or (expand == 1) != (largest_expand == 1):
            raise MatchnasError(f"{where}: stage {i} expand {largest_expand} vs pre-trained {expand}")


def _residual_first_stages(spec: Backbone) -> set[int]:
    """Stages whose first block adds its input (stride 1, width unchanged: MobileNetV3's first):
    their output shares channels with the stage input, so it is not re-ordered."""
    widths_in = [spec.stem_width] + [w for *_, w in spec.stages[:-1]]
    return {s for s, ((_, _, stride, _, w), w_in) in enumerate(zip(spec.stages, widths_in)) if stride == 1 and w == w_in}


_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _permute(state: dict[str, torch.Tensor], key: str, perm: torch.Tensor, dim: int) -> None:
    state[key] = state[key].index_select(dim, perm)


def _permute_bn(state: dict[str, torch.Tensor], prefix: str, perm: torch.Tensor) -> None:
    for t in _BN_TENSORS:
        _permute(state, f"{prefix}.{t}", perm, 0)


def _descending(importance: torch.Tensor) -> torch.Tensor:
    return torch.sort(importance, descending=True, stable=True).indices


def sort_channels(state: dict[str, torch.Tensor], depths: list[int], fixed_outputs: set[int] = frozenset()) -> None:
    """Sort channels by importance in place in a supernet-named state dict (module docstring, 2).

    The permutations are applied consistently to writers and readers, so the network computes
    the same function (tested). Stages in ``fixed_outputs`` keep their output order.
    A squeeze-excite follows its block's hidden order, and its reduced channels are sorted by the
    L1 norm of the expand weights that read them (OFA's ``re_organize_middle_weights``).
    """
    for s, depth in enumerate(depths):
        prefix = f"stages.{s}"

        def block(b: int) -> str:
            return f"{prefix}.{b}"

        readers = [f"{block(b)}.conv_pw.weight" for b in range(1, depth)]
        readers.append(f"stages.{s + 1}.0.conv_pw.weight" if s + 1 < len(depths) else "head_conv.weight")
        if any(r not in state for r in readers):
            raise MatchnasError(f"stage {s}: a block reading the stage output has no expansion conv")
        if s not in fixed_outputs:
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
            if f"{block(b)}.se.conv_reduce.weight" in state:
                _sort_squeeze_excite(state, f"{block(b)}.se", perm)


def _sort_squeeze_excite(state: dict[str, torch.Tensor], se: str, hidden_perm: torch.Tensor) -> None:
    _permute(state, f"{se}.conv_reduce.weight", hidden_perm, 1)
    _permute(state, f"{se}.conv_expand.weight", hidden_perm, 0)
    _permute(state, f"{se}.conv_expand.bias", hidden_perm, 0)
    perm = _descending(state[f"{se}.conv_expand.weight"].abs().sum(dim=(0, 2, 3)))
    _permute(state, f"{se}.conv_reduce.weight", perm, 0)
    _permute(state, f"{se}.conv_reduce.bias", perm, 0)
    _permute(state, f"{se}.conv_expand.weight", perm, 1)


# Tensors that read hidden (or squeeze-excite reduced) channels: grown channels get zero weights here,
# so they add nothing until trained (module docstring).
_ZERO_WHEN_GROWN = (".conv_pwl.weight", ".se.conv_reduce.weight", ".se.conv_expand.weight")


def _fit(src: torch.Tensor, own: torch.Tensor, key: str, grow: bool = False) -> torch.Tensor:
    """Slice ``src`` to ``own``'s shape (first channels; centre crop of kernels) or zero-pad kernels;
    with ``grow``, channels the checkpoint lacks come from ``own`` (zero for readers)."""
    out, short = src, False
    for dim, (have, want) in enumerate(zip(src.shape, own.shape)):
        is_kernel = dim >= 2
        if have > want:
            start = (have - want) // 2 if is_kernel else 0
            out = out.narrow(dim, start, want)
        elif have < want:
            if not is_kernel:
                if not grow:
                    raise MatchnasError(f"{key}: checkpoint has {have} channels, the supernet needs {want}")
                short = True
                continue
            pad = (want - have) // 2
            grown = out.new_zeros(out.shape[:dim] + (want,) + out.shape[dim + 1 :])
            grown.narrow(dim, pad, have).copy_(out)
            out = grown
    if not short:
        return out
    base = torch.zeros_like(own) if key.endswith(_ZERO_WHEN_GROWN) else own.clone()
    base[tuple(slice(0, n) for n in out.shape)] = out
    return base


def _load_fitted(supernet: Supernet, state: dict[str, torch.Tensor], grow: bool = False) -> None:
    """Copy every tensor into its slot. Blocks deeper than the space's maxnet are dropped; the
    slots a checkpoint cannot fill are the kernel transforms (identity) and a new classifier, and
    with ``grow`` the new blocks (zero last BN, module docstring)."""
    own = supernet.state_dict()
    blocks = {k.rsplit(".", 2)[0] for k in state if k.startswith("stages.")}
    new = [k for k in own if k not in state and ".transforms." not in k and not k.startswith("classifier.")]
    if grow:
        new_blocks = [k for k in new if k.startswith("stages.") and ".".join(k.split(".")[:3]) not in
                      {".".join(b.split(".")[:3]) for b in blocks}]  # fmt: skip
        unfilled = [k for k in new if k not in new_blocks]
    else:
        new_blocks, unfilled = [], new
    if unfilled:
        raise MatchnasError(f"the checkpoint has no tensor for {unfilled[0]}")
    fitted = {k: _fit(v, own[k], k, grow) if v.dim() else v for k, v in state.items() if k in own}
    fitted.update({k: torch.zeros_like(own[k]) for k in new_blocks if k.endswith((".bn3.weight", ".bn3.bias"))})
    supernet.load_state_dict(fitted, strict=False)
