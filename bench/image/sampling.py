"""Batched sampling of a learned image model through the one sampling loop (`solvers.sample`).

`generate` is the entry point for FID and distributed sampling: n images from seed, uint8 RGB.
The initial noise of image i depends only on (seed, i), never on the batch size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.image.data import to_uint8
from bench.image.models import image_shape
from solvers import BrownianTreeNoise, Solver, sample
from solvers.model import Model


@dataclass
class BatchedSample:
    x: Tensor  # float32 on CPU, [n, C, H, W]
    nfe: int  # model calls per image
    wall_time: float  # seconds, all batches
    network_time: float  # seconds inside the network

    @property
    def images_per_second(self) -> float:
        return len(self.x) / self.wall_time if self.wall_time > 0 else float("nan")

    @property
    def network_share(self) -> float:
        return self.network_time / self.wall_time if self.wall_time > 0 else float("nan")


def initial_noise(model: Model, n: int, seed: int, start: int = 0) -> Tensor:
    """x_T for images start..start+n-1 of `seed`: standard normal (the VP prior), float32 on CPU."""
    shape = image_shape(model)
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i))
            for i in range(n)]
    return torch.stack(rows)


def sample_batches(model: Model, solver: Solver, times: Tensor, x_T: Tensor, seed: int, batch: int,
                   denoise_final: bool = False) -> BatchedSample:
    """Run `solver` on x_T in batches on the model's device; stochastic solvers get a Brownian tree
    per batch seeded from (seed, batch index)."""
    net = model.fn
    device = getattr(net, "device", torch.device("cpu"))
    net_start, start = getattr(net, "seconds", 0.0), time.perf_counter()
    outs, nfe = [], 0
    t_lo, t_hi = float(times.min()), float(times.max())
    for b, lo in enumerate(range(0, len(x_T), batch)):
        noise = BrownianTreeNoise(seed * 7919 + b, t_lo, t_hi) if solver.stochastic else None
        res = sample(solver, model, times, x_T[lo:lo + batch].to(device), noise, denoise_final=denoise_final)
        outs.append(res.x.float().cpu())
        nfe = res.nfe
    wall = time.perf_counter() - start
    return BatchedSample(torch.cat(outs), nfe, wall, getattr(net, "seconds", 0.0) - net_start)


def generate(model: Model, solver: Solver, times: Tensor, n: int, seed: int, batch: int = 64,
             start: int = 0, denoise_final: bool = False) -> Tensor:
    """n uint8 images [n, 3, H, W] (grayscale repeated to RGB), images start..start+n-1 of `seed`.

    The model already lives on its device (load_model(..., device=...)); shards of one seed can be
    drawn on separate ranks with disjoint `start` and concatenated."""
    x = sample_batches(model, solver, times, initial_noise(model, n, seed, start), seed + start, batch,
                       denoise_final).x
    images = to_uint8(x)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images
