"""Which subnets an export writes: the picks of a ``selections.json`` or one ``--subnet`` config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matchnas.errors import MatchnasError
from matchnas.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class Target:
    """One model of the bundle: a config and the budget it answers (None for ``--subnet``)."""

    config: SubnetConfig
    budget: float | None
    label: str  # file-name prefix, e.g. "flops-4.00M"


def subnet_target(space: SearchSpace, subnet: str | Path) -> list[Target]:
    if str(subnet) in ("max", "min"):
        return [Target(space.max() if str(subnet) == "max" else space.min(), None, str(subnet))]
    return [Target(space.config_from_file(subnet, "--subnet"), None, "subnet")]


def selection_targets(path: Path, body: Any, space: SearchSpace, classes: list[str]) -> tuple[list[Target], list[dict], dict]:
    """The picks of a ``selections.json`` (see :func:`matchnas.search.run._write_selections`)."""
    try:
        metric, picks, digest = body["metric"], body["picks"], body["space_digest"]
        if not isinstance(picks, list):
            raise TypeError("picks is not a list")
    except (KeyError, TypeError) as err:
        raise MatchnasError(f"{path}: not a selections file from `matchnas search` ({err!r})") from None
    if digest != space.digest:
        raise MatchnasError(
            f"{path}: made for space '{body.get('space')}' ({digest}), the run's space is '{space.name}' ({space.digest})"
        )
    if body.get("classes") not in (None, classes):
        raise MatchnasError(f"{path}: classes {body['classes']} differ from the run's {classes}")
    from matchnas.search.budgets import format_cost

    targets, skipped = [], []
    for number, pick in enumerate(picks):
        try:
            budget = float(pick["budget"])
        except (KeyError, TypeError, ValueError):
            raise MatchnasError(f"{path}: pick {number} has no numeric budget") from None
        shown = format_cost(budget, metric)
        if pick.get("config") is None:
            cheapest = pick.get("cost")
            reason = "no config fits" + (f": the cheapest costs {format_cost(cheapest, metric)}" if cheapest else "")
            skipped.append({"budget": budget, "budget_label": shown, "reason": reason})
            continue
        config = SubnetConfig.from_dict(pick["config"])
        if config not in space:
            try:
                space.validate(config)
            except MatchnasError as err:
                raise MatchnasError(f"{path}: the pick for budget {shown}: {err}") from None
        targets.append(Target(config, budget, re.sub(r"[^A-Za-z0-9._-]+", "_", f"{metric}-{shown}")))
    if not targets:
        raise MatchnasError(f"{path}: no budget has a config (every budget is below the cheapest config)")
    source = {"selections": str(path), "metric": metric, "unit": body.get("unit"), "strategy": body.get("strategy")}
    return targets, skipped, source
