"""Image datasets as float tensors in [-1, 1], shape [N, C, 32, 32].

Sources: `fashion-mnist` (idx or idx.gz files, 28x28 padded to 32x32, 1 channel), `cifar10` (a local
torchvision-format directory) and `folder:PATH` (every image file in PATH, resized to 32x32, RGB).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DataError(ValueError):
    """A dataset that cannot be read (one-line message)."""


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


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"no {stem}[.gz] in {root}; pass --data-root with the Fashion-MNIST idx files")


def to_unit(images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] -> float32 in [-1, 1]."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8, clipped."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fashion_mnist(root: Path = FASHION_ROOT, train: bool = True) -> Tensor:
    stem = "train-images-idx3-ubyte" if train else "t10k-images-idx3-ubyte"
    images = torch.from_numpy(read_idx(_find_idx(Path(root), stem)).copy())
    if images.ndim != 3:
        raise DataError(f"expected [N, H, W] images in {root}, got shape {tuple(images.shape)}")
    images = images[:, None]
    if images.shape[-1] == 28:
        images = torch.nn.functional.pad(images, (2, 2, 2, 2))
    return to_unit(images)


def cifar10(root: Path, download: bool = False, train: bool = True) -> Tensor:
    from torchvision.datasets import CIFAR10

    try:
        data = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as exc:
        raise DataError(f"CIFAR-10 not found under {root} ({str(exc).splitlines()[0]}); "
                        "pass --data-root or --download") from None
    return to_unit(torch.from_numpy(np.asarray(data.data)).permute(0, 3, 1, 2).contiguous())


def folder(path: Path, size: int = 32) -> Tensor:
    from PIL import Image

    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if Path(
        path).is_dir() else []
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)) for f in files]
    return to_unit(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())


def load_dataset(name: str, data_root: Path | None = None, subset: int | None = None,
                 download: bool = False) -> Tensor:
    """Images in [-1, 1] for `fashion-mnist`, `cifar10` or `folder:PATH`; the first `subset` only."""
    if name == "fashion-mnist":
        images = fashion_mnist(data_root or FASHION_ROOT)
    elif name == "cifar10":
        images = cifar10(data_root or Path("data/cifar10"), download)
    elif name.startswith("folder:"):
        images = folder(Path(name.split(":", 1)[1]))
    else:
        raise DataError(f"unknown dataset {name!r}; valid: cifar10, fashion-mnist, folder:PATH")
    return images[:subset] if subset else images
