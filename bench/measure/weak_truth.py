"""Exact weak expectations E f(X_N) of a solver's output in 1-D, by quadrature (no Monte Carlo).

The solver runs with the exact analytic model on the given grid (float64) from x_T ~ p_{times[0]},
the exact noised mixture sum_k w_k N(m_k, s_k^2). Integrals against a mixture are taken per
component in z = (x - m_k) / s_k on [-tail, tail] (weight phi(z) exact) by adaptive composite
Gauss-Legendre (16 nodes a panel, open panels split in 4 until the parts agree with the whole to
`rtol`), so the steep parts of the integrand are resolved where they are: a flow that splits the
modes has slope ~ p_T / p_N at the separatrix, ~400 on a bimodal target, and a near-jump on
well-separated narrow modes.

Deterministic solvers (single- or multistep): X_N = Phi(x_T) is a pointwise map, run vectorised on
each round's nodes; E f(X_N) = int f(Phi(x)) p_T(x) dx.

Stochastic solvers whose step is x' = a_k(x) + b_k xi (one standard normal, b_k independent of x,
no memory): the backward Kolmogorov recursion u_N = f, u_k = v_{k+1} o a_k with v_{k+1}(y) =
E u_{k+1}(y + b_k xi), and E f(X_N) = int u_0 p_T. Functions are propagated rather than the density,
whose kernel near t_min is far narrower than any affordable grid. u_k (k >= 1) is held on a uniform
x-grid with a degree-7 interpolating spline; v_{k+1} is the trapezoidal (FFT) convolution of the
grid values with N(0, b_k^2) when b_k >= 2 h (spectrally accurate; u_{k+1} may be much narrower than
b_k, e.g. behind a coarse step that is steep at a separatrix, where Gauss-Hermite in xi fails), else
Gauss-Hermite on the spline; the last step integrates f itself (Gauss-Hermite, then composite
Gauss-Legendre in xi until converged). The x-grids span where the chain has mass, from a
conservative forward pass of its law on bins (mass moved by a_k, spread by b_k, bins below the
prior's tail mass beyond `tail` sigma dropped); u_k is constant beyond. a_k and b_k come from
`solver.step` with every draw 0 and 1; each step is checked to draw at most one `normal` and no
`extra`, to leave no multistep memory, to be affine in the draw (a third value) and to have b_k
independent of x; anything else is refused with ValueError, as are batch-coupled solvers
(`affine = False`: adaptive step control) and problems with d != 1.

Accuracy (tests/test_weak_truth.py): E X_N, E X_N^2 agree with bench.measure.exact_law's Gaussian output law
to ~5e-14 for ddim, heun, euler-maruyama and ddpm at 8-128 steps; on a bimodal mixture, doubling
every resolution (and tail 11 -> 13) moves E f by < 1e-14 (f = x, x^2, a bump) at 8-128 steps, and a
two-step chain agrees with a brute-force tensor quadrature to ~1e-13.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy.interpolate import BSpline, make_interp_spline
from scipy.linalg import lapack
from scipy.signal import fftconvolve
from scipy.special import ndtr

from analytic.problems import Problem
from bench.measure.models import analytic_model
from solvers.base import Solver
from solvers.loop import check_grid, sample
from solvers.model import Model
from solvers.noise import NoiseSource

Funcs = Callable[[np.ndarray], np.ndarray]
Values = Callable[[np.ndarray], np.ndarray]  # (m,) points -> (m, k) values

PANEL_ORDER = 16  # Gauss-Legendre nodes per panel
SPLINE_DEGREE = 7
SPLIT = 4  # parts an unresolved panel is split into per round
MAX_ROUNDS = 24  # a panel then spans 2 tail / (panels 4^24) standard deviations
MAX_OPEN = 1 << 16  # open panels beyond which the quadrature gives up
SUPPORT_BINS = 2001  # bins of the forward pass that finds where the chain has mass
CONVOLVE_MIN = 2.0  # convolve on the grid when b_k >= CONVOLVE_MIN * h; Gauss-Hermite otherwise


def _panel_rule(lo: float, hi: float, panels: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi]."""
    z, w = leggauss(PANEL_ORDER)
    edges = np.linspace(lo, hi, panels + 1)
    half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + half[:, None] * z).ravel(), (half[:, None] * w).ravel()


def _components(problem: Problem, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and standard deviations of the 1-D marginal p_t."""
    if problem.dim != 1:
        raise ValueError(f"weak_truth is 1-D only; problem {problem.name!r} has dim {problem.dim}")
    law = problem.marginal(t)
    return (law.weights.numpy().astype(np.float64), law.means[:, 0].numpy().astype(np.float64),
            np.sqrt(law.covs[:, 0, 0].numpy().astype(np.float64)))


def _evaluate(funcs: Funcs, x: np.ndarray) -> np.ndarray:
    values = np.asarray(funcs(np.ascontiguousarray(x, dtype=np.float64)), dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != len(x):
        raise ValueError(f"funcs must map (m,) points to (m, k) values; got shape {values.shape} "
                         f"for m = {len(x)}")
    return values


def mixture_integral(problem: Problem, t: float, g: Values, *, panels: int = 32, tail: float = 11.0,
                     rtol: float = 1e-12) -> np.ndarray:
    """int g(x) p_t(x) dx, shape (k,), by adaptive composite Gauss-Legendre per mixture component.

    Each component starts with `panels` panels in z on [-tail, tail]. Every round splits each open
    panel into SPLIT parts; a panel is closed when its 16-node value and the sum over its parts differ
    by at most rtol * ((its share of 2 tail + 1 / MAX_OPEN) * scale + its own integral of |g|)
    (scale: the first pass's integral of |g|; the last two terms absorb the rounding of g, which a
    steep map amplifies), its parts opened otherwise, for at most MAX_ROUNDS rounds (a jump of g at
    double precision is then bracketed to ~1e-15). A closed panel contributes the sum over its parts,
    whose error is far below that difference where GL-16 converges (by ~SPLIT^-32)."""
    weights, means, stds = _components(problem, t)
    z_gl, w_gl = leggauss(PANEL_ORDER)
    norm = 1.0 / math.sqrt(2 * math.pi)

    def panel_values(comp: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        z = mid[:, None] + half[:, None] * z_gl
        x = means[comp][:, None] + stds[comp][:, None] * z
        vals = g(x.ravel()).reshape(len(comp), PANEL_ORDER, -1)
        wz = half[:, None] * w_gl * np.exp(-0.5 * z * z) * (norm * weights[comp])[:, None]
        return np.einsum("pq,pqf->pf", wz, vals), np.einsum("pq,pqf->pf", wz, np.abs(vals))

    edges = np.linspace(-tail, tail, panels + 1)
    comp = np.repeat(np.arange(len(weights)), panels)
    lo, hi = np.tile(edges[:-1], len(weights)), np.tile(edges[1:], len(weights))
    current, scale = panel_values(comp, lo, hi)
    scale = np.maximum(scale.sum(axis=0), np.finfo(np.float64).tiny)
    total = np.zeros_like(scale)
    fractions = np.linspace(0.0, 1.0, SPLIT + 1)
    for rounds in range(MAX_ROUNDS + 1):
        cuts = lo[:, None] + (hi - lo)[:, None] * fractions
        part_comp, part_lo, part_hi = np.repeat(comp, SPLIT), cuts[:, :-1].ravel(), cuts[:, 1:].ravel()
        parts, sizes = panel_values(part_comp, part_lo, part_hi)
        fine = parts.reshape(len(comp), SPLIT, -1).sum(axis=1)
        size = sizes.reshape(len(comp), SPLIT, -1).sum(axis=1)
        allowed = rtol * (((hi - lo) / (2 * tail) + 1.0 / MAX_OPEN)[:, None] * scale + size)
        done = (np.abs(fine - current) <= allowed).all(axis=1)
        if rounds == MAX_ROUNDS:
            done[:] = True
        total += fine[done].sum(axis=0)
        if done.all():
            break
        if (~done).sum() * SPLIT > MAX_OPEN:
            raise ValueError(f"adaptive quadrature did not converge: {(~done).sum()} panels still change "
                             f"by more than rtol = {rtol:g} after {rounds + 1} rounds")
        keep = np.repeat(~done, SPLIT)
        comp, lo, hi, current = part_comp[keep], part_lo[keep], part_hi[keep], parts[keep]
    return total


def exact_marginal_expectation(problem: Problem, t: float, funcs: Funcs, *, panels: int = 32,
                               tail: float = 11.0, rtol: float = 1e-12) -> np.ndarray:
    """E f_j(x_t), shape (k,), for x_t ~ p_t (the exact noised marginal), by quadrature."""
    return mixture_integral(problem, float(t), lambda x: _evaluate(funcs, x), panels=panels, tail=tail,
                            rtol=rtol)


class _ConstantNoise(NoiseSource):
    """Every draw equals `value`; counts the draws of each kind."""

    def __init__(self, value: float) -> None:
        self.value, self.normals, self.extras = value, 0, 0

    def normal(self, t0: float, t1: float, like: torch.Tensor) -> torch.Tensor:
        self.normals += 1
        return torch.full_like(like, self.value)

    def extra(self, t: float, k: int, like: torch.Tensor) -> torch.Tensor:
        self.extras += 1
        return torch.full_like(like, self.value)


class _StepProbe:
    """Runs single steps of a stateless single-draw solver with constant draws and checks its form."""

    def __init__(self, solver: Solver, model: Model, times: torch.Tensor) -> None:
        self.solver, self.model, self.times = solver, model, times
        self.grid = times.tolist()

    def run(self, k: int, x: np.ndarray, value: float) -> tuple[np.ndarray, int]:
        solver = self.solver
        xt = torch.from_numpy(np.array(x, dtype=np.float64))[:, None]
        state = solver.init_state(xt, self.times)
        state.i = k
        noise = _ConstantNoise(value)
        with torch.no_grad():
            out = solver.step(self.model, xt, self.grid[k], self.grid[k + 1], state, noise)
        if noise.extras:
            raise ValueError(f"{solver.label} draws corrector noise (noise.extra): its step is not "
                             "x' = a(x) + b xi with one draw")
        if noise.normals > 1:
            raise ValueError(f"{solver.label} draws {noise.normals} normals in one step; only one "
                             "draw per step is supported")
        if state.history or state.extra:
            raise ValueError(f"{solver.label} carries state between steps (multistep memory); only "
                             "stateless single-step stochastic solvers are supported")
        return out.reshape(len(x)).numpy(), noise.normals

    def affine(self, k: int, x: np.ndarray, check_value: float | None = None) -> tuple[np.ndarray, float]:
        """(a_k(x), b_k), after checking that b does not depend on x and, with `check_value`, that
        the step is affine in the draw."""
        label = self.solver.label
        a, n0 = self.run(k, x, 0.0)
        one, n1 = self.run(k, x, 1.0)
        slopes = one - a
        draws = {n0, n1}
        if check_value is not None:
            other, n2 = self.run(k, x, check_value)
            draws.add(n2)
        if len(draws) != 1:
            raise ValueError(f"{label}: the number of draws in step {k} depends on their value")
        if not (np.isfinite(a).all() and np.isfinite(slopes).all()):
            raise ValueError(f"{label}: non-finite output in step {k}")
        if n0 == 0:
            if slopes.any():
                raise ValueError(f"{label}: step {k} draws nothing yet depends on the noise")
            return a, 0.0
        b = float(np.median(slopes))
        tol = 1e-11 * (float(np.abs(a).max()) + abs(b))  # rounding of one - a is ~1e-16 of that
        if float(np.abs(slopes - b).max()) > tol:
            raise ValueError(f"{label}: the noise coefficient of step {k} depends on x (it spans "
                             f"{float(np.ptp(slopes)):.3g} around {b:.3g}); only x' = a(x) + b xi "
                             "is supported")
        if check_value is not None and float(np.abs(other - a - check_value * slopes).max()) > 10 * tol:
            raise ValueError(f"{label}: step {k} is not affine in its draw")
        return a, b


def _supports(problem: Problem, probe: _StepProbe, t_max: float, steps: int, points: int, tail: float
              ) -> tuple[list[tuple[float, float]], list[float]]:
    """The x-interval holding the chain's mass before step k (index k) and b_k, from a conservative
    forward pass of the law on `points` bins: each bin's mass moves to a_k(bin) (shared linearly
    between the two nearest new bins, which smears by at most one bin) and spreads by N(0, b_k^2)
    (direct convolution, so tiny tails keep their relative accuracy); bins whose mass is below the
    prior's two-sided tail mass beyond `tail` standard deviations count as empty."""
    weights, means, stds = _components(problem, t_max)
    floor = math.erfc(tail / math.sqrt(2))
    lo, hi = float((means - tail * stds).min()), float((means + tail * stds).max())
    x = np.linspace(lo, hi, points)
    h = x[1] - x[0]
    left, right = (x[:, None] - 0.5 * h - means) / stds, (x[:, None] + 0.5 * h - means) / stds
    within = np.where(left > 0, ndtr(-left) - ndtr(-right), ndtr(right) - ndtr(left))  # tails stay exact
    mass = within @ weights
    domains: list[tuple[float, float]] = [(lo, hi)]
    bs = []
    for k in range(steps):
        live = mass > floor
        a, b = probe.affine(k, x[live], check_value=-2.5)
        bs.append(b)
        lo, hi = float(a.min()) - tail * b, float(a.max()) + tail * b
        width = max(hi - lo, 1e-9 * max(abs(lo), abs(hi), 1.0))
        lo, hi = lo - 0.01 * width, hi + 0.01 * width
        x = np.linspace(lo, hi, points)
        h = x[1] - x[0]
        pos = (a - lo) / h
        left = np.clip(np.floor(pos).astype(np.int64), 0, points - 2)
        frac = pos - left
        mass = (np.bincount(left, mass[live] * (1 - frac), points)
                + np.bincount(left + 1, mass[live] * frac, points))
        if b > 0:
            reach = math.ceil(tail * b / h)
            kernel = np.exp(-0.5 * (h * np.arange(-reach, reach + 1) / b) ** 2)
            mass = np.convolve(mass, kernel / kernel.sum())[reach:reach + points]
        live = np.flatnonzero(mass > floor)
        domains.append((float(x[live[0]] - 2 * h), float(x[live[-1]] + 2 * h)))
    return domains, bs


@lru_cache(maxsize=4)
def _collocation(points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Not-a-knot knots and the banded LU factors of the collocation matrix of degree-SPLINE_DEGREE
    interpolation at 0, 1, ..., points - 1; every uniform grid of that size is an affine image of
    it, with the same coefficients."""
    ref = np.arange(points, dtype=np.float64)
    knots = make_interp_spline(ref, np.zeros(points), k=SPLINE_DEGREE).t
    m = BSpline.design_matrix(ref, knots, SPLINE_DEGREE).tocoo()
    lower, upper = int((m.row - m.col).max()), int((m.col - m.row).max())
    banded = np.zeros((2 * lower + upper + 1, points))  # LAPACK gbtrf layout, room for fill-in
    banded[lower + upper + m.row - m.col, m.col] = m.data
    factors, pivots, info = lapack.dgbtrf(banded, lower, upper)
    if info != 0:
        raise RuntimeError(f"spline collocation matrix is singular (dgbtrf info {info})")
    return knots, factors, pivots, lower, upper


def _interpolant(x: np.ndarray, u: np.ndarray) -> BSpline:
    """The interpolating spline of the values u (n, k) on the uniform grid x."""
    knots, factors, pivots, lower, upper = _collocation(len(x))
    coef, info = lapack.dgbtrs(factors, lower, upper, u, pivots)
    if info != 0:
        raise RuntimeError(f"spline solve failed (dgbtrs info {info})")
    return BSpline(x[0] + (x[-1] - x[0]) / (len(x) - 1) * knots, coef, SPLINE_DEGREE)


def _spline_values(spline: BSpline, domain: tuple[float, float]) -> Values:
    """y -> spline(y) with y clamped to the domain, queries sorted (the evaluator walks intervals)."""

    def values(y: np.ndarray) -> np.ndarray:
        y = np.clip(y, *domain)
        order = np.argsort(y, kind="stable")
        out = np.empty((len(y),) + spline.c.shape[1:])
        out[order] = spline(y[order])
        return out

    return values


def _hermite_values(u: Values, b: float, xi: np.ndarray, w_xi: np.ndarray) -> Values:
    """y -> sum_i w_i u(y + b xi_i) = E u(y + b xi)."""

    def values(y: np.ndarray) -> np.ndarray:
        vals = u((y[:, None] + b * xi).ravel())
        return np.einsum("j,njf->nf", w_xi, vals.reshape(len(y), len(xi), -1))

    return values


def _smoothed(x: np.ndarray, u: np.ndarray, domain: tuple[float, float], b: float, tail: float,
              xi: np.ndarray, w_xi: np.ndarray) -> Values:
    """y -> E u(y + b xi) for u given by its values on the uniform grid x (constant beyond)."""
    h = (x[-1] - x[0]) / (len(x) - 1)
    if b == 0.0:
        return _spline_values(_interpolant(x, u), domain)
    if b < CONVOLVE_MIN * h:
        return _hermite_values(_spline_values(_interpolant(x, u), domain), b, xi, w_xi)
    reach = math.ceil(tail * b / h)
    offsets = h * np.arange(-reach, reach + 1)
    kernel = h * np.exp(-0.5 * (offsets / b) ** 2) / (b * math.sqrt(2 * math.pi))
    padded = np.pad(u, ((reach, reach), (0, 0)), mode="edge")
    v = fftconvolve(padded, kernel[:, None], mode="valid", axes=0)
    return _spline_values(_interpolant(x, v), domain)


def _expect_f(funcs: Funcs, y: np.ndarray, b: float, xi: np.ndarray, w_xi: np.ndarray) -> np.ndarray:
    """sum_i w_i f(y + b xi_i) in chunks of at most ~2^21 evaluations."""
    chunk = max(1, (1 << 21) // len(xi))
    parts = []
    for start in range(0, len(y), chunk):
        part = y[start:start + chunk]
        vals = _evaluate(funcs, (part[:, None] + b * xi).ravel())
        parts.append(np.einsum("j,njf->nf", w_xi, vals.reshape(len(part), len(xi), -1)))
    return np.concatenate(parts)


def _final_smoothing(funcs: Funcs, b: float, nodes: int, tail: float, label: str) -> Values:
    """y -> E f(y + b xi) on f itself (known exactly, so it need not be resolved by any grid):
    Gauss-Hermite with `nodes` and twice as many (exact for polynomials); if they differ, composite
    Gauss-Legendre in xi on [-tail, tail] with weight phi, doubling its panels until two agree."""

    def converged(after: np.ndarray, before: np.ndarray) -> bool:
        return bool(np.all(np.abs(after - before) <= 1e-13 * np.abs(after).max(axis=0)))

    def values(y: np.ndarray) -> np.ndarray:
        if b == 0.0:
            return _evaluate(funcs, y)
        rules = []
        for n in (nodes, 2 * nodes):
            xi, w_xi = hermegauss(n)
            rules.append((xi, w_xi / w_xi.sum()))
        for panels in (16 * 2**i for i in range(6)):
            xi, w_xi = _panel_rule(-tail, tail, panels)
            rules.append((xi, w_xi * np.exp(-0.5 * xi * xi) / math.sqrt(2 * math.pi)))
        before = None
        for i, (xi, w_xi) in enumerate(rules):
            after = _expect_f(funcs, y, b, xi, w_xi)
            if before is not None and i != 2 and converged(after, before):
                return after
            before = after
        raise ValueError(f"{label}: E f(y + b xi) over the last step (b = {b:.3g}) does not converge; "
                         "f must be smooth on that scale")

    return values


def _stochastic(problem: Problem, solver: Solver, model: Model, times: torch.Tensor, funcs: Funcs,
                panels: int, grid_points: int, hermite_nodes: int, tail: float, rtol: float) -> np.ndarray:
    steps = len(times) - 1
    probe = _StepProbe(solver, model, times)
    t_max = float(times[0])
    domains, bs = _supports(problem, probe, t_max, steps, SUPPORT_BINS, tail)
    xi, w_xi = hermegauss(hermite_nodes)
    w_xi = w_xi / w_xi.sum()

    def checked(k: int, x: np.ndarray) -> np.ndarray:
        a, b = probe.affine(k, x)
        if abs(b - bs[k]) > 1e-11 * (float(np.abs(a).max()) + abs(b)):
            raise ValueError(f"{solver.label}: the noise coefficient of step {k} depends on x")
        return a

    smooth = _final_smoothing(funcs, bs[-1], hermite_nodes, tail, solver.label)  # v_N
    for k in range(steps - 1, 0, -1):
        x = np.linspace(*domains[k], grid_points)
        u = smooth(checked(k, x))  # u_k on the grid
        smooth = _smoothed(x, u, domains[k], bs[k - 1], tail, xi, w_xi)  # v_k
    return mixture_integral(problem, t_max, lambda x: smooth(checked(0, x)), panels=panels, tail=tail,
                            rtol=rtol)


def _deterministic(problem: Problem, solver: Solver, model: Model, times: torch.Tensor, funcs: Funcs,
                   panels: int, tail: float, rtol: float) -> np.ndarray:
    def flow(x: np.ndarray) -> np.ndarray:
        out = sample(solver, model, times, torch.from_numpy(x)[:, None]).x[:, 0].numpy()
        if not np.isfinite(out).all():
            raise ValueError(f"{solver.label}: non-finite output from x_T = {x[~np.isfinite(out)][0]:.6g}")
        return out

    probes = np.linspace(-3.0, 3.0, 7) * float(_components(problem, float(times[0]))[2].max())
    checked = False

    def integrand(x: np.ndarray) -> np.ndarray:
        nonlocal checked
        if checked:
            return _evaluate(funcs, flow(x))
        out = flow(np.concatenate([x, probes]))  # the probes within a large batch, then alone
        if not np.allclose(flow(probes), out[len(x):], rtol=1e-9, atol=1e-12):
            raise ValueError(f"{solver.label}: the output of a point depends on the rest of the batch")
        checked = True
        return _evaluate(funcs, out[:len(x)])

    return mixture_integral(problem, float(times[0]), integrand, panels=panels, tail=tail, rtol=rtol)


def exact_expectation(problem: Problem, solver: Solver, times: torch.Tensor, funcs: Funcs, *,
                      panels: int = 32, grid_points: int = 8001, hermite_nodes: int = 32,
                      tail: float = 11.0, rtol: float = 1e-12) -> np.ndarray:
    """E f_j(X_N), shape (k,), for the solver run with the exact analytic model on `times` (float64)
    from x_T ~ p_{times[0]}; `funcs` maps (m,) points to (m, k) values.

    Resolution: `panels` initial Gauss-Legendre panels per prior component and `rtol` their
    refinement tolerance, `grid_points` x-grid points per step and `hermite_nodes` Gauss-Hermite
    nodes (stochastic solvers), `tail` standard deviations covered; the defaults reach ~1e-13 on
    the tests' problems. Deterministic solvers may be multistep; stochastic ones must take steps
    x' = a(x) + b xi with one standard normal per step and no memory (ValueError otherwise). For
    stochastic solvers f must be smooth: E f(a(x) + b xi) is interpolated on the x-grid, and an f
    whose last-step integral over xi does not converge (an indicator) is refused with ValueError;
    deterministic solvers take any f (the adaptive quadrature brackets a jump)."""
    if problem.dim != 1:
        raise ValueError(f"weak_truth is 1-D only; problem {problem.name!r} has dim {problem.dim}")
    times = times.to(torch.float64)
    check_grid(solver, times)
    if not solver.affine:
        raise ValueError(f"{solver.label}: its steps depend on the whole batch (affine = False, e.g. "
                         "adaptive step control), so its output is no pointwise map of x_T")
    model = analytic_model(problem)
    prime = getattr(model.schedule, "prime", None)
    if prime is not None:
        prime(times)
    if not solver.stochastic:
        return _deterministic(problem, solver, model, times, funcs, panels, tail, rtol)
    if "multistep" in solver.all_tags:
        raise ValueError(f"{solver.label} is a multistep stochastic solver: its steps are not "
                         "x' = a(x) + b xi without memory")
    return _stochastic(problem, solver, model, times, funcs, panels, grid_points, hermite_nodes, tail, rtol)
