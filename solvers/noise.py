"""Noise sources. Solvers never draw random numbers: they ask the source the caller passed in.

Every draw is tied to the time interval it belongs to, so a Brownian-tree source gives the same
Brownian path to every grid (strong error, path-rms) while an i.i.d. source is cheapest when
only the law of the output matters. Intervals are given as (t0, t1) in the order the sampler
walks them (t0 > t1 in reverse time); increment(t0, t1) = W(t1) - W(t0).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

_MASK = (1 << 63) - 1


def _mix(*values: int) -> int:
    """splitmix64-style hash of integers into a non-negative 63-bit seed."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h & _MASK


def _float_bits(t: float) -> int:
    return int.from_bytes(torch.tensor(t, dtype=torch.float64).numpy().tobytes(), "little")


class NoiseSource(ABC):
    """Standard normal draws tied to intervals of the time grid."""

    @abstractmethod
    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        """A standard normal tensor shaped like `like`, tied to the step t0 -> t1."""

    def increment(self, t0: float, t1: float, like: Tensor) -> Tensor:
        """The Brownian increment W(t1) - W(t0), variance |t1 - t0|."""
        return math.sqrt(abs(t1 - t0)) * self.normal(t0, t1, like)

    @abstractmethod
    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        """A standard normal tied to time t and index k, independent of the path (correctors)."""


class IidNoise(NoiseSource):
    """Fresh i.i.d. normals in call order from one seeded generator."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, like: Tensor) -> Tensor:
        z = torch.randn(like.shape, generator=self.generator, dtype=torch.float64)
        return z.to(dtype=like.dtype, device=like.device)

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        return self._draw(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        return self._draw(like)


class ZeroNoise(NoiseSource):
    """All draws zero: the noise-free skeleton of a stochastic solver."""

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        return torch.zeros_like(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        return torch.zeros_like(like)


def _evict_oldest(cache: dict, limit: int) -> None:
    """Drop the oldest entries (dicts keep insertion order) until `limit` remain."""
    while len(cache) > limit:
        del cache[next(iter(cache))]


class BrownianTreeNoise(NoiseSource):
    """A virtual Brownian tree on [t_lo, t_hi] (Li et al. 2020, 'Scalable gradients for SDEs').

    W(t) is found by Brownian-bridge bisection whose node values come from seeds hashed from the
    node's position, so any grid queries the same path; below `resolution` (relative) the bridge
    mean is used. Increments over any grid therefore sum consistently across step counts.
    """

    def __init__(self, seed: int, t_lo: float, t_hi: float, resolution: float = 2.0**-26,
                 cache_bytes: int = 2**27):
        if not t_hi > t_lo:
            raise ValueError(f"need t_lo < t_hi, got [{t_lo}, {t_hi}]")
        self.seed, self.t_lo, self.t_hi = seed, float(t_lo), float(t_hi)
        self.tol = resolution * (self.t_hi - self.t_lo)
        self.cache_bytes = cache_bytes  # for each of the two caches: tree nodes and W at queried times
        self._limit = 16
        self._nodes: dict[tuple, Tensor] = {}
        self._values: dict[float, Tensor] = {}
        self._shape: tuple | None = None

    def _gauss(self, depth: int, index: int) -> Tensor:
        g = torch.Generator().manual_seed(_mix(self.seed, depth, index))
        return torch.randn(self._shape, generator=g, dtype=torch.float64)

    def _node(self, depth: int, index: int, w_lo: Tensor, w_hi: Tensor, std: float) -> Tensor:
        """The cached value (w_lo + w_hi) / 2 + std * N(seed of the node) of tree node (depth, index)."""
        key = (depth, index)
        w = self._nodes.get(key)
        if w is None:
            w = self._nodes[key] = 0.5 * (w_lo + w_hi) + std * self._gauss(depth, index)
            _evict_oldest(self._nodes, self._limit)
        return w

    def value(self, t: float, like: Tensor) -> Tensor:
        """W(t) with W(t_lo) = 0, shaped like `like` (float64 on CPU). Values at queried times are
        cached (a budget of `cache_bytes`), so the nested grids of a convergence study and its
        reference descend the tree once per distinct time."""
        if tuple(like.shape) != self._shape:
            self._shape, self._nodes, self._values = tuple(like.shape), {}, {}
            self._limit = max(16, self.cache_bytes // (8 * max(1, like.numel())))
        t = float(t)
        w = self._values.get(t)
        if w is None:
            w = self._values[t] = self._descend(t)
            _evict_oldest(self._values, self._limit)
        return w

    def _descend(self, t: float) -> Tensor:
        if not self.t_lo - 1e-12 <= t <= self.t_hi + 1e-12:
            raise ValueError(f"time {t} outside the Brownian tree's [{self.t_lo}, {self.t_hi}]")
        lo, hi = self.t_lo, self.t_hi
        w_lo = torch.zeros(self._shape, dtype=torch.float64)
        w_hi = self._node(0, -1, w_lo, -w_lo, math.sqrt(hi - lo))
        depth, index = 0, 0
        while hi - lo > self.tol and lo < t < hi:
            mid = 0.5 * (lo + hi)
            std = math.sqrt((mid - lo) * (hi - mid) / (hi - lo))
            w_mid = self._node(depth, index, w_lo, w_hi, std)
            if t < mid:
                hi, w_hi, index = mid, w_mid, 2 * index
            else:
                lo, w_lo, index = mid, w_mid, 2 * index + 1
            depth += 1
        if t <= lo:
            return w_lo
        if t >= hi:
            return w_hi
        return w_lo + (t - lo) / (hi - lo) * (w_hi - w_lo)

    def increment(self, t0: float, t1: float, like: Tensor) -> Tensor:
        dw = self.value(t1, like) - self.value(t0, like)
        return dw.to(dtype=like.dtype, device=like.device)

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        return self.increment(t0, t1, like) / math.sqrt(abs(t1 - t0))

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(_mix(self.seed, 0x5EED, _float_bits(t), k))
        z = torch.randn(like.shape, generator=g, dtype=torch.float64)
        return z.to(dtype=like.dtype, device=like.device)


class SeededNoise(NoiseSource):
    """The seed of a run for a sampler that builds its noise itself (a library's generator, a
    Brownian tree in the library's noise time); it is not drawn from directly."""

    def __init__(self, seed: int):
        self.seed = seed

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        raise TypeError("SeededNoise only carries a seed; the sampler builds its own noise from it")

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        raise TypeError("SeededNoise only carries a seed; the sampler builds its own noise from it")


_TREES: dict[tuple, BrownianTreeNoise] = {}


def brownian_path(seed: int, t_lo: float, t_hi: float) -> BrownianTreeNoise:
    """The Brownian path of run `seed` on [t_lo, t_hi]. The latest path is kept, so the solvers of a
    chain and their shared reference reuse its tree nodes (values depend only on seed and node,
    never on what is cached)."""
    key = (seed, float(t_lo), float(t_hi))
    if key not in _TREES:
        _TREES.clear()
        _TREES[key] = BrownianTreeNoise(seed, t_lo, t_hi)
    return _TREES[key]
