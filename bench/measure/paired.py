"""Errors measured against a paired high-accuracy reference: weak errors far below the sampling
floor (control variates) and robust pathwise statistics.

Every solver sample x_i is paired with a reference r_i started from the same x_T and, for SDE
solvers, driven by the same Brownian path (bench/measure/reference.py), and with the reference's coarse
twin rc_i (half its steps). For test functions f (a feature vector per point) the weak error
e_f = E f(X_N) - E f(X), X ~ the exact law at the grid's last time, is estimated by the mean of

    d_i = f(x_i) - f(r_i) + c (f(rc_i) - f(r_i)),    c = 1 / (2^q - 1),

the last term Richardson's estimate of the reference's own weak bias E f(R) - E f(X) for a
reference of weak order q (error C N^-q: E f(R_M) - E f(R_2M) = (2^q - 1) x bias(R_2M)). Its
variance is ~ E|f(X_N) - f(R)|^2 / n (pathwise error^2 / n), not Var f / n as for the plain
estimator mean f(x_i) - E f(X) (Glasserman 2004, Monte Carlo Methods in Financial Engineering
§4.1; Giles 2008, multilevel Monte Carlo, uses the same coupling). The estimate is unbiased up to
the Richardson remainder, which is why the noise floor of every weak row adds the size of the
correction itself to the sampling floor: below it the reference could be what is measured.

Metrics (each returns value, standard error, noise floor and the plain estimator's standard error):
- `weak-mean` = ||E X_N - E X||, `weak-cov` = ||Cov X_N - Cov X||_F (second moments about the exact
  mean m: Cov X_N - Cov X = E(X_N - m)(X_N - m)^T - E(X - m)(X - m)^T - D D^T, D = E X_N - m);
- `weak-bump` = RMS over a fixed family of Gaussian bumps f_j(x) = exp(-|x - c_j|^2 / (2 s_j^2))
  of E f_j(X_N) - E f_j(X): centres drawn (fixed seed) from the exact law, widths 0.1, 0.3 and 1
  times its RMS coordinate spread;
- `mmd` = the Gaussian-kernel MMD between the laws of X_N and X (Gretton et al. 2012), bandwidth
  fixed per problem (median distance of exact samples): MMD^2 = ||E v||^2 in the kernel's feature
  space with v_i = phi(x_i) - (1 + c) phi(r_i) + c phi(rc_i), estimated without bias by the U-statistic
  (1 / n(n-1)) sum_{i != j} <v_i, v_j>, the paired form of Gretton's MMD^2_u.
Norms of estimated vectors are biased upward by noise: the noise floor of a norm is what it would
read with no signal, sqrt(trace Cov(d) / n), and bench/measure/orders.py ignores levels below 3x it.
Standard errors of norms come from the delta method.

Pathwise statistics of the per-sample distances |x_i - r_i|: `path-rms` (with its standard
error, median, 90 % quantile and the fraction of samples whose mode of the target differs from
their reference's), and `path-median`, whose order is not ruled by the few samples near a
separatrix that dominate the RMS on mixtures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from analytic.targets import GaussianMixture, IsotropicMixture

WEAK_METRICS: tuple[str, ...] = ("weak-mean", "weak-cov", "weak-bump", "mmd")
PATH_METRICS: tuple[str, ...] = ("path-rms", "path-median")
BUMPS = 64
BUMP_WIDTHS = (0.1, 0.3, 1.0)  # times the exact law's RMS coordinate spread
FAMILY_SEED = 0xB0B5  # test functions and kernel bandwidth are fixed per problem, never per run
MEDIAN_POINTS = 1000
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Paired:
    """Solver samples `x` with their reference `ref` and its coarse twin `coarse` (float64, (n, d)),
    and the Richardson weight c = 1 / (2^q - 1) of the reference's weak order q."""

    x: Tensor
    ref: Tensor
    coarse: Tensor
    richardson: float

    @staticmethod
    def of(x: Tensor, ref: Tensor, coarse: Tensor, ref_order: float) -> Paired:
        flat = [v.detach().to("cpu", torch.float64).reshape(len(v), -1) for v in (x, ref, coarse)]
        return Paired(*flat, richardson=1.0 / (2.0**ref_order - 1.0))


@dataclass(frozen=True)
class Estimate:
    """A metric value with its standard error and noise floor; `stderr_plain` is the standard error
    the plain estimator (solver samples against closed-form expectations) would have had."""

    value: float
    stderr: float
    noise_floor: float
    stderr_plain: float = math.nan


@dataclass(frozen=True)
class WeakFamily:
    """The fixed test functions of one exact law: the centre m of the second moments, the bumps
    (centres, widths) and the kernel bandwidth."""

    mean: Tensor
    centres: Tensor
    widths: Tensor
    bandwidth: float


def weak_family(law: GaussianMixture | IsotropicMixture) -> WeakFamily:
    """The family for an exact law, a deterministic function of the law (cached by its digest)."""
    key = law.key()
    if key not in _FAMILIES:
        if len(_FAMILIES) >= 64:
            _FAMILIES.clear()
        _FAMILIES[key] = _family(law)
    return _FAMILIES[key]


_FAMILIES: dict[bytes, WeakFamily] = {}


def _family(law: GaussianMixture | IsotropicMixture) -> WeakFamily:
    g = torch.Generator().manual_seed(FAMILY_SEED)
    centres = law.sample(BUMPS, g)
    spread = math.sqrt(float(torch.trace(law.cov())) / law.dim)
    widths = spread * torch.tensor([BUMP_WIDTHS[j % len(BUMP_WIDTHS)] for j in range(BUMPS)],
                                   dtype=torch.float64)
    pts = law.sample(MEDIAN_POINTS, g)
    dist = torch.cdist(pts, pts)
    bandwidth = float(dist[torch.triu_indices(len(pts), len(pts), 1).unbind()].median())
    return WeakFamily(law.mean(), centres, widths, bandwidth)


def bumps(x: Tensor, family: WeakFamily) -> Tensor:
    """(n, BUMPS) values exp(-|x - c_j|^2 / (2 s_j^2))."""
    return torch.exp(-_sq_dist(x, family.centres) / (2 * family.widths**2))


def differences(f, p: Paired) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample control-variate terms d_i (n, k), the Richardson correction's mean (k,) and the
    solver's own f(x_i) (for the plain estimator's variance)."""
    fx, fr, fc = f(p.x), f(p.ref), f(p.coarse)
    correction = p.richardson * (fc - fr)
    return fx - fr + correction, correction.mean(0), fx


def _norm_estimate(estimate: Tensor, influence: Tensor, correction: Tensor, plain: Tensor,
                   scale: float = 1.0) -> Estimate:
    """scale x ||estimate|| for an estimated vector with per-sample centred influence (n, k): delta-
    method standard error, noise floor sqrt(trace Cov / n) plus the correction's size."""
    n = len(influence)
    value = float(estimate.norm())
    direction = estimate / value if value > 0 else torch.zeros_like(estimate)

    def se(psi: Tensor) -> float:
        return float((psi @ direction).std() / math.sqrt(n)) if value > 0 else math.nan

    floor = math.sqrt(float(influence.var(0).sum()) / n) + float(correction.norm())
    return Estimate(scale * value, scale * se(influence), scale * floor, scale * se(plain - plain.mean(0)))


def weak_mean(p: Paired, family: WeakFamily) -> Estimate:
    d, corr, fx = differences(lambda v: v, p)
    est = d.mean(0)
    return _norm_estimate(est, d - est, corr, fx)


def _second_moments(m: Tensor):
    def f(v: Tensor) -> Tensor:
        c = v - m
        return (c[:, :, None] * c[:, None, :]).reshape(len(v), -1)
    return f


def weak_cov(p: Paired, family: WeakFamily) -> Estimate:
    d1, corr1, x1 = differences(lambda v: v - family.mean, p)
    d2, corr2, x2 = differences(_second_moments(family.mean), p)
    mean1, mean2 = d1.mean(0), d2.mean(0)
    outer = (mean1[:, None] * mean1[None, :]).reshape(-1)
    est = mean2 - outer

    def influence(a1: Tensor, a2: Tensor) -> Tensor:  # of D2 - D D^T, linearised
        c1, c2 = a1 - a1.mean(0), a2 - a2.mean(0)
        cross = c1[:, :, None] * mean1[None, None, :]
        return c2 - (cross + cross.transpose(1, 2)).reshape(len(a1), -1)

    return _norm_estimate(est, influence(d1, d2), corr2, influence(x1, x2))


def weak_bump(p: Paired, family: WeakFamily) -> Estimate:
    d, corr, fx = differences(lambda v: bumps(v, family), p)
    est = d.mean(0)
    return _norm_estimate(est, d - est, corr, fx, scale=1 / math.sqrt(BUMPS))


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances from the differences themselves: the matmul form |a|^2 + |b|^2 - 2 a.b loses
    the tiny differences between a sample and its reference to cancellation. In low dimension one
    broadcast difference per coordinate (several times faster than cdist, and no square root)."""
    if a.shape[1] > 8:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()
    out = (a[:, None, 0] - b[None, :, 0]).square_()
    for i in range(1, a.shape[1]):
        out += (a[:, None, i] - b[None, :, i]).square_()
    return out


def _kernel(a: Tensor, b: Tensor, h: float) -> Tensor:
    return _sq_dist(a, b).mul_(-1 / (2 * h * h)).exp_()


def _u_statistic(gram: Tensor) -> tuple[float, float, float]:
    """(U, its standard error, its standard deviation under no signal) of the degree-2 U-statistic
    with kernel matrix `gram` (Hoeffding: Var U = 4 (n-2) / (n (n-1)) zeta_1 + 2 / (n (n-1)) zeta_2)."""
    n = len(gram)
    off = gram.sum() - gram.diagonal().sum()
    u = float(off) / (n * (n - 1))
    h1 = (gram.sum(1) - gram.diagonal()) / (n - 1)
    zeta1 = float(h1.var())
    zeta2 = float((gram - u).square_().sum() - (gram.diagonal() - u).square_().sum()) / (n * (n - 1))
    null = math.sqrt(2 * zeta2 / (n * (n - 1)))
    return u, math.sqrt(max(4 * (n - 2) / (n * (n - 1)) * zeta1, 0.0) + null**2), null


_REFERENCE_GRAMS: dict[tuple, tuple] = {}


def _reference_grams(ref: Tensor, coarse: Tensor, h: float) -> tuple[Tensor, Tensor, Tensor, float]:
    """k(r, r), k(c, c), k(r, c) + k(c, r) and the reference's own Richardson MMD^2 term; these depend
    on the reference alone, which every solver sharing it reuses (kept for the latest reference)."""
    key = (ref.data_ptr(), coarse.data_ptr(), tuple(ref.shape), h)
    hit = _REFERENCE_GRAMS.get(key)
    if hit is not None and torch.equal(hit[0], ref) and torch.equal(hit[1], coarse):
        return hit[2]
    k_rr, k_cc, k_rc = _kernel(ref, ref, h), _kernel(coarse, coarse, h), _kernel(ref, coarse, h)
    k_rc = k_rc + k_rc.T
    grams = (k_rr, k_cc, k_rc, max(_u_statistic(k_cc + k_rr - k_rc)[0], 0.0))
    _REFERENCE_GRAMS.clear()
    _REFERENCE_GRAMS[key] = (ref, coarse, grams)
    return grams


def mmd(p: Paired, family: WeakFamily) -> Estimate:
    c, h = p.richardson, family.bandwidth
    k_rr, k_cc, k_rc, ref_term = _reference_grams(p.ref, p.coarse, h)
    k_xx, k_xr, k_xc = _kernel(p.x, p.x, h), _kernel(p.x, p.ref, h), _kernel(p.x, p.coarse, h)
    a = 1 + c
    gram = k_xx.add_(k_rr, alpha=a * a).sub_(k_xr, alpha=a).sub_(k_xr.T, alpha=a)
    if c:
        gram.add_(k_cc, alpha=c * c).add_(k_xc, alpha=c).add_(k_xc.T, alpha=c).sub_(k_rc, alpha=a * c)
    u, se_u, null = _u_statistic(gram)
    correction = c * math.sqrt(ref_term)
    value = math.sqrt(max(u, 0.0))
    se = se_u / (2 * value) if value > math.sqrt(se_u) else math.sqrt(se_u)
    # each <v_i, v_j> is a difference of O(1) kernel values: round-off leaves ~4 eps in U
    roundoff = math.sqrt(4 * torch.finfo(torch.float64).eps)
    return Estimate(value, se, math.sqrt(null) + correction + roundoff)


WEAK_ESTIMATORS = {"weak-mean": weak_mean, "weak-cov": weak_cov, "weak-bump": weak_bump, "mmd": mmd}


def weak_error(name: str, p: Paired, law: GaussianMixture) -> Estimate:
    """Weak metric `name` of the solver samples in `p` against the exact law `law`."""
    return WEAK_ESTIMATORS[name](p, weak_family(law))


# -- pathwise statistics -----------------------------------------------------------------------

def _distances(a: Tensor, b: Tensor) -> Tensor:
    return (a.to(torch.float64) - b.to(torch.float64)).reshape(len(a), -1).norm(dim=1)


def _median_with_se(d: Tensor) -> tuple[float, float]:
    """Median and a distribution-free standard error: the binomial 95 % order-statistic interval
    of the median divided by 2 x 1.96."""
    s, n = torch.sort(d).values, len(d)
    half = Z95 * math.sqrt(n) / 2
    lo, hi = max(int(math.floor(n / 2 - half)), 0), min(int(math.ceil(n / 2 + half)), n - 1)
    return float(d.median()), float(s[hi] - s[lo]) / (2 * Z95)


@dataclass(frozen=True)
class PathStats:
    rms: float
    rms_stderr: float
    median: float
    median_stderr: float
    q90: float
    mode_flips: float  # fraction of samples whose mode differs from their reference's
    floor_rms: float  # the same statistics between the reference and its coarse twin
    floor_median: float


def path_stats(x: Tensor, ref: Tensor, coarse: Tensor, law: GaussianMixture) -> PathStats:
    """Pathwise statistics of |x_i - r_i|; modes are the components of `law` (the exact law at the
    end point) with the largest responsibility."""
    d = _distances(x, ref)
    n = len(d)
    rms = float(d.pow(2).mean().sqrt())
    rms_se = float(d.pow(2).std()) / (2 * rms * math.sqrt(n)) if rms > 0 else 0.0
    median, median_se = _median_with_se(d)
    flips = 0.0
    if law.k > 1:
        flat = x.to(torch.float64).reshape(n, -1), ref.to(torch.float64).reshape(n, -1)
        modes = [law.responsibilities(v).argmax(1) for v in flat]
        flips = float((modes[0] != modes[1]).double().mean())
    floor = _distances(coarse, ref)
    return PathStats(rms, rms_se, median, median_se, float(torch.quantile(d, 0.9)), flips,
                     float(floor.pow(2).mean().sqrt()), float(floor.median()))


def paired_row(name: str, x: Tensor, ref, law: GaussianMixture) -> dict:
    """The row fields (value, stderr, noise_floor, ...) of weak or pathwise metric `name` for solver
    samples `x` against a bench.measure.reference.Reference `ref`, `law` the exact law at the end point."""
    if name in WEAK_METRICS:
        est = weak_error(name, Paired.of(x, ref.x, ref.coarse, ref.order), law)
        return {"value": est.value, "stderr": est.stderr, "noise_floor": est.noise_floor,
                "stderr_plain": est.stderr_plain}
    if name not in PATH_METRICS:
        raise KeyError(name)
    stats = path_stats(x, ref.x, ref.coarse, law)
    row = {"path_median": stats.median, "path_q90": stats.q90, "mode_flips": stats.mode_flips}
    if name == "path-rms":  # the reference's self-check (N vs 2N) is its floor
        return {**row, "value": stats.rms, "stderr": stats.rms_stderr, "noise_floor": ref.error}
    return {**row, "value": stats.median, "stderr": stats.median_stderr, "noise_floor": stats.floor_median}
