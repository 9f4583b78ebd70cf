"""Pathwise references for the `path-rms` metric: the exact flow of x_T, to far better accuracy
than the solvers it judges.

ODE solvers are compared with one shared solution of the probability-flow ODE from the same x_T.
The default integrator is classical RK4 in log-SNR on the scaled state x~ = x / alpha, where the
PF-ODE reads dx~/dlambda = -sigma~ eps_hat (sigma~ = e^-lambda; Karras et al. 2022 eq. 4 with
sigma~ as time, Lu et al. 2022 eq. 3.4). Its Jacobian is sigma~^2 (Sigma + sigma~^2)^-1 for a
Gaussian component, of norm <= 1, so the ODE is not stiff in lambda however small t_min is, and
RK4 on a uniform lambda grid converges at order 4 all the way.

SDE solvers are compared with a fine-step run driven by the same Brownian path of an integrator of the
same limiting SDE: one shared exp-sde run for every solver whose `sde_limit` is the reverse SDE, one
edm-stochastic run for both EDM churn samplers (one reference per problem, path and limit, not per
solver), else a fine run of the *same* solver (same parameters, hence the same limit):
`brownian_noise(problem, seed)` is a virtual Brownian tree on [t_min, t_max], so coarse and fine grids
see consistent increments. Solvers that draw `noise.extra` (Langevin correctors) get fresh draws per
grid time and have no pathwise limit: their path metrics are skipped and the reverse-SDE run serves
their weak metrics.

Self-check: every reference is computed at N and 2N steps (doubling N until the two agree to
`tol`, if given) and returns the 2N run with `error` = path-rms(x_N, x_2N). For an order-p method
that overestimates the 2N run's own error by 2^p - 1 (15x for RK4; about 1x for strong order 1),
so it is a safe floor: the sweep records it as `noise_floor` of path-rms rows, and bench/measure/orders.py
then excludes errors below 3x it. References are cached in memory (and on disk under `cache_dir`)
keyed by problem, schedule, interval, model name, method, grid, a digest of x_T and, for SDEs,
the seed and solver.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from analytic.grids import make_grid
from analytic.problems import Problem
from solvers.base import REVERSE_SDE, Solver, State
from solvers.loop import sample
from solvers.model import Model
from solvers.noise import BrownianTreeNoise, NoiseSource, brownian_path
from solvers.registry import make_solver

DEFAULT_ODE_STEPS = 128  # RK4-logSNR: compared at 128 and 256 steps (1536 NFE in all)
DEFAULT_SDE_STEPS = 4096  # strong order 1: compared at 4096 and 8192 steps
MAX_STEPS = 2**16
BUILTIN_ODE_METHOD = "rk4-logsnr"
LIMIT_INTEGRATORS = {REVERSE_SDE: "exp-sde"}  # the fine integrator of each shared pathwise limit

_CACHE: dict[str, Reference] = {}


@dataclass
class Reference:
    x: Tensor  # the 2N-step solution, float64
    error: float  # path-rms between the N- and 2N-step solutions (upper estimate of x's error)
    steps: int  # steps of the returned (finer) run
    method: str  # integrator label
    grid: str
    coarse: Tensor  # the N-step solution (Richardson estimates of the reference's weak bias)
    order: float  # the integrator's weak order (RK4: 4; an SDE solver: its asymptotic weak order)


@dataclass
class RK4LogSNR(Solver):
    """Classical RK4 (Kutta 1901) in lambda on x~ = x / alpha: dx~/dlambda = -e^-lambda eps_hat.
    Order 4, 4 NFE per step; not registered (it is the harness's reference, not a benchmarked
    solver)."""

    name = BUILTIN_ODE_METHOD
    order = 4
    nfe_per_step = 4
    time_variable = "lambda"
    reference = "Kutta 1901 RK4 on the PF-ODE in log-SNR (Lu et al. 2022 eq. 3.4)"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        lam0, lam1 = float(sched.log_snr(t)), float(sched.log_snr(t_next))
        h = lam1 - lam0
        t_mid = float(sched.t_of_log_snr(lam0 + 0.5 * h))

        def rhs(y: Tensor, tt: float, lam: float) -> Tensor:
            alpha = float(sched.alpha(tt))
            return -math.exp(-lam) * model(alpha * y, tt).eps

        y = x / float(sched.alpha(t))
        k1 = rhs(y, t, lam0)
        k2 = rhs(y + 0.5 * h * k1, t_mid, lam0 + 0.5 * h)
        k3 = rhs(y + 0.5 * h * k2, t_mid, lam0 + 0.5 * h)
        k4 = rhs(y + h * k3, t_next, lam1)
        return float(sched.alpha(t_next)) * (y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))


def weak_order(solver: Solver) -> float:
    """The asymptotic weak order the theory guarantees for `solver` (its cap when the
    implementation lowers the nominal order): the q of the reference's Richardson correction."""
    return float(solver.order if solver.order_cap is None else min(solver.order, solver.order_cap))


def shared_limit(solver: Solver) -> str | None:
    """The pathwise limit whose one shared fine run is `solver`'s reference, or None (its own fine
    run). A sampler with no pathwise limit (`pathwise` false) shares the reverse-SDE run, whose law
    is all its weak metrics need."""
    return solver.sde_limit if solver.pathwise else REVERSE_SDE


def limit_integrator(limit: str) -> str:
    """The solver spec whose fine run integrates pathwise limit `limit`: LIMIT_INTEGRATORS for the
    reverse SDE, else the limit's own name (a registered solver spec, Sampler.sde_limit)."""
    return LIMIT_INTEGRATORS.get(limit, limit)


def integrator_for(solver: Solver | None, ode_method: str = BUILTIN_ODE_METHOD) -> Solver:
    """What integrates the exact flow `solver` is judged against: the shared limit's integrator for a
    stochastic solver with one (`shared_limit`), the solver itself for another stochastic one, else the
    ODE integrator `ode_method` (deterministic)."""
    if solver is not None and solver.stochastic:
        limit = shared_limit(solver)
        return make_solver(limit_integrator(limit)) if limit else solver
    integrator = RK4LogSNR() if ode_method == BUILTIN_ODE_METHOD else make_solver(ode_method)
    if integrator.stochastic:
        raise ValueError(f"reference method {ode_method!r} is stochastic; an ODE reference needs a "
                         "deterministic solver")
    return integrator


def self_checked(run: Callable[[int], Tensor], steps: int, tol: float | None = None
                 ) -> tuple[Tensor, Tensor, float, int]:
    """(fine, coarse, error, fine steps) of a reference `run(k)` (the solution after k steps): run at N
    and 2N steps, doubling N while path-rms(x_N, x_2N) > tol (if given, up to MAX_STEPS); `error` is
    that path-rms, an upper estimate of the fine run's error (module docstring)."""
    coarse = run(steps)
    while True:
        fine = run(2 * steps)
        error = path_rms(coarse, fine)
        steps *= 2
        if tol is None or error <= tol or 2 * steps > MAX_STEPS or not math.isfinite(error):
            return fine, coarse, error, steps
        coarse = fine


def brownian_noise(problem: Problem, seed: int) -> BrownianTreeNoise:
    """The Brownian path of run `seed` on the problem's interval (solvers.noise.brownian_path, what
    a stochastic Solver's `noise_source` gives): drive the coarse solver with it to compare with
    references."""
    return brownian_path(seed, problem.t_min, problem.t_max)


def path_rms(x: Tensor, x_ref: Tensor) -> float:
    """sqrt(mean over samples of ||x - x_ref||^2), in float64."""
    diff = (x.to(torch.float64) - x_ref.to(torch.float64)).reshape(len(x), -1)
    return float(diff.pow(2).sum(dim=1).mean().sqrt())


def _digest(x: Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _key(problem: Problem, model_name: str, model: Model, method: str, grid: str, x_T: Tensor,
         extra: tuple) -> str:
    parts = (problem.name, problem.schedule.name, repr(problem.t_min), repr(problem.t_max), model_name,
             model.parameterization, method, grid, tuple(x_T.shape), _digest(x_T), *extra)
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def reference(problem: Problem, model: Model, x_T: Tensor, seed: int, solver: Solver | None = None, *,
              method: str | None = None, steps: int | None = None, grid: str = "logsnr",
              tol: float | None = None, cache_dir: str | Path | None = None,
              model_name: str = "exact", noise_seed: int | None = None,
              denoise_final: bool = False) -> Reference:
    """The pathwise reference from x_T ~ p_{t_max} to t_min, with its self-checked error.

    `solver`: the solver being judged. A stochastic one with an `sde_limit` shares one fine run of that
    limit's integrator (`limit_integrator`) on the Brownian path of `seed` with every solver of the same
    limit (the reverse SDE: exp-sde, whose linear part and noise variance are exact); one with no
    pathwise limit (`pathwise` false) the same reverse-SDE run, whose law is all its weak metrics need;
    other stochastic ones get a fine run of themselves; a deterministic one (or None) the shared ODE
    reference. `method`: the ODE integrator, BUILTIN_ODE_METHOD (default) or any registered
    deterministic solver by name (e.g. "dpm-solver-3", "rk4"). `steps`: N of the N-vs-2N check. `tol`:
    double N until the check's error is below tol (absolute path-rms), up to MAX_STEPS. `model_name`
    names the model in cache keys ("exact" for the analytic score). `noise_seed`: the seed of the
    Brownian tree that drove the judged SDE run (default `seed`); it must be the same path.
    `denoise_final`: apply the model's x0 prediction at t_min to the reference too (as
    `sample(denoise_final=True)` does).
    """
    ref = _reference(problem, model, x_T, seed if noise_seed is None else noise_seed, solver, method,
                     steps, grid, tol, cache_dir, model_name)
    if denoise_final:
        with torch.no_grad():
            x0 = model(ref.x, problem.t_min).x0
        with torch.no_grad():
            coarse = model(ref.coarse, problem.t_min).x0
        ref = Reference(x0, ref.error, ref.steps, ref.method, ref.grid, coarse, ref.order)
    return ref


def _reference(problem: Problem, model: Model, x_T: Tensor, seed: int, solver: Solver | None,
               method: str | None, steps: int | None, grid: str, tol: float | None,
               cache_dir: str | Path | None, model_name: str) -> Reference:
    x_T = x_T.detach().to(torch.float64)
    stochastic = solver is not None and solver.stochastic
    integrator = integrator_for(solver, method or BUILTIN_ODE_METHOD)
    label = integrator.label
    if stochastic:
        n = steps or DEFAULT_SDE_STEPS
        extra: tuple = ("sde", seed, label)
    else:
        if label == BUILTIN_ODE_METHOD:
            grid = "logsnr"  # RK4 in lambda is meant for steps uniform in lambda
        n = steps or DEFAULT_ODE_STEPS
        extra = ("ode",)
    key = _key(problem, model_name, model, label, grid, x_T, (*extra, n, tol, "coarse"))
    if key in _CACHE:
        return _CACHE[key]
    path = Path(cache_dir) / f"reference-{key[:24]}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        data = torch.load(path)
        ref = Reference(data["x"], data["error"], data["steps"], data["method"], data["grid"], data["coarse"],
                        data["order"])
        _CACHE[key] = ref
        return ref

    def run(k: int) -> Tensor:
        times = make_grid(grid, problem.schedule, k, problem.t_min, problem.t_max)
        noise = brownian_noise(problem, seed) if stochastic else None
        return sample(integrator, model, times, x_T.clone(), noise).x

    fine, coarse, error, n = self_checked(run, n, tol)
    ref = Reference(fine, error, n, label, grid, coarse, weak_order(integrator))
    _CACHE[key] = ref
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": fine, "error": error, "steps": n, "method": label, "grid": grid, "coarse": coarse,
                    "order": ref.order}, path)
    return ref


def reference_solution(problem: Problem, model: Model, x_T: Tensor, seed: int,
                       solver: Solver | None = None, **kw) -> Tensor:
    """`reference(...).x`: the pathwise reference solution (see `reference` for the options)."""
    return reference(problem, model, x_T, seed, solver, **kw).x
