"""Search spaces and subnet configs: plain data, no modules.

A :class:`SearchSpace` lists, for every stage of an MBConv network, the allowed depths (number of
blocks), output widths, and per block the allowed depthwise kernel sizes and expansion ratios, plus
the allowed input resolutions (docs/method.md, "Objects"). Choices may differ per block (OFA style); a
stage with ``per_block: false`` chooses its kernel and expansion once for all its blocks (TOFA,
"3.3 TOFA Search Space").

A :class:`SubnetConfig` is one choice for every dimension: frozen, hashable, with a stable JSON
form. It stores the choices of the *active* blocks only (``len(kernel) == depth``), so two configs
that build the same network are equal.

Every random choice takes an explicit ``numpy.random.Generator``; sampling is uniform per
dimension (depth, width, then each block's kernel and expansion), as in OFA, not uniform over
configs.

Reading a space from YAML or a dict, its validation and the shipped spaces are in
:mod:`matchnas.space_file` (``load_space``, ``shipped_spaces``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matchnas.errors import MatchnasError

# What a block is, as data (timm's act_layer): EfficientNet-Lite is relu6 throughout; a space
# without the keys means relu6, and to_dict leaves the default out so older digests hold.
ACTIVATIONS = ("relu6", "hswish", "relu")
DEFAULT_ACT = "relu6"
PADDINGS = ("same", "symmetric")
# The head after the last stage: "lite" is conv 1x1 + BN + act -> pool -> linear (EfficientNet-Lite);
# "mbv3" is MobileNetV3's efficient last stage (Howard et al. 2019, section 5.3): conv 1x1 + BN +
# act -> pool -> conv 1x1 to ``feature_width`` WITH bias, no BN + act -> linear.
HEADS = ("lite", "mbv3")


@dataclass(frozen=True)
class StageConfig:
    """One stage of a subnet: ``depth`` blocks of output width ``width`` (channels).

    ``kernel[i]`` and ``expand[i]`` are block ``i``'s depthwise kernel size and expansion ratio
    (hidden channels = ``round(expand * input channels)``); both have length ``depth``.
    """

    depth: int
    width: int
    kernel: tuple[int, ...]
    expand: tuple[float, ...]


@dataclass(frozen=True)
class SubnetConfig:
    """A subnet: input resolution (pixels, square) and one :class:`StageConfig` per stage."""

    resolution: int
    stages: tuple[StageConfig, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "stages": [
                {"depth": s.depth, "width": s.width, "kernel": list(s.kernel), "expand": list(s.expand)}
                for s in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubnetConfig:
        try:
            stages = tuple(
                StageConfig(
                    depth=int(s["depth"]),
                    width=int(s["width"]),
                    kernel=tuple(int(k) for k in s["kernel"]),
                    expand=tuple(expand_ratio(e) for e in s["expand"]),
                )
                for s in data["stages"]
            )
            return cls(resolution=int(data["resolution"]), stages=stages)
        except (KeyError, TypeError, ValueError) as err:
            raise MatchnasError(f"malformed subnet config: {err!r}") from None

    def to_json(self) -> str:
        """Stable, compact JSON: equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """A short stable identifier (first 10 hex digits of the JSON's SHA-1)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage. ``kernels[i]``/``expands[i]`` are block ``i``'s choices, for every
    block up to ``max(depths)``; with ``per_block=False`` they are the same for every block and one
    choice serves the whole stage."""

    stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[float, ...], ...]
    per_block: bool = True
    act: str = DEFAULT_ACT  # after the expansion and depthwise convs (ACTIVATIONS)
    se: float | None = None  # squeeze-excite ratio of the hidden width (MobileNetV3: 0.25), None: no SE

    def residual(self, block: int, widths_in: tuple[int, ...]) -> bool:
        """Whether ``block`` adds its input: every block but the first, and the first too when its
        input and output widths are one fixed, equal value at stride 1 (MobileNetV3's first block;
        timm's ``has_residual``). Fixed by the space, never by the sampled widths."""
        return block > 0 or (self.stride == 1 and len(widths_in) == 1 and self.widths == widths_in)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def num_configs(self) -> int:
        if not self.per_block:
            return len(self.depths) * len(self.widths) * len(self.kernels[0]) * len(self.expands[0])
        total = 0
        for d in self.depths:
            total += len(self.widths) * math.prod(len(self.kernels[i]) * len(self.expands[i]) for i in range(d))
        return total


@dataclass(frozen=True)
class SearchSpace:
    """A search space over an MBConv network (see the module docstring).

    ``stem_width`` and ``head_width`` are fixed channel counts of the stem conv and the final 1x1
    conv; they belong to the maxnet's shape, not to the search.

    ``padding`` is how strided convolutions pad, a property of the backbone's training: ``"same"``
    (TensorFlow, e.g. EfficientNet-Lite: computed from the input size, asymmetric at stride 2 on
    even sizes) or ``"symmetric"`` (``k // 2``, PyTorch-trained networks). A space without the key
    is symmetric: every space written before the key existed meant that, so runs trained then keep
    their function.
    """

    name: str
    backbone: str
    resolutions: tuple[int, ...]
    stem_width: int
    head_width: int
    stages: tuple[StageSpace, ...]
    padding: str = "symmetric"
    stem_act: str = DEFAULT_ACT
    head_act: str = DEFAULT_ACT
    head: str = "lite"  # HEADS
    feature_width: int = 0  # the "mbv3" head's post-pool conv width (1280 for MobileNetV3-Large); 0 for "lite"

    def widths_into(self, stage: int) -> tuple[int, ...]:
        """The width choices entering ``stage`` (the stem's width, or the previous stage's)."""
        return (self.stem_width,) if stage == 0 else self.stages[stage - 1].widths

    def residual(self, stage: int, block: int) -> bool:
        """Whether block ``block`` of ``stage`` has a residual addition (:meth:`StageSpace.residual`)."""
        return self.stages[stage].residual(block, self.widths_into(stage))

    # -- construction -------------------------------------------------------------------------
    # A space is built from a file or a dict by matchnas.space_file (space_from_dict,
    # space_from_yaml, load_space), which sits above this module: a value never reads files.
    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            per_block_lists = len(set(s.kernels)) > 1 or len(set(s.expands)) > 1
            stages.append(
                {
                    "stride": s.stride,
                    "depth": list(s.depths),
                    "width": list(s.widths),
                    "kernel": [list(k) for k in s.kernels] if per_block_lists else list(s.kernels[0]),
                    "expand": [list(e) for e in s.expands] if per_block_lists else list(s.expands[0]),
                    "per_block": s.per_block,
                    **({"act": s.act} if s.act != DEFAULT_ACT else {}),
                    **({"se": s.se} if s.se is not None else {}),
                }
            )
        return {
            "name": self.name,
            "backbone": self.backbone,
            "resolutions": list(self.resolutions),
            "stem_width": self.stem_width,
            "head_width": self.head_width,
            "padding": self.padding,
            **{key: act for key, act in (("stem_act", self.stem_act), ("head_act", self.head_act)) if act != DEFAULT_ACT},
            **({"head": self.head, "feature_width": self.feature_width} if self.head != "lite" else {}),
            "stages": stages,
        }

    @property
    def digest(self) -> str:
        """Fingerprint of the choices and the padding (not the name): configs carry it to detect a
        foreign space. Symmetric padding is left out, so digests made before the key existed hold."""
        body = self.to_dict()
        body.pop("name")
        if body["padding"] == "symmetric":
            body.pop("padding")
        return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    # -- the configs ------------------------------------------------------------------------------
    def max(self) -> SubnetConfig:
        return self._extreme(max)

    def min(self) -> SubnetConfig:
        return self._extreme(min)

    def _extreme(self, pick) -> SubnetConfig:
        stages = []
        for s in self.stages:
            d = pick(s.depths)
            stages.append(
                StageConfig(
                    depth=d,
                    width=pick(s.widths),
                    kernel=tuple(pick(s.kernels[i]) for i in range(d)),
                    expand=tuple(pick(s.expands[i]) for i in range(d)),
                )
            )
        return SubnetConfig(resolution=pick(self.resolutions), stages=tuple(stages))

    def sample(self, rng: np.random.Generator) -> SubnetConfig:
        """A random config: every dimension drawn uniformly from its choices."""
        return SubnetConfig(
            resolution=_pick(rng, self.resolutions),
            stages=tuple(self._sample_stage(s, rng) for s in self.stages),
        )

    @staticmethod
    def _sample_stage(s: StageSpace, rng: np.random.Generator) -> StageConfig:
        d = _pick(rng, s.depths)
        width = _pick(rng, s.widths)
        if s.per_block:
            kernel = tuple(_pick(rng, s.kernels[i]) for i in range(d))
            expand = tuple(_pick(rng, s.expands[i]) for i in range(d))
        else:
            kernel = (_pick(rng, s.kernels[0]),) * d
            expand = (_pick(rng, s.expands[0]),) * d
        return StageConfig(depth=d, width=width, kernel=kernel, expand=expand)

    def mutate(self, config: SubnetConfig, rng: np.random.Generator, prob: float = 0.1) -> SubnetConfig:
        """Resample each dimension with probability ``prob`` (OFA's evolution mutation)."""
        self.validate(config)
        resolution = _pick(rng, self.resolutions) if rng.random() < prob else config.resolution
        stages = []
        for s, c in zip(self.stages, config.stages):
            fresh = self._sample_stage(s, rng)
            depth = fresh.depth if rng.random() < prob else c.depth
            width = fresh.width if rng.random() < prob else c.width
            if s.per_block:
                kernel = tuple(
                    _pick(rng, s.kernels[i]) if i >= c.depth or rng.random() < prob else c.kernel[i]
                    for i in range(depth)
                )
                expand = tuple(
                    _pick(rng, s.expands[i]) if i >= c.depth or rng.random() < prob else c.expand[i]
                    for i in range(depth)
                )
            else:
                kernel = (fresh.kernel[0] if rng.random() < prob else c.kernel[0],) * depth
                expand = (fresh.expand[0] if rng.random() < prob else c.expand[0],) * depth
            stages.append(StageConfig(depth=depth, width=width, kernel=kernel, expand=expand))
        return SubnetConfig(resolution=resolution, stages=tuple(stages))

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: np.random.Generator) -> SubnetConfig:
        """Uniform crossover: each dimension (and each block's kernel/expansion) from ``a`` or ``b``.
        A block that only the deeper parent has takes that parent's choice."""
        self.validate(a)
        self.validate(b)
        coin = lambda: rng.random() < 0.5  # noqa: E731
        stages = []
        for s, ca, cb in zip(self.stages, a.stages, b.stages):
            depth = ca.depth if coin() else cb.depth
            width = ca.width if coin() else cb.width
            if s.per_block:
                blocks = []
                for i in range(depth):
                    parents = [c for c in (ca, cb) if i < c.depth]
                    blocks.append((_pick(rng, parents).kernel[i], _pick(rng, parents).expand[i]))
                kernel, expand = tuple(k for k, _ in blocks), tuple(e for _, e in blocks)
            else:
                kernel = ((ca if coin() else cb).kernel[0],) * depth
                expand = ((ca if coin() else cb).expand[0],) * depth
            stages.append(StageConfig(depth=depth, width=width, kernel=kernel, expand=expand))
        resolution = a.resolution if coin() else b.resolution
        return SubnetConfig(resolution=resolution, stages=tuple(stages))

    def validate(self, config: SubnetConfig) -> None:
        """Raise :class:`MatchnasError` naming the first choice of ``config`` outside this space."""
        problem = self._violation(config)
        if problem:
            raise MatchnasError(f"config {config.id} is not in space '{self.name}': {problem}")

    def __contains__(self, config: object) -> bool:
        return isinstance(config, SubnetConfig) and self._violation(config) is None

    def _violation(self, c: SubnetConfig) -> str | None:
        if c.resolution not in self.resolutions:
            return f"resolution {c.resolution} not in {list(self.resolutions)}"
        if len(c.stages) != len(self.stages):
            return f"{len(c.stages)} stages, the space has {len(self.stages)}"
        for i, (s, sc) in enumerate(zip(self.stages, c.stages)):
            if sc.depth not in s.depths:
                return f"stage {i} depth {sc.depth} not in {list(s.depths)}"
            if sc.width not in s.widths:
                return f"stage {i} width {sc.width} not in {list(s.widths)}"
            if len(sc.kernel) != sc.depth or len(sc.expand) != sc.depth:
                return f"stage {i} needs one kernel and one expand per block ({sc.depth})"
            for b in range(sc.depth):
                if sc.kernel[b] not in s.kernels[b]:
                    return f"stage {i} block {b} kernel {sc.kernel[b]} not in {list(s.kernels[b])}"
                if sc.expand[b] not in s.expands[b]:
                    return f"stage {i} block {b} expand {sc.expand[b]} not in {list(s.expands[b])}"
            if not s.per_block and (len(set(sc.kernel)) > 1 or len(set(sc.expand)) > 1):
                return f"stage {i} chooses kernel and expand once per stage (per_block: false)"
        return None

    def num_configs(self) -> int:
        """The exact number of distinct configs."""
        return len(self.resolutions) * math.prod(s.num_configs() for s in self.stages)

    # -- configs as files -----------------------------------------------------------------------
    def config_to_json(self, config: SubnetConfig) -> str:
        """JSON that records which space the config belongs to (by name and digest)."""
        self.validate(config)
        body = {"space": self.name, "space_digest": self.digest, **config.to_dict()}
        return json.dumps(body, indent=1, sort_keys=True)

    def config_from_json(self, text: str, source: str = "config") -> SubnetConfig:
        """Parse a config JSON; refuse one made for another space, or one outside this space."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise MatchnasError(f"{source}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(data, dict):
            raise MatchnasError(f"{source}: expected a JSON object")
        digest = data.get("space_digest")
        if digest is not None and digest != self.digest:
            raise MatchnasError(
                f"{source}: made for space '{data.get('space')}' ({digest}), "
                f"not for '{self.name}' ({self.digest})"
            )
        config = SubnetConfig.from_dict(data)
        problem = self._violation(config)
        if problem:
            raise MatchnasError(f"{source}: not in space '{self.name}': {problem}")
        return config

    def config_from_file(self, path: str | Path, what: str = "config file") -> SubnetConfig:
        """:meth:`config_from_json` on a file, with one-line errors for a missing or binary file."""
        from matchnas.io import read_text

        return self.config_from_json(read_text(path, f"{what} (a subnet config JSON)"), source=str(path))


def expand_ratio(v: Any) -> float:
    """Expansion ratios: integral values are kept as ``int`` so JSON stays ``6``, not ``6.0``."""
    v = float(v)
    return int(v) if v.is_integer() else v


def _pick(rng: np.random.Generator, choices):
    return choices[int(rng.integers(len(choices)))]
