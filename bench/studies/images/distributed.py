"""Sharded sample generation and FID under torch.distributed (torchrun, multi-GPU or multi-node).

Rank r of W generates the contiguous global indices [r N / W, (r+1) N / W); every random draw of a
sample is seeded by its global index (its initial noise, and its own Brownian path for stochastic
solvers), so the union of the shards is the same images whatever W is. Features are gathered in
index order and rank 0 computes the FID once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from bench.studies.images import fid as fidlib
from bench.studies.images.sampling import generate
from solvers.base import Solver
from solvers.model import Model

GenerateFn = Callable[[Tensor], Tensor]  # global indices (int64) -> uint8 images [len, C, H, W]


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> bool:
    """Join the process group torchrun describes (nccl on GPUs, else gloo); False when not under torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 1:
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def device() -> torch.device:
    """Where collectives need their tensors: this rank's GPU under nccl, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(n: int, rank: int, size: int) -> range:
    """Contiguous global indices of one rank; the shards partition range(n)."""
    return range(rank * n // size, (rank + 1) * n // size)


def seeded_normal(indices: Tensor, shape: tuple[int, ...], base_seed: int = 0) -> Tensor:
    """Standard normal draws [len(indices), *shape], sample i from a generator seeded base_seed + i."""
    out = torch.empty(len(indices), *shape)
    for row, i in enumerate(indices.tolist()):
        out[row] = torch.randn(shape, generator=torch.Generator().manual_seed(base_seed + int(i)))
    return out


def _noise_images(indices: Tensor, shape: tuple[int, ...], base_seed: int) -> Tensor:
    return (seeded_normal(indices, shape, base_seed) * 60 + 128).clamp(0, 255).to(torch.uint8)


def noise_generator(shape: tuple[int, ...] = (3, 32, 32), base_seed: int = 0) -> GenerateFn:
    """A deterministic (picklable) toy generate_fn: per-index seeded Gaussian noise as uint8 images."""
    return partial(_noise_images, shape=shape, base_seed=base_seed)


def _my_indices(n: int) -> Tensor:
    rank, size = world()
    if n < size:
        raise fidlib.FIDError(f"{n} samples cannot be shared among {size} ranks")
    return torch.tensor(list(shard(n, rank, size)), dtype=torch.long)


def _sampler_images(indices: Tensor, model: Model, solver: Solver, times: Tensor, seed: int,
                    batch: int) -> Tensor:
    start = int(indices[0]) if len(indices) else 0
    if not torch.equal(indices, torch.arange(start, start + len(indices))):
        raise fidlib.FIDError("the sampler adapter needs contiguous indices")
    return generate(model, solver, times, len(indices), seed, batch, start=start)


def sampler_generate_fn(model: Model, solver: Solver, times: Tensor, seed: int,
                        batch: int = 64) -> GenerateFn:
    """generate_fn for bench.studies.images.sampling.generate: x_T and, for stochastic solvers, the Brownian
    path of each sample depend only on (seed, index), so the images do not depend on the world size
    or on the batch split, for deterministic and stochastic solvers alike.
    """
    return partial(_sampler_images, model=model, solver=solver, times=times, seed=seed, batch=batch)


def generate_shard(generate_fn: GenerateFn, n: int, batch_size: int = 100) -> Tensor:
    """This rank's uint8 images, generated batch by batch over its index range."""
    return torch.cat([generate_fn(chunk) for chunk in _my_indices(n).split(batch_size)])


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's rows in rank order (shards may differ by one row); identity when single."""
    rank, size = world()
    if size == 1:
        return x
    dev = device()
    counts = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(x)], device=dev))
    rows = max(int(c) for c in counts)
    padded = torch.zeros(rows, *x.shape[1:], dtype=x.dtype, device=dev)
    padded[: len(x)] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c)] for p, c in zip(parts, counts, strict=True)]).cpu()


def sharded_samples(generate_fn: GenerateFn, n: int, batch_size: int = 100) -> Tensor:
    """All n images in index order on every rank (for checks; FID gathers features, not images)."""
    return gather_rows(generate_shard(generate_fn, n, batch_size))


def sharded_features(generate_fn: GenerateFn, n: int, extractor: FeatureExtractorBase,
                     batch_size: int = 100) -> Tensor:
    """float64 [n, D] features of all n samples, each rank featurizing its own shard."""
    extractor = extractor.to(device())
    feats = [fidlib.features(generate_fn(chunk), extractor, batch_size)
             for chunk in _my_indices(n).split(batch_size)]
    return gather_rows(torch.cat(feats))


def sharded_fid(generate_fn: GenerateFn, n: int, ref_stats: fidlib.Stats, extractor: FeatureExtractorBase,
                batch_size: int = 100) -> float | None:
    """FID of n generated samples against reference statistics: computed once, on rank 0 (None elsewhere)."""
    feats = sharded_features(generate_fn, n, extractor, batch_size)
    if world()[0] != 0:
        return None
    return fidlib.frechet(fidlib.statistics(feats), ref_stats)
