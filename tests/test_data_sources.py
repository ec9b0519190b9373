"""Data sources: IDX and Fashion-MNIST, CIFAR pickles, digits, user folders, load_source."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matchnas.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    SOURCE_NAMES,
    load_cifar,
    load_digits,
    load_fashion_mnist,
    load_source,
    read_idx,
)
from matchnas.data import idx as idx_module
from matchnas.errors import MatchnasError

_IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file, written independently of the reader under test."""
    code = _IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- IDX -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype is np.uint8:
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5) * 8
    got = read_idx(write_idx(tmp_path / "a-idx3", array, compress))
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, array)


def test_idx_reads_gzip_by_content_not_name(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=True)  # no .gz suffix
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda good: good[:-5], "file has"),  # truncated data
        (lambda good: good + b"\x00", "file has"),  # trailing bytes
        (lambda good: good[:6], "truncated IDX header"),
        (lambda good: b"\x01\x02" + good[2:], "bad magic"),
        (lambda good: good[:2] + b"\x42" + good[3:], "bad magic"),  # unknown type code
        (lambda good: gzip.compress(good)[:-12], "cannot read"),  # truncated gzip stream
    ],
    ids=["truncated", "trailing", "short-header", "magic", "type-code", "truncated-gz"],
)
def test_idx_corrupt_file_error_names_file(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content(idx_bytes(np.zeros((4, 3, 3), dtype=np.uint8))))
    with pytest.raises(MatchnasError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(MatchnasError, match="not found"):
        read_idx(tmp_path / "nope")


# --- Fashion-MNIST -------------------------------------------------------------------------------


def fake_fashion_files(folder: Path, compress: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if compress else stem), array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_fashion_mnist_from_data_dir(tmp_path: Path, compress: bool) -> None:
    arrays = fake_fashion_files(tmp_path, compress)
    source = load_source("fashion-mnist", data_dir=str(tmp_path))
    assert source.classes == FASHION_MNIST_CLASSES and len(FASHION_MNIST_CLASSES) == 10
    assert source.train.images.shape == (20, 1, 28, 28) and source.train.images.dtype == torch.uint8
    assert source.test is not None and source.test.labels.tolist() == list(range(9, -1, -1))
    np.testing.assert_array_equal(
        source.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"]
    )
    assert source.allow_flip


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_real_files_from_debian() -> None:
    source = load_fashion_mnist()
    assert source.train.images.shape == (60000, 1, 28, 28) and len(source.test) == 10000
    assert source.train_labels.bincount().tolist() == [6000] * 10


def test_fashion_mnist_download_is_atomic_and_checked(tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    fake_fashion_files(mirror, compress=True)
    md5 = {
        stem: hashlib.md5((mirror / f"{stem}.gz").read_bytes()).hexdigest()
        for stem in idx_module._FASHION_MNIST_MD5
    }
    monkeypatch.setattr(idx_module, "FASHION_MNIST_URL", mirror.as_uri() + "/")
    monkeypatch.setattr(idx_module, "_FASHION_MNIST_MD5", md5)
    target = tmp_path / "data"
    source = load_fashion_mnist(target)
    assert len(source.train) == 20
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{stem}.gz" for stem in md5)

    monkeypatch.setattr(idx_module, "_FASHION_MNIST_MD5", {stem: "0" * 32 for stem in md5})
    with pytest.raises(MatchnasError, match="MD5"):
        load_fashion_mnist(tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []  # no partial file left behind


def test_fashion_mnist_without_network_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def offline(url: str, timeout: float):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(idx_module.urllib.request, "urlopen", offline)
    with pytest.raises(MatchnasError, match="cannot download http://fashion-mnist"):
        load_fashion_mnist(tmp_path)


# --- CIFAR ---------------------------------------------------------------------------------------


def write_pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_batch(n: int, label_key: bytes, offset: int, n_classes: int) -> dict:
    data = (np.arange(n * 3072) + offset).astype(np.uint8).reshape(n, 3072)
    return {b"data": data, label_key: [(i + offset) % n_classes for i in range(n)]}


def test_cifar10_reads_batches_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"class{k}" for k in range(10)]
    write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in names]})
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(2, b"labels", offset=i, n_classes=10))
    write_pickle(folder / "test_batch", cifar_batch(3, b"labels", offset=0, n_classes=10))
    source = load_source("cifar10", data_dir=str(tmp_path))  # finds the official sub-folder
    assert source.classes == tuple(names)
    assert source.train.images.shape == (10, 3, 32, 32) and source.test.images.shape == (
        3,
        3,
        32,
        32,
    )
    assert source.train.labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    # Row layout: the red plane, then green, then blue.
    first = cifar_batch(2, b"labels", 1, 10)[b"data"][0]
    np.testing.assert_array_equal(source.train.images[0, 1].flatten().numpy(), first[1024:2048])


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    names = [f"fine{k}" for k in range(100)]
    write_pickle(tmp_path / "meta", {b"fine_label_names": names, b"coarse_label_names": ["x"] * 20})
    train = cifar_batch(4, b"fine_labels", offset=97, n_classes=100)
    train[b"coarse_labels"] = [0] * 4
    write_pickle(tmp_path / "train", train)
    write_pickle(tmp_path / "test", cifar_batch(2, b"fine_labels", offset=0, n_classes=100))
    source = load_cifar("cifar100", tmp_path)
    assert len(source.classes) == 100 and source.classes[99] == "fine99"
    assert source.train.labels.tolist() == [97, 98, 99, 0]


def test_cifar_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MatchnasError, match=r"batches\.meta"):
        load_cifar("cifar10", tmp_path)
    write_pickle(tmp_path / "meta", {b"fine_label_names": ["a", "b"]})
    write_pickle(
        tmp_path / "train", {b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}
    )
    with pytest.raises(MatchnasError, match=r"train: 'data' must be uint8 N x 3072"):
        load_cifar("cifar100", tmp_path)


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    write_pickle(tmp_path / "batches.meta", {b"label_names": Evil()})
    with pytest.raises(MatchnasError, match=r"refusing to load \S*print"):
        load_cifar("cifar10", tmp_path)


# --- digits and load_source ----------------------------------------------------------------------


def test_digits_shape_dtype_and_split() -> None:
    source = load_source()
    assert source.name == "digits" and not source.allow_flip
    assert source.train.images.shape == (1437, 1, 8, 8) and source.test.images.shape == (
        360,
        1,
        8,
        8,
    )
    assert source.train.images.dtype == torch.uint8 and int(source.train.images.max()) == 255
    assert source.train.labels.dtype == torch.int64
    assert torch.equal(source.train.labels.unique(), torch.arange(10))
    per_class_test, per_class_train = source.test.labels.bincount(), source.train.labels.bincount()
    assert (
        (per_class_test - 0.2 * (per_class_test + per_class_train)).abs() <= 1
    ).all()  # stratified
    assert torch.equal(load_digits().train.images, source.train.images)  # the fixed split


def test_unknown_source_name_lists_the_known_ones() -> None:
    with pytest.raises(MatchnasError, match=r"unknown data set 'mnist'.*fashion-mnist"):
        load_source("mnist")
    assert SOURCE_NAMES == ("digits", "fashion-mnist", "cifar10", "cifar100")


# --- user folders --------------------------------------------------------------------------------


def save_png(path: Path, size: tuple[int, int], mode: str = "RGB", value: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, 10, 90) if mode == "RGB" else value
    Image.new(mode, size, colour).save(path)


def make_tree(root: Path, mode: str = "RGB") -> None:
    for name, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            save_png(root / "labeled" / name / f"{i}.png", (40, 24), mode)
    save_png(root / "unlabeled" / "a" / "b" / "deep.png", (30, 30), mode)
    save_png(root / "unlabeled" / "top.png", (24, 40), mode)
    (root / "unlabeled" / "notes.txt").write_text("not an image")
    save_png(root / "test" / "dog" / "t.png", (16, 16), mode)


def test_folder_reads_labeled_unlabeled_and_test(tmp_path: Path) -> None:
    make_tree(tmp_path)
    source = load_source(str(tmp_path), image_size=12)
    assert source.classes == ("cat", "dog")
    assert source.train.images.shape == (5, 3, 12, 12) and source.train.labels.tolist() == [
        0,
        0,
        1,
        1,
        1,
    ]
    assert source.unlabeled.images.shape == (2, 3, 12, 12) and source.unlabeled.labels is None
    assert source.test.labels.tolist() == [1]
    assert source.train.images[0, :, 6, 6].tolist() == [200, 10, 90]


def test_folder_all_grey_images_give_one_channel(tmp_path: Path) -> None:
    make_tree(tmp_path, mode="L")
    assert load_source(str(tmp_path), image_size=8).train.images.shape == (5, 1, 8, 8)
    save_png(tmp_path / "unlabeled" / "colour.png", (8, 8), "RGB")  # one colour image: all RGB
    source = load_source(str(tmp_path), image_size=8)
    assert source.train.images.shape == (5, 3, 8, 8)
    assert torch.equal(source.train.images[:, 0], source.train.images[:, 2])  # grey as RGB


def test_folder_resizes_short_side_then_centre_crops(tmp_path: Path) -> None:
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 255  # only the centre third is white
    (tmp_path / "labeled" / "a").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "labeled" / "a" / "wide.png")
    image = load_source(str(tmp_path), image_size=10).train.images[0, 0]
    assert (
        image.shape == (10, 10) and int(image[:, 2:8].min()) == 255 and image.float().mean() > 200
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: None, "labeled: folder not found"),
        (lambda root: (root / "labeled").mkdir(), "labeled: no class folders"),
        (lambda root: (root / "labeled" / "cat").mkdir(parents=True), "cat: no images"),
    ],
    ids=["no-labeled", "no-classes", "empty-class"],
)
def test_folder_structure_errors(tmp_path: Path, breakage, message: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    breakage(tmp_path)
    with pytest.raises(MatchnasError, match=message):
        load_source(str(tmp_path), image_size=8)


def test_folder_test_class_unknown_to_labeled(tmp_path: Path) -> None:
    make_tree(tmp_path)
    save_png(tmp_path / "test" / "bird" / "b.png", (8, 8))
    with pytest.raises(MatchnasError, match="class 'bird' is not in labeled/"):
        load_source(str(tmp_path), image_size=8)


def test_folder_unreadable_image_names_the_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    bad = tmp_path / "unlabeled" / "a" / "garbage.png"
    bad.write_bytes(b"\x89PNG this is not really a png" * 3)
    with pytest.raises(MatchnasError, match=r"garbage\.png: cannot read image"):
        load_source(str(tmp_path), image_size=8)


def test_folder_file_among_class_folders_is_an_error(tmp_path: Path) -> None:
    make_tree(tmp_path)
    save_png(tmp_path / "labeled" / "stray.png", (8, 8))
    with pytest.raises(MatchnasError, match=r"stray\.png: labeled/ must hold one folder per class"):
        load_source(str(tmp_path), image_size=8)


def test_folder_empty_unlabeled_is_an_error(tmp_path: Path) -> None:
    save_png(tmp_path / "labeled" / "cat" / "0.png", (8, 8))
    (tmp_path / "unlabeled" / "sub").mkdir(parents=True)
    with pytest.raises(MatchnasError, match="unlabeled: no images"):
        load_source(str(tmp_path), image_size=8)
