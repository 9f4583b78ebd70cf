"""Equal-NFE comparisons: the default ladder, errors read at NFE budgets, the terminal summary."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.report.equal_nfe import error_at_nfe
from bench.report.summary import WIDTH, terminal_summary
from bench.studies.analytic import SweepConfig, default_config, plan_cells, run_sweep
from solvers import make_solver


def test_default_ladder_has_nfe_10_20_50_exactly_where_nfe_per_step_divides():
    cells = plan_cells(default_config())
    budgets = {(c.solver, c.target) for c in cells if c.mode == "nfe"}
    for solver in {c.solver for c in cells if c.mode == "nfe"}:
        s = make_solver(solver)
        for budget in (10, 20, 50):
            assert (solver, budget) in budgets
            steps = s.steps_for_nfe(budget)
            if budget % s.nfe_per_step == 0 and s.nfe(budget // s.nfe_per_step) == budget:
                assert s.nfe(steps) == budget, (solver, budget, steps)
            else:  # the most steps that fit, both numbers recorded
                assert steps is None or s.nfe(steps) <= budget < s.nfe(steps + 1)
    # the finest level of the former step ladder, 256 steps, where NFE 200 gives at most 128 steps
    extra = {(c.solver, c.target) for c in cells if c.mode == "steps"}
    assert {("rk4", 256.0), ("heun", 256.0)} <= extra and {t for _, t in extra} == {256.0}
    assert ("ddim", 256.0) not in extra and ("dpmpp-2m", 256.0) not in extra


def _rows(solver, family, values, nfe, budgets, tolerance=math.nan):
    return [{"problem": "p", "metric": "m", "solver": solver, "family": family, "status": "ok", "seed": seed,
             "value": v, "stderr": 0.1 * v, "noise_floor": 0.001, "nfe": n, "steps": n, "nfe_budget": b,
             "tolerance": tolerance} for seed, (v, n, b) in enumerate(zip(values, nfe, budgets, strict=True))]


def test_error_at_nfe_reads_budgets_step_ladders_and_tolerances():
    rows = (_rows("a", "ode", [1.0, 3.0], [9, 9], [10, 10])  # 3 NFE per step at budget 10: 9 calls
            + _rows("b", "ode", [2.0], [8], [math.nan]) + _rows("b", "ode", [5.0], [16], [math.nan])
            + _rows("c", "adaptive", [4.0, 6.0], [8, 10], [math.nan] * 2, tolerance=0.1)
            + _rows("c", "adaptive", [0.5, 0.7], [12, 14], [math.nan] * 2, tolerance=0.01))
    out = error_at_nfe(pd.DataFrame(rows), budgets=(10,)).set_index("solver")
    assert out.loc["a", "value"] == 2.0 and out.loc["a", "nfe"] == 9 and out.loc["a", "n_seeds"] == 2
    assert out.loc["a", "stderr"] == pytest.approx(math.sqrt(0.1**2 + 0.3**2) / 2)
    assert out.loc["b", "nfe"] == 8 and out.loc["b", "value"] == 2.0  # a step ladder: largest NFE <= 10
    assert out.loc["c", "value"] == 5.0 and out.loc["c", "nfe"] == 9  # tolerance 0.1: mean NFE 9 <= 10
    assert not out.below_floor.any()


def test_summary_fits_100_columns_without_nan(tmp_path):
    config = SweepConfig(problems=["gauss-1d", "mix-2d"], solvers=["ddim", "heun", "dpm-solver-3", "ddpm"],
                         nfe=[5, 10, 20, 50], seeds=[0, 1], samples=100, metrics=None)
    run_sweep(config, tmp_path, jobs=1)
    text = terminal_summary(tmp_path)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH and "nan" not in text.lower()
    assert "gauss-1d · w2-exact" in text and "mix-2d · mmd" in text and "mix-2d · path-rms" in text
    assert "9)" in text  # dpm-solver-3 at budget 10 runs 3 steps, 9 NFE, and says so
    heun = next(line for line in lines if line.startswith("heun"))
    assert "agrees" in heun or "unresolved" in heun or "disagrees" in heun
    assert len(terminal_summary(tmp_path, headline=False)) > len(text)
