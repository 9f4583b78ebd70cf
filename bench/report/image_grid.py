"""A grid of sample images (float in [-1, 1] or uint8, [N, C, H, W]) saved as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def tile(images: Tensor, columns: int = 8, pad: int = 1) -> np.ndarray:
    """[N, C, H, W] -> one [rows (H + pad), columns (W + pad), C] uint8 array, white gutters."""
    x = images.detach().cpu()
    if x.dtype != torch.uint8:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = \
            x[i].permute(1, 2, 0).numpy()
    return out


def save_grid(images: Tensor, path: str | Path, columns: int = 8, title: str | None = None,
              scale: float = 0.18) -> Path:
    """Write `images` as a grid PNG (each pixel block scaled so a 32x32 image is ~0.18 inch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = tile(images, columns)
    size = scale * 32 / images.shape[-1]
    fig, ax = plt.subplots(figsize=(grid.shape[1] * size / 8 + 0.2, grid.shape[0] * size / 8 + 0.5),
                           layout="constrained")
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
