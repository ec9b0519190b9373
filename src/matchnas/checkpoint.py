"""Checkpoints: everything a run needs to continue exactly where it stopped.

The sampler, the batch streams and the augmentations are pure functions of ``(seed, step)``, so a
checkpoint holds no random state: the step, the weights (BN statistics included), the optimizer
and schedule, and the selection index.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from matchnas.errors import MatchnasError
from matchnas.experiment import Experiment, experiment_from_dict
from matchnas.io import atomic_write, check_readable

LATEST = "checkpoint-latest.pt"
FINAL = "checkpoint-final.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a reader never sees a half-written file; on a full disk the
    previous checkpoint stays, and the message says how to go on)."""
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except MatchnasError as err:
        raise MatchnasError(f"{err} (`matchnas train --resume {Path(path).parent}` continues from the "
                            "last checkpoint)") from None


# What every checkpoint of a matchnas run holds; another program's checkpoint lacks some.
REQUIRED_KEYS = ("step", "model", "optimizer", "schedule", "selection_index", "experiment")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`. Only tensors and plain values are unpickled
    (``weights_only``); anything else is refused with one line naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise MatchnasError(f"no checkpoint at {path}")
    check_readable(path, "a checkpoint")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":  # pickle's protocol opcode
            raise MatchnasError(f"{path}: a bare pickle, not a torch checkpoint; refused for safety (unpickling can run code)")
        raise MatchnasError(f"{path}: truncated or corrupted checkpoint (not a complete zip archive, as torch checkpoints are)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MatchnasError(
            f"{path}: holds Python objects besides tensors and plain values; refused for safety (loading it could run code)"
        ) from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, io.UnsupportedOperation, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MatchnasError(f"{path}: truncated or corrupted checkpoint ({reason})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise MatchnasError(f"{path}: not a matchnas checkpoint (no {', '.join(repr(k) for k in missing)})")
    return state


def has_checkpoint(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / LATEST).exists() or (run_dir / FINAL).exists()


# Where a run's files are and what it trains on: may change between a run's start and its resume.
MOVABLE = ("train.device", "data.data_dir")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_belongs(path: Path, state: dict[str, Any], experiment: Experiment, classes: list[str], run_dir: Path) -> None:
    """Refuse, before its weights are loaded, a checkpoint that is not this run's: one whose
    settings (backbone, space, seed, ...) differ from the run's ``experiment.yaml``, or that was
    trained on other classes. Loading it would continue one run's weights under another run's
    settings and step (or fail on a tensor size deep inside PyTorch)."""
    theirs = _flat(experiment_from_dict(state["experiment"], f"{path}: experiment").to_dict())
    ours = _flat(experiment.to_dict())
    for key in sorted(set(theirs) | set(ours)):
        if key not in MOVABLE and theirs.get(key) != ours.get(key):
            raise MatchnasError(f"{path} is not this run's checkpoint: {key} is {theirs.get(key)!r} there and "
                                f"{ours.get(key)!r} in {run_dir / 'experiment.yaml'}; resume from the run's own checkpoint")
    saved = state.get("classes")
    if saved is not None and list(saved) != list(classes):
        raise MatchnasError(f"{path} is not this run's checkpoint: it was trained on {len(saved)} classes "
                            f"({', '.join(map(str, saved[:4]))}{', ...' if len(saved) > 4 else ''}), the run's data has "
                            f"{len(classes)} ({', '.join(map(str, classes[:4]))}{', ...' if len(classes) > 4 else ''})")
