"""What a data source holds, found before anything is decoded or trained: the counts, classes,
native image size and colour that :mod:`matchnas.defaults` chooses a run's settings from.

A folder is surveyed from its file list and the headers of a sample of its images (Pillow reads the
size and mode without decoding), so a survey of 70 000 files takes seconds; a named source is
loaded (it is small and kept at its native size).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from matchnas.data.datasets import SOURCE_NAMES, load_source
from matchnas.data.folders import GREY_MODES, class_folders, image_files
from matchnas.errors import MatchnasError

SAMPLE = 256  # image headers read for the size and colour statistics of a folder


@dataclass(frozen=True)
class DataSurvey:
    """A source's shape.

    Attributes:
        name: the source's name or folder.
        folder: whether it is a user's folder (labels all used by default) or a named source.
        classes: the class names, in label order.
        labelled: labelled training images per class, in class order.
        unlabelled: images without labels (a folder's ``unlabeled/``; 0 for named sources, whose
            pool is the training images left unlabelled by the split).
        test: labelled test images (0: the source has no test split).
        short_side: the median short side of the images, in pixels.
        short_range: the smallest and largest short side seen.
        grey: whether every image seen is grey (one channel).
        sampled: how many images the size statistics come from.
        seconds_per_image: decoding time of one image (a folder is decoded when the run loads it).
    """

    name: str
    folder: bool
    classes: tuple[str, ...]
    labelled: tuple[int, ...]
    unlabelled: int
    test: int
    short_side: int
    short_range: tuple[int, int]
    grey: bool
    sampled: int
    seconds_per_image: float = 0.0

    @property
    def images(self) -> int:
        return sum(self.labelled) + self.unlabelled + self.test


def survey(source: str, data_dir: str | None = None) -> DataSurvey:
    """Survey a named source or a folder laid out as in :mod:`matchnas.data.folders`.

    Raises:
        MatchnasError: for an unknown name, a path that is not a folder, a folder without
            ``labeled/`` class folders, or a class folder without images.
    """
    if source in SOURCE_NAMES:
        return _survey_named(source, data_dir)
    path = Path(source)
    if path.exists() and not path.is_dir():
        raise MatchnasError(f"{source}: not a folder (the data must be a folder with labeled/<class>/ images)")
    if not path.is_dir():
        raise MatchnasError(f"unknown data set {source!r}: expected one of {', '.join(SOURCE_NAMES)} "
                            f"or an existing folder with a labeled/ sub-folder")
    return _survey_folder(path)


def _survey_named(name: str, data_dir: str | None) -> DataSurvey:
    began = time.perf_counter()
    source = load_source(name, data_dir)
    seconds = time.perf_counter() - began
    train = source.train
    side = int(min(train.images.shape[-2:]))
    n_all = len(train) + (len(source.test) if source.test is not None else 0)
    return DataSurvey(
        name=name, folder=False, classes=source.classes,
        labelled=tuple(int((source.train_labels == k).sum()) for k in range(len(source.classes))),
        unlabelled=len(source.unlabeled) if source.unlabeled is not None else 0,
        test=len(source.test) if source.test is not None else 0,
        short_side=side, short_range=(side, side), grey=train.channels == 1, sampled=len(train),
        seconds_per_image=seconds / max(1, n_all),
    )


def _survey_folder(root: Path) -> DataSurvey:
    labelled_dir = root / "labeled"
    if not labelled_dir.is_dir():
        raise MatchnasError(f"{root}: no labeled/ folder (expected labeled/<class>/ images, "
                            f"optionally unlabeled/ and test/<class>/)")
    folders = class_folders(labelled_dir)
    files = {name: image_files(folder, recursive=False) for name, folder in folders.items()}
    for name, found in files.items():
        if not found:
            raise MatchnasError(f"{folders[name]}: no images (every class folder needs labelled images)")
    test = 0
    if (root / "test").is_dir():
        test = sum(len(image_files(f, recursive=False)) for f in class_folders(root / "test").values())
    unlabelled = image_files(root / "unlabeled", recursive=True) if (root / "unlabeled").is_dir() else []
    everything = [p for found in files.values() for p in found] + unlabelled
    step = max(1, len(everything) // SAMPLE)
    sides, greys = [], []
    began = time.perf_counter()
    for path in everything[::step][:SAMPLE]:
        side, grey = _header(path)
        sides.append(side)
        greys.append(grey)
    return DataSurvey(
        name=str(root), folder=True, classes=tuple(files),
        labelled=tuple(len(found) for found in files.values()), unlabelled=len(unlabelled), test=test,
        short_side=int(statistics.median(sides)), short_range=(min(sides), max(sides)), grey=all(greys),
        sampled=len(sides), seconds_per_image=(time.perf_counter() - began) / len(sides),
    )


def _header(path: Path) -> tuple[int, bool]:
    """The short side and greyness of one image, decoded (as a run's load will) to time it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            grey = image.mode in GREY_MODES
            image.load()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise MatchnasError(f"{path}: cannot read image ({err})") from None
    return min(width, height), grey
