"""CIFAR-10 and CIFAR-100 from their official "python version" pickle batches.

CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``. CIFAR-100 (``cifar-100-python``): ``train``, ``test`` and ``meta``; the 100 fine
labels are used. Each batch is a pickled dict with ``data`` (uint8 ``N x 3072``, the red, green and
blue 32 x 32 planes in turn) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).

The folder is ``data_dir`` itself or its sub-folder with the official name; without ``data_dir``
it is looked for in the matchnas cache (see :func:`matchnas.data.idx.cache_dir`). Nothing is
downloaded. Pickles are read with an unpickler that only builds plain containers and numpy arrays,
so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matchnas.data.idx import cache_dir
from matchnas.data.source import DataSource, ImageSet
from matchnas.errors import MatchnasError


@dataclass(frozen=True)
class _Layout:
    folder: str  # the official archive's folder name
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


_LAYOUTS = {
    "cifar10": _Layout(
        "cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": _Layout(
        "cifar-100-python",
        train=("train",),
        test=("test",),
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
    ),
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    """Unpickle one batch; keys become ``str`` (the official files were written by Python 2)."""
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except FileNotFoundError:
        raise MatchnasError(f"{path}: file not found") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise MatchnasError(f"{path}: not a readable CIFAR pickle ({err})") from None
    if not isinstance(obj, dict):
        raise MatchnasError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise MatchnasError(f"{path}: no {key!r} entry (has {sorted(batch)})")
    return batch[key]


def _read_batches(
    folder: Path, names: tuple[str, ...], label_key: str, classes: tuple[str, ...]
) -> ImageSet:
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _load_pickle(path)
        data = np.asarray(_field(batch, "data", path))
        batch_labels = np.asarray(_field(batch, label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise MatchnasError(
                f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}"
            )
        if batch_labels.shape != (data.shape[0],):
            raise MatchnasError(f"{path}: {data.shape[0]} images but {batch_labels.shape} labels")
        if batch_labels.size and (batch_labels.min() < 0 or batch_labels.max() >= len(classes)):
            raise MatchnasError(f"{path}: labels outside 0..{len(classes) - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return ImageSet(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes,
    )


def _folder(name: str, layout: _Layout, data_dir: str | Path | None) -> Path:
    base = Path(data_dir) if data_dir is not None else cache_dir()
    for folder in (base, base / layout.folder):
        if (folder / layout.meta).is_file():
            return folder
    raise MatchnasError(
        f"{name}: no {layout.meta} in {base} or {base / layout.folder}; unpack the official "
        f"python-version archive there (or pass --data-dir)"
    )


def load_cifar(name: str, data_dir: str | Path | None = None) -> DataSource:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``), uint8 ``3 x 32 x 32``.

    Returns:
        50 000 training and 10 000 test images with the official class names.
    """
    if name not in _LAYOUTS:
        raise MatchnasError(f"unknown CIFAR variant {name!r}: expected one of {sorted(_LAYOUTS)}")
    layout = _LAYOUTS[name]
    folder = _folder(name, layout, data_dir)
    meta = _load_pickle(folder / layout.meta)
    raw_names = _field(meta, layout.names_key, folder / layout.meta)
    classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw_names)
    return DataSource(
        name,
        train=_read_batches(folder, layout.train, layout.label_key, classes),
        test=_read_batches(folder, layout.test, layout.label_key, classes),
        unlabeled=None,
    )
