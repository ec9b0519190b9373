"""Seeded label splits: counts, disjointness, determinism, caps, JSON round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from matchnas.data import (
    DataSource,
    ImageSet,
    Split,
    apply_split,
    load_split,
    make_split,
    save_split,
)
from matchnas.errors import MatchnasError

CLASSES = ("a", "b", "c")
COUNTS = (12, 7, 20)  # uneven classes


def toy_source(n_extra: int = 5, counts: tuple[int, ...] = COUNTS) -> DataSource:
    labels = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    # Image i is filled with i (mod 256) so gathered images can be traced back to their index.
    images = (
        torch.arange(len(labels)).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    )
    extra = None
    if n_extra:
        extra_images = torch.full((n_extra, 1, 4, 4), 250, dtype=torch.uint8)
        extra = ImageSet(extra_images, None, CLASSES)
    return DataSource("toy", ImageSet(images, labels, CLASSES), None, extra)


def test_split_exact_counts_per_class_and_disjoint() -> None:
    source = toy_source()
    split = make_split(source, seed=0, n_per_class=3, n_val_per_class=2)
    labels = source.train.labels
    assert labels[list(split.labeled)].bincount().tolist() == [3, 3, 3]
    assert labels[list(split.val)].bincount().tolist() == [2, 2, 2]
    parts = [set(split.labeled), set(split.val), set(split.unlabeled)]
    assert (
        sum(len(p) for p in parts) == len(set().union(*parts)) == len(source.train)
    )  # a partition
    assert split.unlabeled_extra == tuple(range(5))


def test_split_is_deterministic_by_seed() -> None:
    source = toy_source()
    assert make_split(source, seed=3, n_per_class=2) == make_split(source, seed=3, n_per_class=2)
    assert (
        make_split(source, seed=3, n_per_class=2).labeled
        != make_split(source, seed=4, n_per_class=2).labeled
    )


def test_split_fraction_rounds_per_class_with_at_least_one() -> None:
    split = make_split(toy_source(), seed=0, fraction=0.1)
    assert toy_source().train.labels[list(split.labeled)].bincount().tolist() == [
        1,
        1,
        2,
    ]  # 1.2, 0.7, 2.0


def test_split_caps_the_unlabelled_pool_with_a_seed() -> None:
    source = toy_source(n_extra=5)
    split = make_split(source, seed=0, n_per_class=1, max_unlabeled=10)
    assert len(split.unlabeled) + len(split.unlabeled_extra) == 10
    assert make_split(source, seed=0, n_per_class=1, max_unlabeled=10) == split
    assert make_split(source, seed=0, n_per_class=1, max_unlabeled=0).unlabeled == ()


def test_split_too_many_labels_names_class_and_counts() -> None:
    with pytest.raises(
        MatchnasError, match=r"class 'b' has 7 training images, fewer than the 5 labelled \+ 3"
    ):
        make_split(toy_source(), seed=0, n_per_class=5, n_val_per_class=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_per_class": 1, "fraction": 0.5},
        {"n_per_class": 0},
        {"fraction": 1.5},
        {"n_per_class": 1, "n_val_per_class": -1},
    ],
    ids=["neither", "both", "zero", "fraction>1", "negative-val"],
)
def test_split_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(MatchnasError):
        make_split(toy_source(), seed=0, **kwargs)


def test_apply_split_gathers_the_right_images() -> None:
    source = toy_source(n_extra=5)
    split = make_split(source, seed=0, n_per_class=2, n_val_per_class=1)
    sets = apply_split(source, split)
    assert len(sets.labeled) == 6 and len(sets.val) == 3
    assert sets.labeled.images[:, 0, 0, 0].tolist() == list(split.labeled)  # image i holds value i
    assert torch.equal(sets.labeled.labels, source.train.labels[list(split.labeled)])
    assert sets.unlabeled.labels is None and len(sets.unlabeled) == len(split.unlabeled) + 5
    assert sets.unlabeled.images[-5:].eq(250).all()  # the source's own unlabelled images come last
    assert apply_split(source, make_split(source, seed=0, n_per_class=2)).val is None


def test_apply_split_refuses_another_data_set() -> None:
    split = make_split(toy_source(), seed=0, n_per_class=2)
    with pytest.raises(MatchnasError, match="another data set"):
        apply_split(toy_source(counts=(12, 8, 19)), split)  # same size, other labels
    with pytest.raises(MatchnasError, match="another data set"):
        apply_split(toy_source(n_extra=0), split)


def test_split_json_round_trip_is_atomic(tmp_path: Path) -> None:
    split = make_split(toy_source(), seed=7, n_per_class=2, n_val_per_class=1, max_unlabeled=12)
    path = tmp_path / "split.json"
    save_split(split, path)
    save_split(split, path)  # overwriting works too
    assert load_split(path) == split
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temporary file left behind
    assert json.loads(path.read_text())["format"] == "matchnas.split/1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a readable JSON file"),
        ('{"format": "other"}', "not a matchnas split"),
        ('{"format": "matchnas.split/1", "labeled": []}', "missing"),
    ],
    ids=["syntax", "format", "keys"],
)
def test_load_split_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(MatchnasError, match=message) as info:
        load_split(path)
    assert str(path) in str(info.value)


def test_load_split_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    save_split(make_split(toy_source(), seed=0, n_per_class=1), path)
    data = json.loads(path.read_text())
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(MatchnasError, match=r"unknown \['surprise'\]"):
        load_split(path)


def test_split_is_a_hashable_value() -> None:
    split = make_split(toy_source(), seed=0, n_per_class=1)
    assert isinstance(split, Split) and hash(split) == hash(
        make_split(toy_source(), seed=0, n_per_class=1)
    )
