"""A user's own images in folders.

Layout::

    root/labeled/<class>/*        labelled training images, one folder per class (required)
    root/unlabeled/**/*           unlabelled images, at any depth (optional)
    root/test/<class>/*           labelled test images; classes must exist in labeled/ (optional)

Class names are the ``labeled/`` sub-folder names, sorted. Files whose suffix Pillow does not know
as an image format, and hidden files, are skipped; a file with an image suffix that Pillow cannot
decode is an error. Every image is turned upright by its EXIF orientation, converted to RGB (or
to grey, ``L``, when every image of the source is grey), resized so its short side is
``image_size`` (bilinear, antialiased) and centre-cropped to ``image_size x image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from matchnas.data.source import DataSource, ImageSet
from matchnas.errors import MatchnasError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _image_suffixes() -> set[str]:
    return {suffix.lower() for suffix in Image.registered_extensions()}


def image_files(folder: Path, recursive: bool) -> list[Path]:
    suffixes = _image_suffixes()
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.suffix.lower() in suffixes
    )


def _read_image(path: Path, image_size: int) -> tuple[np.ndarray, bool]:
    """One image as uint8 ``image_size x image_size x 3`` and whether it was grey."""
    try:
        with Image.open(path) as file:
            file.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(file)
            grey = img.mode in GREY_MODES
            if img.mode in ("I", "I;16"):  # 16-bit grey (PNG): keep the top 8 bits
                img = img.point(lambda v: v / 256).convert("L")
            rgb = img.convert("RGB")
            fitted = ImageOps.fit(rgb, (image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(fitted, dtype=np.uint8), grey
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise MatchnasError(f"{path}: cannot read image ({err})") from None


def class_folders(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise MatchnasError(f"{folder}: folder not found")
    classes: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise MatchnasError(
                f"{entry}: {folder.name}/ must hold one folder per class, not files"
            )
        classes[entry.name] = entry
    if not classes:
        raise MatchnasError(f"{folder}: no class folders")
    return classes


@dataclass
class _Part:
    """Images read from one sub-folder, before the source's colour mode is known."""

    images: list[np.ndarray] = field(default_factory=list)  # uint8 S x S x 3 each
    greys: list[bool] = field(default_factory=list)
    labels: list[int] | None = None

    def add(self, path: Path, image_size: int, label: int | None = None) -> None:
        image, grey = _read_image(path, image_size)
        self.images.append(image)
        self.greys.append(grey)
        if self.labels is not None and label is not None:
            self.labels.append(label)

    def image_set(self, grey: bool, classes: tuple[str, ...]) -> ImageSet:
        """uint8 ``M x C x S x S``, C = 1 when ``grey`` (every image of the source is grey)."""
        batch = torch.from_numpy(np.stack(self.images)).permute(0, 3, 1, 2)
        labels = None if self.labels is None else torch.tensor(self.labels, dtype=torch.int64)
        return ImageSet((batch[:, :1] if grey else batch).contiguous(), labels, classes)


def _read_labelled(folder: Path, classes: tuple[str, ...], image_size: int) -> _Part:
    part = _Part(labels=[])
    for name, class_dir in class_folders(folder).items():
        if name not in classes:
            raise MatchnasError(
                f"{class_dir}: class {name!r} is not in labeled/ (classes: {', '.join(classes)})"
            )
        files = image_files(class_dir, recursive=False)
        if not files:
            raise MatchnasError(f"{class_dir}: no images")
        for path in files:
            part.add(path, image_size, classes.index(name))
    return part


def _read_unlabelled(folder: Path, image_size: int) -> _Part:
    files = image_files(folder, recursive=True)
    if not files:
        raise MatchnasError(f"{folder}: no images")
    part = _Part()
    for path in files:
        part.add(path, image_size)
    return part


def load_folder(root: str | Path, image_size: int) -> DataSource:
    """Read ``root/labeled``, ``root/unlabeled`` and ``root/test`` (see the module docstring).

    Args:
        root: the data set folder.
        image_size: side in pixels of the square images returned.

    Returns:
        A source whose image sets are uint8 ``N x C x image_size x image_size``, C in {1, 3}.
    """
    root = Path(root)
    if image_size < 1:
        raise MatchnasError(f"image_size must be positive, got {image_size}")
    if not root.is_dir():
        raise MatchnasError(f"{root}: folder not found")
    classes = tuple(class_folders(root / "labeled"))
    parts = {"labeled": _read_labelled(root / "labeled", classes, image_size)}
    if (root / "test").exists():
        parts["test"] = _read_labelled(root / "test", classes, image_size)
    if (root / "unlabeled").exists():
        parts["unlabeled"] = _read_unlabelled(root / "unlabeled", image_size)
    grey = all(g for part in parts.values() for g in part.greys)
    sets = {name: part.image_set(grey, classes) for name, part in parts.items()}
    return DataSource(str(root), sets["labeled"], sets.get("test"), sets.get("unlabeled"))
