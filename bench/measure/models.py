"""Models for the harness: the exact (Tweedie) predictor of an analytic problem."""

from __future__ import annotations

from torch import Tensor

from analytic.problems import Problem
from solvers.model import Model, Parameterization


def analytic_model(problem: Problem, parameterization: Parameterization = "eps") -> Model:
    """The exact score of the problem's noised marginals, exposed in a chosen parameterization."""
    schedule = problem.schedule

    def predict(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma, d_alpha, d_sigma, _ = schedule.scalars(float(t))  # memoized per time
        if parameterization == "eps":
            return problem.target.eps(x, alpha, sigma)
        if parameterization == "x0":
            return problem.target.denoise(x, alpha, sigma)
        if parameterization == "score":
            return problem.target.score(x, alpha, sigma)
        x0 = problem.target.denoise(x, alpha, sigma)
        eps = problem.target.eps(x, alpha, sigma)
        return d_alpha * x0 + d_sigma * eps

    return Model(predict, parameterization, schedule)
