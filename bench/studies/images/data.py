"""Image datasets as float tensors in [-1, 1], shape [N, C, H, W].

Sources: `fashion-mnist` / `fashion-mnist-test` (the training / test split, idx or idx.gz files, 28x28
padded to 32x32, 1 channel; analytic/datasets.py), `digits` (scikit-learn's 8x8 digits, 1 channel),
`cifar10` (a local torchvision-format directory) and `folder:PATH` (every image file in PATH, resized
to 32x32, RGB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from analytic.datasets import FASHION_ROOT, DataError, digits, fashion_mnist_uint8, read_idx

__all__ = ["FASHION_ROOT", "DataError", "load_dataset", "read_idx", "to_uint8", "to_unit"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATASETS = ("cifar10", "digits", "fashion-mnist", "fashion-mnist-test", "folder:PATH")


def to_unit(images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] -> float32 in [-1, 1]."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8, clipped."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fashion_mnist(root: Path = FASHION_ROOT, train: bool = True) -> Tensor:
    return to_unit(torch.from_numpy(fashion_mnist_uint8(Path(root), train).copy()))


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
    if name in ("fashion-mnist", "fashion-mnist-test"):
        images = fashion_mnist(data_root or FASHION_ROOT, train=name == "fashion-mnist")
    elif name == "digits":
        images = digits()[0].float()
    elif name == "cifar10":
        images = cifar10(data_root or Path("data/cifar10"), download)
    elif name.startswith("folder:"):
        images = folder(Path(name.split(":", 1)[1]))
    else:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return images[:subset] if subset else images
