"""The value types every data source returns.

A source is read once into memory as uint8 tensors at its native resolution (digits 8 x 8,
Fashion-MNIST 28 x 28, CIFAR 32 x 32, user folders at the caller's ``image_size``). Batches are
augmented and resized to the subnet's resolution later, in :mod:`matchnas.data.augment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from matchnas.errors import MatchnasError


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with optional labels.

    Attributes:
        images: uint8, shape ``N x C x H x W``, ``C`` in {1, 3}, values 0..255.
        labels: int64, shape ``N``, values in ``0 .. len(classes) - 1``; ``None`` for unlabelled
            images.
        classes: class names; ``classes[k]`` names label ``k``. Unlabelled sets carry the class
            names of their source too, so a model's outputs can be named.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise MatchnasError(
                f"images must be uint8 N x C x H x W with C in {{1, 3}}, "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels is None:
            return
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise MatchnasError(
                f"labels must be int64 of shape ({images.shape[0]},), "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise MatchnasError(
                f"labels must lie in 0..{len(self.classes) - 1} ({len(self.classes)} classes), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        labelled = "unlabelled" if self.labels is None else "labelled"
        return (
            f"ImageSet({labelled}, images {tuple(self.images.shape)}, {len(self.classes)} classes)"
        )

    @property
    def channels(self) -> int:
        """Number of colour channels: 1 (grey) or 3 (RGB)."""
        return int(self.images.shape[1])


@dataclass(frozen=True, eq=False)
class DataSource:
    """Everything one data set offers, before any label split.

    Attributes:
        name: the data set's name (``"digits"``, ``"fashion-mnist"``, ...) or the folder it came
            from.
        train: the labelled training images (all of them; :mod:`matchnas.data.split` picks the
            few that keep their labels).
        test: the held-out test images with labels, or ``None`` when the source has none.
        unlabeled: extra images that never had labels, or ``None``.
        allow_flip: whether a horizontal flip preserves the class (``False`` for digits).
    """

    name: str
    train: ImageSet
    test: ImageSet | None
    unlabeled: ImageSet | None
    allow_flip: bool = True

    def __post_init__(self) -> None:
        if self.train.labels is None:
            raise MatchnasError(f"data set {self.name!r}: the training images have no labels")
        for part, images in (("test", self.test), ("unlabeled", self.unlabeled)):
            if images is None:
                continue
            if images.classes != self.train.classes:
                raise MatchnasError(
                    f"data set {self.name!r}: {part} classes {images.classes} differ from the "
                    f"training classes {self.train.classes}"
                )
            if images.images.shape[1:] != self.train.images.shape[1:]:
                raise MatchnasError(
                    f"data set {self.name!r}: {part} images are "
                    f"{tuple(images.images.shape[1:])}, training images are "
                    f"{tuple(self.train.images.shape[1:])}"
                )

    @property
    def train_labels(self) -> torch.Tensor:
        """``train.labels``, which a source always has: int64 ``N``."""
        assert self.train.labels is not None  # checked in __post_init__
        return self.train.labels

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, shared by every part of the source."""
        return self.train.classes
