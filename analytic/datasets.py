"""Real image data sets shipped offline, as float tensors [N, 1, H, W] in [-1, 1] with class labels.

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, values 0..16), x / 8 - 1.
- `fashion_mnist`: the Debian package dataset-fashion-mnist (idx files, optionally gzipped, under
  /usr/share/datasets/fashion-mnist), 28x28 zero-padded by 2 pixels to 32x32 (pad value 0, i.e. -1
  after scaling), x / 127.5 - 1.
"""

from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


class DataError(ValueError):
    """A data set that cannot be read (one-line message)."""


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path} is not a uint8 idx file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} bytes, its header says {dims}")
    return data.reshape(dims)


def find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"no {stem}[.gz] in {root}; install Debian dataset-fashion-mnist or pass --data-root "
                    "with the Fashion-MNIST idx files")


@lru_cache(maxsize=2)
def fashion_mnist_uint8(root: Path = FASHION_ROOT, train: bool = True) -> np.ndarray:
    """Fashion-MNIST as uint8 [N, 1, 32, 32] (28x28 zero-padded by 2 on each side), read once per
    process (47 MB for the training split; treat it as read-only)."""
    split = "train" if train else "t10k"
    images = read_idx(find_idx(Path(root), f"{split}-images-idx3-ubyte"))
    if images.ndim != 3:
        raise DataError(f"expected [N, H, W] images in {root}, got shape {images.shape}")
    if images.shape[-1] == 28:
        images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return images[:, None]


def fashion_mnist_labels(root: Path = FASHION_ROOT, train: bool = True) -> np.ndarray:
    split = "train" if train else "t10k"
    return read_idx(find_idx(Path(root), f"{split}-labels-idx1-ubyte")).astype(np.int64)


def fashion_mnist(root: Path = FASHION_ROOT, train: bool = True) -> tuple[Tensor, Tensor]:
    """(images float64 [N, 1, 32, 32] in [-1, 1], labels int64 [N])."""
    images = torch.from_numpy(fashion_mnist_uint8(root, train).astype(np.float64) / 127.5 - 1.0)
    return images, torch.from_numpy(fashion_mnist_labels(root, train))


@lru_cache(maxsize=1)
def digits() -> tuple[Tensor, Tensor]:
    """(images float64 [1797, 1, 8, 8] in [-1, 1], labels int64 [1797]) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float64) / 8.0 - 1.0)[:, None]
    return images, torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
