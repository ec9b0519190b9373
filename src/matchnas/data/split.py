"""Seeded label splits: which training images keep their labels.

From a source's labelled training set a :class:`Split` picks, per class, the images that keep their
labels (``n_per_class`` each, or a ``fraction`` of each class), then optionally ``n_val_per_class``
validation images from the rest; everything left becomes the unlabelled pool, together with the
source's own unlabelled images, optionally capped at ``max_unlabeled`` (a seeded random subset).

A split is a frozen value of sorted index tuples, written to a run folder as JSON so the run
records exactly which images had labels. :func:`apply_split` turns it into image sets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from matchnas.data.source import DataSource, ImageSet
from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_text

_FORMAT = "matchnas.split/1"


@dataclass(frozen=True)
class Split:
    """Index sets of one label split.

    Attributes:
        labeled: indices into ``source.train`` that keep their labels (sorted).
        val: indices into ``source.train`` held out for validation (sorted; may be empty).
        unlabeled: indices into ``source.train`` whose labels are hidden (sorted).
        unlabeled_extra: indices into ``source.unlabeled`` in the unlabelled pool (sorted).
        seed: the seed that drew the split.
        n_train: ``len(source.train)`` when drawn, checked when applied.
        n_extra: ``len(source.unlabeled)`` (0 when none) when drawn, checked when applied.
        labels_sha1: SHA-1 of the training labels (int64 bytes), so a split is never applied to
            another data set of the same size.
    """

    labeled: tuple[int, ...]
    val: tuple[int, ...]
    unlabeled: tuple[int, ...]
    unlabeled_extra: tuple[int, ...]
    seed: int
    n_train: int
    n_extra: int
    labels_sha1: str


@dataclass(frozen=True, eq=False)
class SplitSets:
    """A split applied to its source.

    Attributes:
        labeled: the images that keep their labels.
        val: the validation images with labels, or ``None`` when the split has none.
        unlabeled: the pool, labels ``None``: first ``source.train[split.unlabeled]`` (whose hidden
            labels are ``source.train.labels[split.unlabeled]``, e.g. to measure pseudo-label
            accuracy), then ``source.unlabeled[split.unlabeled_extra]``. May hold zero images.
    """

    labeled: ImageSet
    val: ImageSet | None
    unlabeled: ImageSet


def _labels_sha1(labels: torch.Tensor) -> str:
    return hashlib.sha1(labels.numpy().astype("<i8").tobytes()).hexdigest()


def labelled_in_class(n_images: int, n_per_class: int | None, fraction: float | None, n_val_per_class: int) -> int:
    """How many of a class's ``n_images`` keep their labels: ``n_per_class``, or ``fraction`` of
    the images not held out for validation (at least 1; ``1.0`` labels all of them)."""
    if n_per_class is not None:
        return n_per_class
    return max(1, round(fraction * (n_images - n_val_per_class)))


def make_split(
    source: DataSource,
    seed: int,
    n_per_class: int | None = None,
    fraction: float | None = None,
    n_val_per_class: int = 0,
    max_unlabeled: int | None = None,
) -> Split:
    """Draw a split of ``source.train``; the same arguments always give the same split.

    Args:
        source: the data source.
        seed: seeds a private numpy generator (no global random state is used).
        n_per_class: labelled images per class. Exactly one of ``n_per_class`` and ``fraction``.
        fraction: in (0, 1]: ``round(fraction * (n_c - n_val_per_class))`` labelled images of a
            class of ``n_c``, at least 1 (``1.0``: every image not held out for validation).
        n_val_per_class: validation images per class, drawn from the images not labelled.
        max_unlabeled: cap on the pool (training remainder plus ``source.unlabeled``); ``None``
            keeps all.

    Raises:
        MatchnasError: for bad arguments, or a class with fewer images than requested.
    """
    if (n_per_class is None) == (fraction is None):
        raise MatchnasError("give exactly one of n_per_class and fraction")
    if n_per_class is not None and n_per_class < 1:
        raise MatchnasError(f"n_per_class must be at least 1, got {n_per_class}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise MatchnasError(f"fraction must be in (0, 1], got {fraction}")
    if n_val_per_class < 0:
        raise MatchnasError(f"n_val_per_class must be at least 0, got {n_val_per_class}")
    if max_unlabeled is not None and max_unlabeled < 0:
        raise MatchnasError(f"max_unlabeled must be at least 0, got {max_unlabeled}")

    rng = np.random.default_rng(seed)
    labels = source.train_labels.numpy()
    labeled, val, rest = [], [], []
    for k, name in enumerate(source.classes):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_lab = labelled_in_class(len(members), n_per_class, fraction, n_val_per_class)
        if n_lab + n_val_per_class > len(members):
            raise MatchnasError(
                f"class {name!r} has {len(members)} training images, fewer than the "
                f"{n_lab} labelled + {n_val_per_class} validation images asked for"
            )
        labeled.append(members[:n_lab])
        val.append(members[n_lab : n_lab + n_val_per_class])
        rest.append(members[n_lab + n_val_per_class :])

    n_extra = 0 if source.unlabeled is None else len(source.unlabeled)
    rest_idx = np.concatenate(rest)
    # The pool as one index space: training images first, then the source's unlabelled images.
    pool = np.concatenate([rest_idx, len(source.train) + np.arange(n_extra)])
    if max_unlabeled is not None and len(pool) > max_unlabeled:
        pool = rng.choice(pool, size=max_unlabeled, replace=False)
    pool.sort()
    in_train = pool < len(source.train)

    def as_tuple(idx: np.ndarray) -> tuple[int, ...]:
        return tuple(int(i) for i in np.sort(idx))

    return Split(
        labeled=as_tuple(np.concatenate(labeled)),
        val=as_tuple(np.concatenate(val)),
        unlabeled=as_tuple(pool[in_train]),
        unlabeled_extra=as_tuple(pool[~in_train] - len(source.train)),
        seed=seed,
        n_train=len(source.train),
        n_extra=n_extra,
        labels_sha1=_labels_sha1(source.train_labels),
    )


def apply_split(source: DataSource, split: Split) -> SplitSets:
    """Gather the images of a split.

    Raises:
        MatchnasError: when the split was drawn on a different data set.
    """
    n_extra = 0 if source.unlabeled is None else len(source.unlabeled)
    if (split.n_train, split.n_extra) != (len(source.train), n_extra) or split.labels_sha1 != (
        _labels_sha1(source.train_labels)
    ):
        raise MatchnasError(
            f"the split was drawn on another data set ({split.n_train} training + "
            f"{split.n_extra} unlabelled images) than {source.name!r} "
            f"({len(source.train)} + {n_extra}, or different labels)"
        )
    train = source.train

    def labelled(idx: tuple[int, ...]) -> ImageSet:
        index = torch.tensor(idx, dtype=torch.int64)
        return ImageSet(train.images[index], source.train_labels[index], train.classes)

    pool = [train.images[torch.tensor(split.unlabeled, dtype=torch.int64)]]
    if source.unlabeled is not None:
        pool.append(source.unlabeled.images[torch.tensor(split.unlabeled_extra, dtype=torch.int64)])
    return SplitSets(
        labeled=labelled(split.labeled),
        val=labelled(split.val) if split.val else None,
        unlabeled=ImageSet(torch.cat(pool), None, train.classes),
    )


def save_split(split: Split, path: str | Path) -> None:
    """Write ``split`` as JSON, atomically (temporary file in the same folder, then rename)."""
    text = json.dumps({"format": _FORMAT, **asdict(split)}, separators=(",", ":"))
    atomic_write_text(path, text + "\n")


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`save_split`.

    Raises:
        MatchnasError: naming the file when it is missing, not JSON, or not a split.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatchnasError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MatchnasError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
        raise MatchnasError(f"{path}: not a matchnas split (expected format {_FORMAT!r})")
    names = {f.name for f in fields(Split)}
    if set(data) != names:
        raise MatchnasError(
            f"{path}: split keys differ: missing {sorted(names - set(data))}, "
            f"unknown {sorted(set(data) - names)}"
        )
    try:
        return Split(
            **{
                k: tuple(int(i) for i in data[k])
                for k in ("labeled", "val", "unlabeled", "unlabeled_extra")
            },
            seed=int(data["seed"]),
            n_train=int(data["n_train"]),
            n_extra=int(data["n_extra"]),
            labels_sha1=str(data["labels_sha1"]),
        )
    except (TypeError, ValueError) as err:
        raise MatchnasError(f"{path}: malformed split ({err})") from None
