"""Benchmark problems: a Gaussian-mixture target, a noise schedule and an integration interval."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from analytic import image_problems
from analytic.schedules import SCHEDULES, Schedule, get_schedule
from analytic.targets import GaussianMixture, IsotropicMixture


class ProblemError(ValueError):
    """A problem specification that cannot be used; the message is one line for the user."""


@dataclass
class Problem:
    name: str
    description: str
    target: GaussianMixture | IsotropicMixture
    schedule: Schedule
    t_min: float
    t_max: float
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) of problems fitted to images

    @property
    def dim(self) -> int:
        return self.target.dim

    @property
    def is_gaussian(self) -> bool:
        return self.target.is_gaussian

    def coefficients(self, t: float | Tensor) -> tuple[float, float]:
        return float(self.schedule.alpha(t)), float(self.schedule.sigma(t))

    def marginal(self, t: float | Tensor) -> GaussianMixture | IsotropicMixture:
        """The exact law p_t of x_t."""
        return self.target.noised(*self.coefficients(t))

    def sample_marginal(self, t: float, n: int, generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float64) -> Tensor:
        alpha, sigma = self.coefficients(t)
        return self.target.sample(n, generator, alpha, sigma, dtype)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.target.score(x, *self.coefficients(t))

    def eps(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.target.eps(x, *self.coefficients(t))

    def denoise(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.target.denoise(x, *self.coefficients(t))

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.target.log_prob(x, *self.coefficients(t))


def _rotation(dim: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _rotated(evals: list[float], seed: int) -> Tensor:
    q = _rotation(len(evals), seed)
    return q @ torch.diag(torch.tensor(evals, dtype=torch.float64)) @ q.T


def _gauss_1d() -> GaussianMixture:
    return GaussianMixture([1.0], [[1.0]], [[[0.25]]])


def _gauss_aniso_3d() -> GaussianMixture:
    return GaussianMixture([1.0], [[1.0, -0.5, 0.25]], [_rotated([2.0, 0.5, 0.02], seed=3).tolist()])


def _gauss_unit_3d() -> GaussianMixture:
    """gauss-aniso-3d scaled by 1/5: inside the image range [-1, 1] that library defaults assume
    (DDIM and DDPM clip x0 predictions to it)."""
    return GaussianMixture([1.0], [[0.2, -0.1, 0.05]], [_rotated([0.08, 0.02, 0.0008], seed=3).tolist()])


def _ring_8() -> GaussianMixture:
    angles = [2 * math.pi * k / 8 for k in range(8)]
    means = [[2.0 * math.cos(a), 2.0 * math.sin(a)] for a in angles]
    covs = [[[0.04, 0.0], [0.0, 0.04]]] * 8
    return GaussianMixture([1 / 8] * 8, means, covs)


def _mix_2d() -> GaussianMixture:
    means = [[-1.5, 0.5], [1.0, 1.0], [0.5, -1.5]]
    covs = [_rotated([0.3, 0.02], seed=s).tolist() for s in (1, 2, 5)]
    return GaussianMixture([0.5, 0.3, 0.2], means, covs)


def _mix_unit_2d() -> GaussianMixture:
    """mix-2d scaled by 1/3 into the image range [-1, 1]."""
    means = [[-0.5, 1 / 6], [1 / 3, 1 / 3], [1 / 6, -0.5]]
    covs = [_rotated([0.3 / 9, 0.02 / 9], seed=s).tolist() for s in (1, 2, 5)]
    return GaussianMixture([0.5, 0.3, 0.2], means, covs)


def _mix_16d() -> GaussianMixture:
    g = torch.Generator().manual_seed(16)
    k, d = 4, 16
    means = 1.5 * torch.randn(k, d, generator=g, dtype=torch.float64) / math.sqrt(d) * 2
    covs = []
    for j in range(k):
        evals = torch.exp(torch.empty(d, dtype=torch.float64).uniform_(math.log(0.05), 0, generator=g))
        q = _rotation(d, seed=100 + j)
        covs.append(q @ torch.diag(evals) @ q.T)
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    return GaussianMixture(weights, means, torch.stack(covs))


BUILTIN: dict[str, tuple[str, object]] = {
    "gauss-1d": ("1-D Gaussian N(1, 0.25)", _gauss_1d),
    "gauss-aniso-3d": ("anisotropic 3-D Gaussian, rotated, variances 2 / 0.5 / 0.02", _gauss_aniso_3d),
    "gauss-unit-3d": ("gauss-aniso-3d scaled by 1/5 into the image range [-1, 1] (std 0.28 / 0.14 / 0.028)",
                      _gauss_unit_3d),
    "ring-8": ("2-D ring of 8 equal modes, radius 2, std 0.2", _ring_8),
    "mix-2d": ("2-D mixture, weights 0.5/0.3/0.2, anisotropic covariances", _mix_2d),
    "mix-unit-2d": ("mix-2d scaled by 1/3 into the image range [-1, 1]", _mix_unit_2d),
    "mix-16d": ("16-D random mixture of 4 components, variances 0.05..1", _mix_16d),
}


def builtin_problem(name: str, schedule: str = "vp-linear") -> Problem:
    if name not in BUILTIN:
        raise ProblemError(f"unknown problem {name!r}; valid: {', '.join(problem_names())} or a JSON file")
    description, factory = BUILTIN[name]
    sched = get_schedule(schedule)
    return Problem(name, description, factory(), sched, sched.t_min, sched.t_max)


def _matrix(value, name: str) -> Tensor:
    try:
        return torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{name} is not a numeric array ({exc})") from None


def problem_from_dict(spec: dict, name: str = "custom") -> Problem:
    """Validate a JSON-style specification and build its problem."""
    if not isinstance(spec, dict):
        raise ProblemError("a problem file must hold a JSON object")
    unknown = set(spec) - {"weights", "means", "covs", "vars", "schedule", "t_min", "t_max",
                           "name", "description"}
    if unknown:
        raise ProblemError(f"unknown keys in problem: {', '.join(sorted(unknown))}")
    for key in ("weights", "means"):
        if key not in spec:
            raise ProblemError(f"problem is missing {key!r}")
    weights, means = _matrix(spec["weights"], "weights"), _matrix(spec["means"], "means")
    if weights.ndim != 1 or len(weights) == 0:
        raise ProblemError("weights must be a non-empty list of numbers")
    if means.ndim != 2 or means.shape[0] != len(weights):
        raise ProblemError(f"means must be a list of {len(weights)} vectors (one per weight)")
    k, d = means.shape
    if not (torch.isfinite(weights).all() and torch.isfinite(means).all()):
        raise ProblemError("weights and means must be finite")
    if (weights <= 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
        total = float(weights.sum())
        raise ProblemError(f"weights must be positive and sum to 1 within 1e-6 (sum {total!r})")
    if ("covs" in spec) == ("vars" in spec):
        raise ProblemError("give exactly one of 'covs' (full matrices) or 'vars' (per-dimension variances)")
    if "vars" in spec:
        variances = _matrix(spec["vars"], "vars")
        if variances.shape != (k, d):
            raise ProblemError(f"vars must have shape ({k}, {d}), got {tuple(variances.shape)}")
        covs = torch.diag_embed(variances)
    else:
        covs = _matrix(spec["covs"], "covs")
        if covs.shape != (k, d, d):
            raise ProblemError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
    if not torch.isfinite(covs).all():
        raise ProblemError("covariances must be finite")
    for j in range(k):
        if not torch.allclose(covs[j], covs[j].T, rtol=1e-10, atol=1e-12):
            raise ProblemError(f"covariance {j} is not symmetric")
        if float(torch.linalg.eigvalsh(covs[j]).min()) <= 0:
            raise ProblemError(f"covariance {j} is not positive definite")
    sched_name = spec.get("schedule", "vp-linear")
    if sched_name not in SCHEDULES:
        raise ProblemError(f"unknown schedule {sched_name!r}; valid: {', '.join(SCHEDULES)}")
    schedule = get_schedule(sched_name)
    t_min = float(spec.get("t_min", schedule.t_min))
    t_max = float(spec.get("t_max", schedule.t_max))
    if not (math.isfinite(t_min) and math.isfinite(t_max) and 0 <= t_min < t_max):
        raise ProblemError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    target = GaussianMixture(weights, means, covs)
    description = spec.get("description", f"{k}-component mixture in {d}-D from file")
    return Problem(spec.get("name", name), description, target, schedule, t_min, t_max)


def load_problem_file(path: str | Path) -> Problem:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except OSError as exc:
        raise ProblemError(f"cannot read problem file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProblemError(f"problem file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    try:
        return problem_from_dict(spec, name=path.stem)
    except ProblemError as exc:
        raise ProblemError(f"{path}: {exc}") from None


def image_problem(name: str, schedule: str = "vp-linear") -> Problem:
    """A problem fitted to real images (analytic/image_problems.py)."""
    try:
        info = image_problems.describe(name)
        target, shape = image_problems.image_target(name)
    except ValueError as exc:  # ImageProblemError, DataError (missing data) and bad [n=N]
        raise ProblemError(str(exc)) from None
    if schedule not in SCHEDULES:
        raise ProblemError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    sched = get_schedule(schedule)
    return Problem(name, info["description"], target, sched, sched.t_min, sched.t_max, shape)


def problem_names() -> list[str]:
    """Every built-in problem: the small mixtures and those fitted to images."""
    return [*BUILTIN, *image_problems.names()]


def describe_problem(name: str) -> dict:
    """name, dim, components, gaussian, description of a built-in problem, without fitting one."""
    if name in BUILTIN:
        p = builtin_problem(name)
        return {"name": name, "dim": p.dim, "components": p.target.k, "gaussian": p.is_gaussian,
                "description": BUILTIN[name][0]}
    return {"name": name, **image_problems.describe(name)}


def get_problem(name_or_path: str, schedule: str | None = None) -> Problem:
    """A built-in problem by name, or a JSON problem file; `schedule` overrides its schedule."""
    if name_or_path in BUILTIN:
        return builtin_problem(name_or_path, schedule or "vp-linear")
    if image_problems.is_image_problem(name_or_path.split("[")[0]):
        return image_problem(name_or_path, schedule or "vp-linear")
    if name_or_path.endswith(".json") or Path(name_or_path).exists():
        problem = load_problem_file(name_or_path)
        if schedule is not None:
            if schedule not in SCHEDULES:
                raise ProblemError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
            problem.schedule = get_schedule(schedule)
            problem.t_min, problem.t_max = problem.schedule.t_min, problem.schedule.t_max
        return problem
    raise ProblemError(f"unknown problem {name_or_path!r}; valid: {', '.join(problem_names())} "
                       "or a JSON file")
