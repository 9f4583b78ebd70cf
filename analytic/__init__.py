"""Exact problems: noise schedules, Gaussian-mixture targets with closed-form scores, time grids.

Knows nothing of solvers."""

from analytic.grids import GRIDS, make_grid
from analytic.problems import BUILTIN, Problem, ProblemError, describe_problem, get_problem, problem_names
from analytic.schedules import SCHEDULES, Schedule, get_schedule
from analytic.targets import GaussianMixture

__all__ = [
    "BUILTIN", "GRIDS", "SCHEDULES", "GaussianMixture", "Problem", "ProblemError", "Schedule",
    "describe_problem", "get_problem", "get_schedule", "make_grid", "problem_names",
]
