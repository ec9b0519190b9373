"""``--val-dir``: a labelled folder as the validation split of a run, its classes matched to the
run's by name.

A folder class is the run's class of the same name, or, since a folder name cannot hold ``/``,
the run's class whose name with every ``/`` written as ``_`` is the folder's name (Fashion-MNIST's
``T-shirt/top`` is the folder ``T-shirt_top``). Folder classes are read sorted, a named source's in
label order: labels are renumbered to the run's order. When the folder's names or order differ
from the run's, :func:`load_validation_dir` says so in one line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from matchnas.data import ImageSet, load_folder
from matchnas.errors import MatchnasError


def folder_name(class_name: str) -> str:
    """The folder a class's images go in: its name with every ``/`` written as ``_``."""
    return class_name.replace("/", "_")


def match_classes(folders: tuple[str, ...], classes: tuple[str, ...]) -> list[int]:
    """For each folder class, the index of the run's class it holds (module docstring)."""
    by_folder: dict[str, list[int]] = {}
    for k, name in enumerate(classes):
        by_folder.setdefault(folder_name(name), []).append(k)
    matched = []
    for name in folders:
        if name in classes:
            matched.append(classes.index(name))
        elif len(by_folder.get(name, ())) == 1:
            matched.append(by_folder[name][0])
        elif name in by_folder:
            raise MatchnasError(f"--val-dir folder '{name}' could be any of the run's classes "
                                f"{[classes[k] for k in by_folder[name]]}")
        else:
            expected = ", ".join(folder_name(c) for c in classes)
            raise MatchnasError(f"--val-dir class '{name}' is not one of the run's classes (folders: {expected})")
    if len(set(matched)) != len(matched):
        raise MatchnasError(f"--val-dir folders {list(folders)} name one of the run's classes twice")
    return matched


def load_validation_dir(val_dir: str | Path, image_size: int, classes: tuple[str, ...]) -> tuple[ImageSet, str | None]:
    """The images of ``val_dir/labeled/<class>/`` labelled in the run's class order, and a one-line
    note when the folders' names or order differ from the run's classes (else None)."""
    found = load_folder(val_dir, image_size).train
    matched = match_classes(found.classes, classes)
    labels = torch.tensor(matched, dtype=torch.int64)[found.labels]
    note = None
    if list(found.classes) != list(classes):
        renamed = [f"'{f}' is '{classes[k]}'" for f, k in zip(found.classes, matched) if f != classes[k]]
        missing = len(classes) - len(matched)
        note = ("--val-dir: folder classes matched to the run's by name"
                + (f" ({', '.join(renamed)}: '/' is written '_')" if renamed else "")
                + ", labels in the run's class order"
                + (f"; {missing} of the run's {len(classes)} classes have no folder" if missing else ""))
    return ImageSet(found.images, labels, tuple(classes)), note
