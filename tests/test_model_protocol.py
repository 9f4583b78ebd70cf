"""Model protocol: one call, every parameterization; registry names and parameters; the loop."""

from __future__ import annotations

import pytest
import torch

from analytic import get_problem, make_grid
from bench.measure.models import analytic_model
from solvers import make_solver, parse_spec, resolve, sample
from solvers.registry import UnknownSolverError
from tests.util import prior_sample


@pytest.mark.parametrize("schedule", ["vp-linear", "edm", "rectified-flow", "ve"])
def test_parameterizations_agree(schedule):
    problem = get_problem("mix-2d", schedule)
    x = prior_sample(problem, 32)
    t = 0.3 * problem.t_max
    preds = {p: analytic_model(problem, p)(x, t) for p in ("eps", "x0", "score", "velocity")}
    ref = preds["eps"]
    for pred in preds.values():
        torch.testing.assert_close(pred.eps, ref.eps)
        torch.testing.assert_close(pred.x0, ref.x0)
        torch.testing.assert_close(pred.score, ref.score)
        torch.testing.assert_close(pred.drift, ref.drift)
    sched = problem.schedule
    ode_drift = float(sched.f(t)) * x - 0.5 * float(sched.g2(t)) * ref.score
    torch.testing.assert_close(ref.drift, ode_drift)


def test_one_model_call_serves_every_view():
    problem = get_problem("mix-2d")
    model = analytic_model(problem)
    pred = model(prior_sample(problem, 4), 0.5)
    _ = pred.x0, pred.eps, pred.score, pred.drift
    assert model.calls == 1


def test_parse_spec_and_labels():
    assert parse_spec("ddim") == ("ddim", {})
    assert parse_spec("x[a=1,b=0.5,c=true,d=bh1]") == ("x", {"a": 1, "b": 0.5, "c": True, "d": "bh1"})
    with pytest.raises(ValueError):
        parse_spec("x[a]")
    assert make_solver("euler").label == "euler"


def test_selectors_resolve_from_tags():
    all_names = {s.name for s in resolve("all")}
    assert {"euler", "ddim", "euler-maruyama"} <= all_names
    assert all(s.stochastic for s in resolve("sde"))
    assert not any(s.stochastic for s in resolve("ode"))
    assert [s.name for s in resolve("euler,ddim,euler")] == ["euler", "ddim"]


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownSolverError, match="valid: .*euler"):
        make_solver("eulr")
    with pytest.raises(UnknownSolverError, match="no parameter"):
        make_solver("euler[eta=1]")


def test_loop_checks_grid_and_noise():
    problem = get_problem("gauss-1d")
    model = analytic_model(problem)
    x = prior_sample(problem, 4)
    with pytest.raises(ValueError, match="decreasing"):
        sample(make_solver("euler"), model, torch.tensor([0.1, 0.5], dtype=torch.float64), x)
    with pytest.raises(ValueError, match="noise source"):
        times = make_grid("uniform", problem.schedule, 4, problem.t_min, problem.t_max)
        sample(make_solver("euler-maruyama"), model, times, x)


def test_denoise_final_is_explicit():
    problem = get_problem("gauss-1d")
    model = analytic_model(problem)
    times = make_grid("logsnr", problem.schedule, 8, problem.t_min, problem.t_max)
    x = prior_sample(problem, 16)
    plain = sample(make_solver("ddim"), model, times, x)
    final = sample(make_solver("ddim"), model, times, x, denoise_final=True)
    assert final.nfe == plain.nfe + 1
    torch.testing.assert_close(final.x, model(plain.x, times[-1]).x0)
