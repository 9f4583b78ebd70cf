"""Gaussian-mixture data with closed-form noised marginals, scores and Tweedie denoisers.

For x_t = alpha x_0 + sigma eps and x_0 ~ sum_k w_k N(mu_k, Sigma_k), the marginal is
sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I). With Sigma_k = U_k diag(l_k) U_k^T
factorized once, every evaluation costs O(n K d^2): the score and noise prediction apply the
precisions C_k^-1 = U_k diag(1 / (alpha^2 l_k + sigma^2)) U_k^T to x - alpha mu_k (no cancellation
at small sigma), the density and denoiser project onto U_k.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import Tensor

_CACHE_ELEMENTS = 1 << 18  # per-block (K, d, block) intermediates: 1 MiB in float32, within L2
_BOUND_DIM = 64  # above this dimension the common bound underflows: subtract each column's maximum
_TERMS_ELEMENTS = 1 << 26  # memoized precisions: at most ~512 MiB (float64) per law
_NOISED_ELEMENTS = 1 << 25  # memoized noised laws: at most ~256 MiB of covariances (float64)
_LOG2E = 1.0 / math.log(2.0)


def _digest(*tensors: Tensor) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.digest()


def _transposed(m: Tensor) -> Tensor:
    """m.T, contiguous. On CPU numpy copies it: torch's strided copy of a narrow (n, d) matrix is
    several times slower (65536 x 2 float32: 230 us against 35 us, measured)."""
    if m.device.type == "cpu" and m.dtype in (torch.float32, torch.float64) and not m.requires_grad:
        return torch.from_numpy(np.ascontiguousarray(m.numpy().T))
    return m.T.contiguous()


def _row_dot(a: Tensor, b: Tensor, offset: Tensor) -> Tensor:
    """offset - sum over dim 1 of a * b for (K, d, n) tensors and (K, 1) offset; for small d as d fused
    multiply-adds of contiguous (K, n) slabs, twice as fast as a reduction over the middle dimension."""
    if a.shape[1] > 4:
        return offset - (a * b).sum(1)
    out = torch.addcmul(offset, a[:, 0], b[:, 0], value=-1)
    for i in range(1, a.shape[1]):
        out.addcmul_(a[:, i], b[:, i], value=-1)
    return out


def _score_block(x: Tensor, half_prec: Tensor, const: Tensor, shifts: Tensor, out: Tensor) -> None:
    """out (d, m) = sum_k r_k (log2 e / 2) C_k^-1 (x - alpha mu_k) for columns x (d, m).

    z_k = log2(w_k N(x; alpha mu_k, C_k)) <= max_k const_k (the quadratic form is >= 0), so 2^(z_k - that
    bound) cannot overflow and needs no per-column maximum; columns where every term underflows
    (x far from all components) are redone with the per-column maximum subtracted. Above _BOUND_DIM
    dimensions the bound underflows for every column, so the maximum is subtracted from the start."""
    centred = x[None] - shifts  # (K, d, m)
    pulled = torch.bmm(half_prec, centred)  # (log2 e / 2) C_k^-1 (x - alpha mu_k)
    if x.shape[0] > _BOUND_DIM:  # the quadratic forms (~0.7 d) leave float exponents: per-column maximum
        z = _row_dot(centred, pulled, const)
        weights = z.sub_(z.amax(0)).exp2_()
        torch.sum(pulled.mul_(weights[:, None, :]), dim=0, out=out)
        out.div_(weights.sum(0))
        return
    weights = _row_dot(centred, pulled, const - const.max()).exp2_()  # unnormalised responsibilities
    total = weights.sum(0)
    torch.sum(pulled.mul_(weights[:, None, :]), dim=0, out=out)
    out.div_(total)
    tiny = torch.finfo(x.dtype).tiny * 2.0**26  # subnormal terms would lose precision
    if float(total.min()) < tiny:
        cols = (total < tiny).nonzero()[:, 0]
        centred, pulled = centred[:, :, cols], torch.bmm(half_prec, centred[:, :, cols])
        z = _row_dot(centred, pulled, const)
        weights = z.sub_(z.amax(0)).exp2_()
        out[:, cols] = (pulled * weights[:, None, :]).sum(0) / weights.sum(0)


class GaussianMixture:
    """sum_k weights[k] N(means[k], covs[k]) in R^d, parameters held in float64."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor,
                 eig: tuple[Tensor, Tensor] | None = None):
        """`eig`: the covariances' eigenvalues (K, d) and eigenvectors (K, d, d) when already known."""
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        self.k, self.dim = self.means.shape
        if eig is None:  # (K, d), (K, d, d); a fitted covariance with constant pixels has l ~ -1e-17
            evals, evecs = torch.linalg.eigh(self.covs)
            eig = evals.clamp_min(0.0), evecs
        self.evals, self.evecs = eig
        self.log_weights = torch.log(self.weights)
        self._cast_cache: dict[tuple, tuple[Tensor, ...]] = {}
        self._terms_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._noised_cache: dict[tuple[float, float], GaussianMixture] = {}
        self._key: bytes | None = None

    def key(self) -> bytes:
        """A digest of the parameters (cache key of quantities fixed per law)."""
        if self._key is None:
            self._key = _digest(self.weights, self.means, self.covs)
        return self._key

    @property
    def is_gaussian(self) -> bool:
        return self.k == 1

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        centred = self.means - self.mean()
        spread = torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return torch.einsum("k,kij->ij", self.weights, self.covs) + spread

    def noised(self, alpha: float, sigma: float) -> GaussianMixture:
        """The law of alpha x_0 + sigma eps (same eigenvectors; memoized, a few per large law)."""
        key = (float(alpha), float(sigma))
        hit = self._noised_cache.get(key)
        if hit is None:
            if len(self._noised_cache) >= max(2, _NOISED_ELEMENTS // self.covs.numel()):
                self._noised_cache.clear()
            eye = torch.eye(self.dim, dtype=torch.float64)
            hit = self._noised_cache[key] = GaussianMixture(
                self.weights, alpha * self.means, alpha**2 * self.covs + sigma**2 * eye,
                eig=(alpha**2 * self.evals + sigma**2, self.evecs))
        return hit

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, alpha: float = 1.0,
               sigma: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
        """Exact samples of alpha x_0 + sigma eps (the data itself with the defaults)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        std = torch.sqrt(alpha**2 * self.evals + sigma**2)  # (K, d)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = alpha * self.means[comp]
        for k in range(self.k):  # per component: one GEMM, never an (n, d, d) gather
            rows = (comp == k).nonzero()[:, 0]
            if len(rows):
                x[rows] += (std[k] * z[rows]) @ self.evecs[k].T
        return x.to(dtype)

    # -- closed-form quantities ----------------------------------------------------------------
    def _params(self, x: Tensor) -> tuple[Tensor, ...]:
        """Parameters cast to x's dtype/device: log weights, means, eigenvalues, the stacked
        eigenbases U = [U_1 ... U_K] (d, K d) and the projected means mu_k^T U_k (K, d)."""
        key = (x.dtype, x.device)
        if key not in self._cast_cache:
            stacked = self.evecs.permute(1, 0, 2).reshape(self.dim, self.k * self.dim)
            projected = torch.einsum("kd,kde->ke", self.means, self.evecs)
            self._cast_cache[key] = tuple(
                p.to(dtype=x.dtype, device=x.device)
                for p in (self.log_weights, self.means, self.evals, stacked, projected)
            )
        return self._cast_cache[key]

    def _project(self, x: Tensor, alpha: float, sigma: float):
        """Per-component coordinates z_k = U_k^T (x - alpha mu_k) (one GEMM for all k), the
        noised variances and the log joint densities log w_k N(x; alpha mu_k, C_k)."""
        log_w, _, evals, stacked, projected = self._params(x)
        var = alpha * alpha * evals + sigma * sigma  # (K, d)
        z = (x @ stacked).view(-1, self.k, self.dim) - alpha * projected  # (n, K, d)
        log_comp = (
            log_w
            - 0.5 * (z * z / var).sum(-1)
            - 0.5 * torch.log(var).sum(-1)
            - 0.5 * self.dim * math.log(2 * math.pi)
        )  # (n, K)
        return z, var, log_comp

    def log_prob(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        _, _, log_comp = self._project(x, alpha, sigma)
        return torch.logsumexp(log_comp, dim=-1)

    def _weighted_back(self, x: Tensor, weights: Tensor, coords: Tensor) -> Tensor:
        """sum_k weights[n, k] U_k coords[n, k]."""
        stacked = self._params(x)[3]
        return (weights.unsqueeze(-1) * coords).reshape(len(x), -1) @ stacked.T

    @staticmethod
    def _level_key(x: Tensor, alpha: float, sigma: float) -> tuple:
        """The memo key of a noise level's precisions, in x's dtype and device."""
        return float(alpha), float(sigma), x.dtype, x.device

    def _log2_terms(self, x: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
        """(log2 e / 2) C_k^-1 (K, d, d), C_k^-1 = U_k diag(1 / (alpha^2 l_k + sigma^2)) U_k^T, and
        log2(w_k) - log2 det(2 pi C_k) / 2 (K, 1): with them z_k = log2(w_k N(x; alpha mu_k, C_k)).
        Built in float64 and cast to x; memoized per noise level (solvers revisit grid times)."""
        key = self._level_key(x, alpha, sigma)
        hit = self._terms_cache.get(key)
        if hit is None:
            if len(self._terms_cache) >= max(4, min(4096, _TERMS_ELEMENTS // self.covs.numel())):
                self._terms_cache.clear()
            hit = self._terms_cache[key] = self._log2_terms_uncached(x, alpha, sigma)
        return hit

    def _log2_terms_uncached(self, x: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
        var = alpha * alpha * self.evals + sigma * sigma
        prec = (self.evecs / var[:, None, :]) @ self.evecs.transpose(1, 2)
        const = self.log_weights - 0.5 * torch.log(var).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return ((0.5 * _LOG2E) * prec).to(dtype=x.dtype, device=x.device), \
            (_LOG2E * const).to(dtype=x.dtype, device=x.device)[:, None]

    def _scaled_score(self, x: Tensor, alpha: float, sigma: float, scale: float) -> Tensor:
        """-scale * grad log p = scale * sum_k r_k C_k^-1 (x - alpha mu_k), in a (K, d, n) layout so the
        reductions over K and d run over contiguous rows; columns are processed in blocks small enough
        for every intermediate to stay in cache. The responsibilities are normalised powers of 2
        (torch's float32 exp2 is ~5x faster than exp on CPU)."""
        if self._level_key(x, alpha, sigma) not in self._terms_cache and 2 * len(x) <= self.dim:
            return self._projected_scaled_score(x, alpha, sigma, scale)
        half_prec, const = self._log2_terms(x, alpha, sigma)
        if self.k == 1:  # a Gaussian: the score is affine, no responsibilities
            prec = half_prec[0] * (scale / (0.5 * _LOG2E))
            return (x - alpha * self._params(x)[1][0]) @ prec  # C^-1 is symmetric
        shifts = alpha * self._params(x)[1][:, :, None]  # (K, d, 1)
        xt = _transposed(x)
        out = torch.empty_like(xt)
        block = max(1024, _CACHE_ELEMENTS // (self.k * self.dim))
        for start in range(0, xt.shape[1], block):
            _score_block(xt[:, start:start + block], half_prec, const, shifts, out[:, start:start + block])
        return _transposed(out.mul_(scale / (0.5 * _LOG2E)))

    def _projected_scaled_score(self, x: Tensor, alpha: float, sigma: float, scale: float) -> Tensor:
        """The same through the eigenbases, for batches of at most d / 2 rows at a new noise level:
        scale sum_k r_k U_k diag(1 / var_k) z_k with z_k = U_k^T (x - alpha mu_k), two GEMMs of 2 n K d^2
        (building the precisions would cost 2 K d^3)."""
        z, var, log_comp = self._project(x, alpha, sigma)
        resp = torch.softmax(log_comp, dim=-1) if self.k > 1 else torch.ones_like(log_comp)
        return self._weighted_back(x, resp, z * (scale / var))

    def score(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        """grad_x log p(x) of the noised law: -sum_k r_k(x) C_k^-1 (x - alpha mu_k)."""
        return self._scaled_score(x, alpha, sigma, -1.0)

    def eps(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[eps | x_t = x] = -sigma * score."""
        return self._scaled_score(x, alpha, sigma, sigma)

    def denoise(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """Tweedie: E[x_0 | x_t = x] = sum_k r_k (mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k))."""
        z, var, log_comp = self._project(x, alpha, sigma)
        resp = torch.softmax(log_comp, dim=-1)
        evals, means = self._params(x)[2], self._params(x)[1]
        shrink = self._weighted_back(x, resp, alpha * evals * z / var)
        return resp @ means + shrink

    def responsibilities(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        return torch.softmax(self._project(x, alpha, sigma)[2], dim=-1)


class IsotropicMixture:
    """sum_i weights[i] N(means[i], var I) in R^d: components sharing one isotropic covariance; with
    var = 0, point masses (an empirical law of N images: the exact score of real data).

    The noised law is the same kind with var' = alpha^2 var + sigma^2, so every evaluation is one GEMM
    against the N means for the responsibilities r_i(x) = softmax_i(log w_i - |x - alpha mu_i|^2 / 2 var')
    (|x|^2 drops out of the softmax) and one for E[mu | x] = sum_i r_i mu_i (Karras et al. 2022, eq. 57
    for point masses); blocks of rows keep the (n, N) logits small. Parameters in float64; evaluations
    in x's dtype.
    """

    _BLOCK_ELEMENTS = 1 << 22  # (rows, N) logits per block

    def __init__(self, weights: Tensor, means: Tensor, var: float = 0.0):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.var = float(var)
        self.k, self.dim = self.means.shape
        self.log_weights = torch.log(self.weights)
        self._cast_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._noised_cache: dict[tuple[float, float], IsotropicMixture] = {}
        self._key: bytes | None = None

    @property
    def is_gaussian(self) -> bool:
        return self.k == 1

    def key(self) -> bytes:
        if self._key is None:
            self._key = _digest(self.weights, self.means, torch.tensor([self.var], dtype=torch.float64))
        return self._key

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        centred = self.means - self.mean()
        return (centred.T * self.weights) @ centred + self.var * torch.eye(self.dim, dtype=torch.float64)

    def noised(self, alpha: float, sigma: float) -> IsotropicMixture:
        key = (float(alpha), float(sigma))
        if key not in self._noised_cache:
            if len(self._noised_cache) >= 64:
                self._noised_cache.clear()
            self._noised_cache[key] = IsotropicMixture(self.weights, alpha * self.means,
                                                       alpha * alpha * self.var + sigma * sigma)
        return self._noised_cache[key]

    def sample(self, n: int, generator: torch.Generator | None = None, alpha: float = 1.0,
               sigma: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (alpha * self.means[comp] + math.sqrt(alpha * alpha * self.var + sigma * sigma) * z).to(dtype)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log weights, means (N, d) and squared norms |mu_i|^2, in x's dtype and device."""
        key = (x.dtype, x.device)
        if key not in self._cast_cache:
            self._cast_cache[key] = tuple(p.to(dtype=x.dtype, device=x.device) for p in (
                self.log_weights, self.means, (self.means * self.means).sum(1)))
        return self._cast_cache[key]

    def _blocks(self, x: Tensor, alpha: float, sigma: float, fn) -> None:
        """fn(rows, logits): the log-responsibilities (m, N) up to a per-row constant, per block of rows."""
        log_w, means, sq = self._params(x)
        var = alpha * alpha * self.var + sigma * sigma
        block = max(1, self._BLOCK_ELEMENTS // self.k)
        for start in range(0, len(x), block):
            rows = slice(start, start + block)
            logits = torch.addmm(log_w - (0.5 * alpha * alpha / var) * sq, x[rows], means.T,
                                 alpha=alpha / var)
            fn(rows, logits)

    def denoise(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x_0 | x_t = x] = sum_i r_i (mu_i + s (x - alpha mu_i)), s = alpha var / C."""
        mean_mu = self._mean_component(x, alpha, sigma)
        if self.var == 0:
            return mean_mu
        shrink = alpha * self.var / (alpha * alpha * self.var + sigma * sigma)
        return (1 - alpha * shrink) * mean_mu + shrink * x

    def responsibilities(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        out = torch.empty(len(x), self.k, dtype=x.dtype, device=x.device)

        def fill(rows: slice, logits: Tensor) -> None:
            out[rows] = torch.softmax(logits, dim=1)

        self._blocks(x, alpha, sigma, fill)
        return out

    def score(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        """-sum_i r_i (x - alpha mu_i) / C = (alpha E[mu | x] - x) / C, C = alpha^2 var + sigma^2."""
        var = alpha * alpha * self.var + sigma * sigma
        mean_mu = self._mean_component(x, alpha, sigma)
        return (alpha * mean_mu - x) / var

    def eps(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        return -sigma * self.score(x, alpha, sigma)

    def _mean_component(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[mu_I | x]: the responsibility-weighted component mean."""
        means = self._params(x)[1]
        out = torch.empty_like(x)

        def fill(rows: slice, logits: Tensor) -> None:
            torch.mm(torch.softmax(logits, dim=1), means, out=out[rows])

        self._blocks(x, alpha, sigma, fill)
        return out

    def log_prob(self, x: Tensor, alpha: float = 1.0, sigma: float = 0.0) -> Tensor:
        var = alpha * alpha * self.var + sigma * sigma
        out = torch.empty(len(x), dtype=x.dtype, device=x.device)
        norm = -0.5 * self.dim * math.log(2 * math.pi * var)

        def fill(rows: slice, logits: Tensor) -> None:
            xr = x[rows]
            out[rows] = torch.logsumexp(logits, dim=1) - 0.5 * (xr * xr).sum(1) / var + norm

        self._blocks(x, alpha, sigma, fill)
        return out
