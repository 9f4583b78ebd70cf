"""Timings: each metric's cost at two sizes (sample metrics at n = 500 and 2000 points, exact W2
of the output law at 10 and 100 steps)."""

from __future__ import annotations

import torch

from benchmarks import exact_w2, get_problem, make_solver, prior, sample_metric, sample_metric_names


class TimeSampleMetric:
    """Metric between two independent n-samples of the 2-D mixture mix-2d."""

    params = [sample_metric_names(), [500, 2000]]
    param_names = ["metric", "n"]
    timeout = 120.0

    def setup(self, metric: str, n: int) -> None:
        if metric == "sinkhorn" and n > 500:
            # measured here: 1.8 min at n = 500 on the shared 2 cores; n = 2000 passes the timeout
            raise NotImplementedError("sinkhorn at n = 2000 exceeds the 120 s benchmark timeout")
        problem = get_problem("mix-2d")
        self.x = prior(problem, n, seed=1)
        g = torch.Generator().manual_seed(2)
        self.y = problem.sample_marginal(problem.t_min, n, g, torch.float64)

    def time_metric(self, metric: str, n: int) -> None:
        sample_metric(metric, self.x, self.y, seed=0)


class TimeW2Exact:
    """Exact W2 (probe propagation + Bures) of DDIM and Euler-Maruyama on gauss-aniso-3d."""

    params = [["ddim", "euler-maruyama"], [10, 100]]
    param_names = ["solver", "steps"]

    def setup(self, solver: str, steps: int) -> None:
        self.solver = make_solver(solver)
        self.problem = get_problem("gauss-aniso-3d")

    def time_w2_exact(self, solver: str, steps: int) -> None:
        exact_w2(self.solver, self.problem, steps)
