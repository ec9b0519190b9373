"""One entry point to every data source: :func:`load_source`.

Sources by name:

- ``digits`` (default): scikit-learn's embedded 8 x 8 digits (1 797 images, no network), values
  0..16 scaled to 0..255, one channel. It has no official split, so a fixed stratified 80/20 split
  (seed 0) gives 1 437 training and 360 test images. Not flipped by the weak view.
- ``fashion-mnist``: see :mod:`matchnas.data.idx`.
- ``cifar10``, ``cifar100``: see :mod:`matchnas.data.cifar`.
- any existing folder: a user's images, see :mod:`matchnas.data.folders`.

Every source keeps its native resolution, except folders, which are read at ``image_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits
from sklearn.model_selection import train_test_split

from matchnas.data.cifar import load_cifar
from matchnas.data.folders import load_folder
from matchnas.data.idx import load_fashion_mnist
from matchnas.data.source import DataSource, ImageSet
from matchnas.errors import MatchnasError

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits() -> DataSource:
    """scikit-learn's digits as uint8 ``1 x 8 x 8`` images, classes ``"0"`` .. ``"9"``."""
    bunch = _sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    classes = tuple(str(k) for k in range(10))

    def part(idx: np.ndarray) -> ImageSet:
        idx = np.sort(idx)
        return ImageSet(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]), classes)

    return DataSource("digits", part(train_idx), part(test_idx), unlabeled=None, allow_flip=False)


_BY_NAME: dict[str, Callable[[str | None], DataSource]] = {
    "digits": lambda data_dir: load_digits(),
    "fashion-mnist": load_fashion_mnist,
    "cifar10": lambda data_dir: load_cifar("cifar10", data_dir),
    "cifar100": lambda data_dir: load_cifar("cifar100", data_dir),
}
SOURCE_NAMES = tuple(_BY_NAME)


def load_source(
    name_or_path: str = "digits", data_dir: str | None = None, image_size: int = 32
) -> DataSource:
    """Load a data source by name, or a user's folder by path.

    Args:
        name_or_path: one of :data:`SOURCE_NAMES` or a folder laid out as in
            :mod:`matchnas.data.folders`.
        data_dir: where a named source's files are (Fashion-MNIST, CIFAR); ``None`` searches the
            default places. Ignored by ``digits`` and folders.
        image_size: side in pixels that a folder's images are resized to; named sources keep their
            native size.

    Raises:
        MatchnasError: for an unknown name, a missing folder or unreadable files.
    """
    if name_or_path in _BY_NAME:
        return _BY_NAME[name_or_path](data_dir)
    if Path(name_or_path).is_dir():
        return load_folder(name_or_path, image_size)
    raise MatchnasError(
        f"unknown data set {name_or_path!r}: expected one of {', '.join(SOURCE_NAMES)} "
        f"or an existing folder with a labeled/ sub-folder"
    )
