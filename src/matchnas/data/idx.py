"""IDX files (the MNIST format) and the Fashion-MNIST data set.

IDX layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the values, big-endian, row-major.
Files may be gzip-compressed; the reader looks at the first bytes, not at the file name.

Fashion-MNIST (Xiao et al. 2017) is looked for, in order, in ``data_dir`` (when given), in Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) and in the user cache
(``$MATCHNAS_CACHE`` or ``$XDG_CACHE_HOME/matchnas`` or ``~/.cache/matchnas``, sub-folder
``fashion-mnist``). Missing files are downloaded from the official mirror into ``data_dir`` when
given, else into the cache, and checked against the official MD5 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from matchnas.data.source import DataSource, ImageSet
from matchnas.errors import MatchnasError
from matchnas.io import atomic_write

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# MD5 of the official .gz files (the Debian package recompresses them, so local files are
# checked by the IDX reader's structure checks only).
_FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed.

    Returns:
        An array of the file's shape and type, in native byte order (e.g. uint8 ``60000 x 28 x 28``
        for an ``idx3-ubyte`` image file).

    Raises:
        MatchnasError: naming the file when it is missing, unreadable, not IDX, truncated or longer
            than its header says.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise MatchnasError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise MatchnasError(f"{path}: cannot read ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise MatchnasError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MatchnasError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise MatchnasError(
            f"{path}: IDX header says shape {shape} ({expected} bytes), file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def cache_dir() -> Path:
    """The folder matchnas downloads data sets into (not created here)."""
    if os.environ.get("MATCHNAS_CACHE"):
        return Path(os.environ["MATCHNAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "matchnas"


def _download(url: str, dest: Path, md5: str, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary file in ``dest``'s folder, then rename).

    Raises:
        MatchnasError: naming the URL when the network fails, or when the MD5 sum differs.
    """
    def fetch(tmp: Path) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise MatchnasError(f"{url}: MD5 {digest.hexdigest()} differs from expected {md5}")

    try:
        atomic_write(dest, fetch)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise MatchnasError(
            f"cannot download {url} ({err}); without network, put the files in --data-dir "
            f"or install Debian's dataset-fashion-mnist"
        ) from None
    return dest


def _find(stem: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def fashion_mnist_files(data_dir: str | Path | None) -> dict[str, Path]:
    """Locate the four Fashion-MNIST IDX files, downloading the missing ones.

    Returns:
        ``{stem: path}`` for the stems ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; each path ends in ``.gz`` or not.
    """
    if data_dir is not None:
        folders, target = [Path(data_dir)], Path(data_dir)
    else:
        target = cache_dir() / "fashion-mnist"
        folders = [DEBIAN_FASHION_MNIST_DIR, target]
    found: dict[str, Path] = {}
    for stem, md5 in _FASHION_MNIST_MD5.items():
        path = _find(stem, folders)
        found[stem] = path or _download(f"{FASHION_MNIST_URL}{stem}.gz", target / f"{stem}.gz", md5)
    return found


def _image_set(images: np.ndarray, labels: np.ndarray, images_path: Path) -> ImageSet:
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
        raise MatchnasError(
            f"{images_path}: expected uint8 N x H x W images with N labels, got "
            f"{images.dtype} {images.shape} and {labels.shape} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise MatchnasError(f"{images_path}: labels outside 0..9 in its label file")
    return ImageSet(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=FASHION_MNIST_CLASSES,
    )


def load_fashion_mnist(data_dir: str | Path | None = None) -> DataSource:
    """Fashion-MNIST: 60 000 training and 10 000 test images, uint8 ``1 x 28 x 28``, 10 classes."""
    files = fashion_mnist_files(data_dir)
    parts = {
        split: _image_set(
            read_idx(files[f"{split}-images-idx3-ubyte"]),
            read_idx(files[f"{split}-labels-idx1-ubyte"]),
            files[f"{split}-images-idx3-ubyte"],
        )
        for split in ("train", "t10k")
    }
    return DataSource("fashion-mnist", train=parts["train"], test=parts["t10k"], unlabeled=None)
