"""The narrowed pool of a run (``pool.json``, MatchNAS-dagger): written by training when
``narrow.proxy`` is set, read by every strategy."""

from __future__ import annotations

from pathlib import Path

from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_text, read_json, to_json
from matchnas.space import SearchSpace, SubnetConfig

POOL_FILE = "pool.json"


def save_pool(run_dir: Path, pool: list[SubnetConfig], records: list[dict], settings: dict) -> None:
    body = {
        "settings": settings,
        "pool": [c.to_dict() for c in pool],
        "scored": [{"config": r["config"].to_dict(), "flops": r["flops"], "score": r["score"]} for r in records],
    }
    atomic_write_text(run_dir / POOL_FILE, to_json(body))  # strict: a proxy score may overflow to inf


def load_pool(run_dir: Path, space: SearchSpace) -> tuple[SubnetConfig, ...] | None:
    """The run's narrowed pool, or None when the run trained on the whole space."""
    path = Path(run_dir) / POOL_FILE
    if not path.exists():
        return None
    body = read_json(path, "the run's narrowed pool")
    if not isinstance(body, dict) or not isinstance(body.get("pool"), list):
        raise MatchnasError(f"{path}: not a narrowed pool (no 'pool' list)")
    pool = tuple(SubnetConfig.from_dict(c) for c in body["pool"])
    for config in pool:
        if config not in space:
            raise MatchnasError(f"{path}: config {config.id} is not in space '{space.name}'")
    return pool
