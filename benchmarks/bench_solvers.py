"""Timings: one full sample per registered solver, and the analytic score at two sizes."""

from __future__ import annotations

import torch

from benchmarks import get_problem, grid_for, make_solver, prior, run_sample, solver_names

SAMPLE_PROBLEM = "mix-2d"
SAMPLE_N = 1000
SAMPLE_STEPS = 20


class TimeSample:
    """One full sample of SAMPLE_N points with SAMPLE_STEPS logsnr steps (adaptive solvers: their
    default tolerance over the whole interval) on mix-2d, exact score, float64."""

    params = [solver_names()]
    param_names = ["solver"]
    timeout = 120.0

    def setup(self, name: str) -> None:
        self.solver = make_solver(name)
        self.problem = get_problem(SAMPLE_PROBLEM)
        self.times = grid_for(self.solver, self.problem, SAMPLE_STEPS)
        self.x = prior(self.problem, SAMPLE_N)

    def time_sample(self, name: str) -> None:
        run_sample(self.solver, self.problem, self.times, self.x)


class TimeScore:
    """The exact score of the 16-D, 4-component mixture at a mid time, for n points."""

    params = [[1_000, 100_000]]
    param_names = ["n"]

    def setup(self, n: int) -> None:
        self.problem = get_problem("mix-16d")
        self.t = 0.5 * (self.problem.t_min + self.problem.t_max)
        self.x = prior(self.problem, n)
        self.t_tensor = torch.tensor(self.t, dtype=torch.float64)

    def time_score(self, n: int) -> None:
        self.problem.score(self.x, self.t_tensor)
