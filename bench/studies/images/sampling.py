"""Batched sampling of a learned image model through the one sampling loop (`solvers.sample`).

`generate` is the entry point for FID and distributed sampling: n images from seed, uint8 RGB.
Everything random about image i depends only on (seed, i): its initial noise and, for stochastic
solvers, its own Brownian path (`PerSampleBrownianNoise`), never on the batch size or on which
images share its batch or rank. `with_dtype` evaluates the network under bf16 autocast; the solver's
arithmetic stays float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.studies.images.data import to_uint8
from bench.studies.images.models import image_shape
from solvers import BrownianTreeNoise, Solver
from solvers.model import Model
from solvers.noise import _float_bits, _mix

_PATH_STREAM = 0xB80A  # sample seeds of the Brownian paths, apart from the x_T generators
# autocast dtype of the network
NETWORK_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AutocastNetwork:
    """A network fn(x, t) evaluated under autocast to `dtype` (matmuls and convolutions in it, float32
    weights, normalizations in float32); the output is cast back to x's dtype. Other attributes
    (`seconds`, `device`, `unet`) are the wrapped network's."""

    def __init__(self, net, dtype: torch.dtype):
        self.net, self.autocast_dtype = net, dtype

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        device = torch.device(getattr(self.net, "device", "cpu"))
        with torch.autocast(device.type, dtype=self.autocast_dtype):
            out = self.net(x, t)
        return out.to(x.dtype)

    def __getattr__(self, name: str):
        if name == "net":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.net, name)


def with_dtype(model: Model, dtype: str) -> Model:
    """`model` with its network evaluated in `dtype` (NETWORK_DTYPES); float32: `model` itself."""
    if dtype not in NETWORK_DTYPES:
        raise ValueError(f"unknown network dtype {dtype!r}; valid: {', '.join(NETWORK_DTYPES)}")
    if NETWORK_DTYPES[dtype] is None:
        return model
    return Model(AutocastNetwork(model.fn, NETWORK_DTYPES[dtype]), model.parameterization, model.schedule)


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


class PerSampleBrownianNoise(BrownianTreeNoise):
    """A virtual Brownian tree per row: row r of every draw is exactly what
    `BrownianTreeNoise(seeds[r], t_lo, t_hi)` gives that row alone, whatever the other rows are.

    The bisection path to a time t does not depend on the seed, so the rows share one descent with
    batched bridge arithmetic; only the Gaussian of each new tree node is drawn per row (one seeded
    generator per row and node). `extra` draws are per row as well. The node cache holds at most
    `cache_bytes` of nodes (a batch's node is [rows, C, H, W] float64).
    """

    def __init__(self, seeds: list[int], t_lo: float, t_hi: float, cache_bytes: int = 256 << 20):
        super().__init__(0, t_lo, t_hi)
        self.seeds = [int(s) for s in seeds]
        self.cache_bytes = cache_bytes

    def value(self, t: float, like: Tensor) -> Tensor:
        if len(like) != len(self.seeds):
            raise ValueError(f"{len(self.seeds)} per-sample Brownian paths, {len(like)} rows asked for")
        self.cache_size = max(64, self.cache_bytes // (8 * like.numel()))
        return super().value(t, like)

    def _gauss(self, depth: int, index: int) -> Tensor:
        out = torch.empty(self._shape, dtype=torch.float64)
        for row, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed(_mix(seed, depth, index))
            out[row] = torch.randn(self._shape[1:], generator=gen, dtype=torch.float64)
        return out

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        rows = [torch.randn(like.shape[1:], dtype=torch.float64,
                            generator=torch.Generator().manual_seed(_mix(seed, 0x5EED, _float_bits(t), k)))
                for seed in self.seeds]
        return torch.stack(rows).to(dtype=like.dtype, device=like.device)


def path_seeds(seed: int, start: int, n: int) -> list[int]:
    """Brownian-path seeds of images start..start+n-1 of `seed`."""
    return [_mix(seed, _PATH_STREAM, start + i) for i in range(n)]


def sample_batches(model: Model, solver: Solver, times: Tensor, x_T: Tensor, seed: int, batch: int,
                   denoise_final: bool = False, start: int = 0) -> BatchedSample:
    """Run `solver` on x_T (images start, start+1, ... of `seed`) in batches on the model's device;
    a stochastic solver drives image i by its own Brownian path on [min(times), max(times)], seeded
    by (seed, i): the result does not depend on `batch`, and grids with the same end points share
    the path (path-rms references)."""
    net = model.fn
    device = getattr(net, "device", torch.device("cpu"))
    net_start, clock = getattr(net, "seconds", 0.0), time.perf_counter()
    outs, nfe = [], 0
    t_lo, t_hi = float(times.min()), float(times.max())
    for lo in range(0, len(x_T), batch):
        x = x_T[lo:lo + batch]
        noise = None
        if solver.stochastic:
            noise = PerSampleBrownianNoise(path_seeds(seed, start + lo, len(x)), t_lo, t_hi)
        res = solver.run(model, times, x.to(device), noise, denoise_final=denoise_final)
        outs.append(res.x.float().cpu())
        nfe = res.nfe
    wall = time.perf_counter() - clock
    return BatchedSample(torch.cat(outs), nfe, wall, getattr(net, "seconds", 0.0) - net_start)


def generate(model: Model, solver: Solver, times: Tensor, n: int, seed: int, batch: int = 64,
             start: int = 0, denoise_final: bool = False) -> Tensor:
    """n uint8 images [n, 3, H, W] (grayscale repeated to RGB), images start..start+n-1 of `seed`.

    The model already lives on its device (load_model(..., device=...)); shards of one seed can be
    drawn on separate ranks with disjoint `start` and concatenated: the same images as one call, for
    stochastic solvers too."""
    x = sample_batches(model, solver, times, initial_noise(model, n, seed, start), seed, batch,
                       denoise_final, start).x
    images = to_uint8(x)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images
