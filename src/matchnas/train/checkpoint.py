"""Checkpoints: everything a run needs to continue exactly where it stopped.

The sampler, the batch streams and the augmentations are pure functions of ``(seed, step)``, so a
checkpoint holds no random state: the step, the weights (BN statistics included), the optimizer
and schedule, and the selection index.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from matchnas.errors import MatchnasError
from matchnas.io import atomic_write

LATEST = "checkpoint-latest.pt"
FINAL = "checkpoint-final.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a reader never sees a half-written file)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MatchnasError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation, ValueError) as err:
        raise MatchnasError(f"{path}: truncated or corrupted checkpoint ({str(err).splitlines()[0]})") from None
