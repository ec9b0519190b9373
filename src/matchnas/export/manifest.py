"""The bundle manifest: one entry per model (config, budget, costs, top-1, input, files), the
header that names the run and the machine, and file digests."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matchnas import cost
from matchnas.export.targets import Target
from matchnas.latency import machine_description
from matchnas.space import SearchSpace

MANIFEST_VERSION = 1


def model_entry(target: Target, top1: float | None, space: SearchSpace, k: int, c: int, classes: list[str],
           preprocess: dict) -> dict[str, Any]:
    """A model's manifest entry, before its files: config, budget, costs, top-1, input."""
    config = target.config
    return {
        "name": f"{target.label}-{config.id}",
        "budget": target.budget,
        "budget_label": target.label if target.budget is not None else None,
        "config_id": config.id,
        "config": config.to_dict(),
        "flops": cost.flops(space, config, k, c),  # 2 per multiply-add, one image
        "params": cost.params(space, config, k, c),
        "peak_memory_bytes": cost.peak_memory(space, config, k, c, batch_size=1),
        "test_top1": top1,
        "resolution": config.resolution,
        # the run's, as preprocess says it: scalars for EfficientNet-Lite, per-channel lists else
        "normalisation": {"mean": preprocess["mean"], "std": preprocess["std"], "scale": "0..255"},
        "preprocess": preprocess,
        "classes": classes,
        "files": {},
    }


def manifest(run_dir: Path, space: SearchSpace, k: int, header: dict, models: list[dict]) -> dict[str, Any]:
    from matchnas import __version__

    return {
        "format_version": MANIFEST_VERSION,
        "matchnas_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir.resolve()),
        "space": space.name,
        "space_digest": space.digest,
        "num_classes": k,
        **header,
        "machine": machine_description(),
        "models": models,
    }


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
