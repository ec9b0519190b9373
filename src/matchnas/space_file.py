"""Space files: a :class:`~matchnas.space.SearchSpace` read from YAML or a dict, validated.

A space file is one mapping with a block per stage (AttentiveNAS's ``configs/*.yml``); see the
README, "Search spaces", for the keys. Unknown keys, missing keys and bad values are one-line
:class:`MatchnasError` messages that name the file and the offending key or value; nothing is
built from a file that fails. The shipped spaces live in ``spaces/*.yaml`` inside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from matchnas.errors import MatchnasError
from matchnas.io import read_yaml
from matchnas.space import ACTIVATIONS, DEFAULT_ACT, HEADS, PADDINGS, SearchSpace, StageSpace, expand_ratio

_STAGE_KEYS = {"stride", "depth", "width", "kernel", "expand", "per_block", "act", "se"}
_SPACE_KEYS = {
    "name", "backbone", "resolutions", "stem_width", "head_width", "stages", "padding", "stem_act", "head_act",
    "head", "feature_width",
}  # fmt: skip
_OPTIONAL_SPACE_KEYS = {"padding", "stem_act", "head_act", "head", "feature_width"}


# -- loading shipped spaces -------------------------------------------------------------------------
def shipped_spaces() -> list[str]:
    """Names of the spaces that ship with matchnas (``spaces/*.yaml`` in the package)."""
    folder = resources.files("matchnas") / "spaces"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (e.g. ``efficientnet-lite0``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return space_from_yaml(path)
    if str(name_or_path) not in shipped_spaces():
        raise MatchnasError(f"unknown space '{name_or_path}'; shipped: {', '.join(shipped_spaces())}")
    resource = resources.files("matchnas") / "spaces" / f"{name_or_path}.yaml"
    data = yaml.safe_load(resource.read_text())
    return space_from_dict(data, source=f"{name_or_path}.yaml")


def space_from_yaml(path: str | Path) -> SearchSpace:
    """:func:`space_from_dict` on a YAML file, with one-line errors for a missing or unreadable file."""
    return space_from_dict(read_yaml(path, "space file"), source=str(path))


# -- validation -------------------------------------------------------------------------------------
def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    """Validate and build; every error names ``source`` and the offending key or value."""
    if not isinstance(data, dict):
        raise MatchnasError(f"{source}: expected a mapping at the top level")
    _check_keys(data, _SPACE_KEYS, source, required=_SPACE_KEYS - _OPTIONAL_SPACE_KEYS)
    head = data.get("head", "lite")
    if head not in HEADS:
        raise MatchnasError(f"{source}: head must be one of {', '.join(HEADS)}, got {head!r}")
    if (head == "mbv3") != ("feature_width" in data):
        raise MatchnasError(f"{source}: feature_width is needed with head: mbv3 and only then")
    padding = data.get("padding", "symmetric")
    if padding not in PADDINGS:
        raise MatchnasError(f"{source}: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    stages_data = data["stages"]
    if not isinstance(stages_data, list) or not stages_data:
        raise MatchnasError(f"{source}: 'stages' must be a non-empty list")
    stages = tuple(_stage_from_dict(s, f"{source}: stages[{i}]") for i, s in enumerate(stages_data))
    return SearchSpace(
        name=str(data["name"]),
        backbone=str(data["backbone"]),
        resolutions=_choices(data["resolutions"], f"{source}: resolutions", int, minimum=8),
        stem_width=_positive_int(data["stem_width"], f"{source}: stem_width"),
        head_width=_positive_int(data["head_width"], f"{source}: head_width"),
        stages=stages,
        padding=padding,
        stem_act=_activation(data.get("stem_act", DEFAULT_ACT), f"{source}: stem_act"),
        head_act=_activation(data.get("head_act", DEFAULT_ACT), f"{source}: head_act"),
        head=head,
        feature_width=_positive_int(data["feature_width"], f"{source}: feature_width") if head == "mbv3" else 0,
    )


def _stage_from_dict(data: Any, where: str) -> StageSpace:
    if not isinstance(data, dict):
        raise MatchnasError(f"{where}: expected a mapping")
    _check_keys(data, _STAGE_KEYS, where, required={"stride", "depth", "width", "kernel", "expand"})
    stride = data["stride"]
    if stride not in (1, 2):
        raise MatchnasError(f"{where}: stride must be 1 or 2, got {stride!r}")
    depths = _choices(data["depth"], f"{where}: depth", int, minimum=1)
    widths = _choices(data["width"], f"{where}: width", int, minimum=1)
    per_block = data.get("per_block", True)
    if not isinstance(per_block, bool):
        raise MatchnasError(f"{where}: per_block must be true or false, got {per_block!r}")
    n = max(depths)
    kernels = _per_block(data["kernel"], n, f"{where}: kernel", int, per_block)
    expands = _per_block(data["expand"], n, f"{where}: expand", expand_ratio, per_block)
    for k in {k for ks in kernels for k in ks}:
        if k % 2 == 0:
            raise MatchnasError(f"{where}: kernel sizes must be odd, got {k}")
    act = _activation(data.get("act", DEFAULT_ACT), f"{where}: act")
    return StageSpace(stride, depths, widths, kernels, expands, per_block, act, _se_ratio(data.get("se"), where))


def _se_ratio(value: Any, where: str) -> float | None:
    """``se: none`` (or absent) is no squeeze-excite; a ratio in (0, 1] scales the hidden width."""
    if value is None or value == "none":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise MatchnasError(f"{where}: se must be none or a ratio in (0, 1], got {value!r}")
    return float(value)


def _activation(value: Any, where: str) -> str:
    if value not in ACTIVATIONS:
        raise MatchnasError(f"{where} must be one of {', '.join(ACTIVATIONS)}, got {value!r}")
    return value


def _per_block(value: Any, n: int, where: str, kind, per_block: bool) -> tuple[tuple, ...]:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        if not per_block:
            raise MatchnasError(f"{where}: per-block lists need per_block: true")
        if len(value) != n:
            raise MatchnasError(f"{where}: {len(value)} per-block lists, but the deepest choice has {n} blocks")
        return tuple(_choices(v, f"{where}[{i}]", kind, minimum=1) for i, v in enumerate(value))
    return (_choices(value, where, kind, minimum=1),) * n


def _choices(value: Any, where: str, kind, minimum: float) -> tuple:
    if not isinstance(value, list) or not value:
        raise MatchnasError(f"{where}: expected a non-empty list of choices, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise MatchnasError(f"{where}: {v!r} is not a valid number")
        v = kind(v)
        if v < minimum:
            raise MatchnasError(f"{where}: {v} is below the minimum {minimum}")
        out.append(v)
    if len(set(out)) != len(out):
        raise MatchnasError(f"{where}: duplicate choices in {value!r}")
    return tuple(sorted(out))


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MatchnasError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _check_keys(data: dict, allowed: set[str], where: str, required: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise MatchnasError(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required):
        if key not in data:
            raise MatchnasError(f"{where}: missing key '{key}'")
