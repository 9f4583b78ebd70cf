"""`bench grid`: optimised grids beat every named grid on exact W2 (recomputed by `bench run`), grid
files work where grids are taken, and the studies, figures and exports come out."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from analytic import get_problem
from analytic.grid_files import read_grid_file
from bench.cli.main import cli
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.models import analytic_model
from solvers import make_solver

NAMED = ["uniform", "logsnr", "quadratic", "poly", "karras", "ays-gauss", "tangent", "dmn", "gits"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _run_w2(problem: str, grid: str, out) -> float:
    invoke("run", "--problem", problem, "--solvers", "ddim", "--nfe", "10", "--grid", grid,
           "--metric", "w2-exact", "--seeds", "0", "--out", str(out))
    rows = pd.read_csv(out / "results.csv")
    assert list(rows["status"]) == ["ok"]
    return float(rows["value"].iloc[0])


@pytest.mark.parametrize("problem", ["gauss-aniso-3d", "json"])
def test_optimized_grid_beats_every_named_grid(tmp_path, problem):
    if problem == "json":
        spec = {"weights": [1.0], "means": [[0.5, -1.0]], "covs": [[[2.0, 0.6], [0.6, 0.3]]],
                "schedule": "vp-cosine", "t_min": 2e-3, "t_max": 0.99}
        problem = str(tmp_path / "gauss.json")
        (tmp_path / "gauss.json").write_text(json.dumps(spec))
    grid = tmp_path / "grid.json"
    out = invoke("grid", "optimize", "--solver", "ddim", "--nfe", "10", "--problem", problem,
                 "--objective", "w2-exact", "--out", str(grid)).output
    assert "optimized" in out and grid.exists()
    doc = read_grid_file(grid)
    assert doc["solver"] == "ddim" and doc["nfe"] == 10 and doc["objective"] == "w2-exact"
    optimized = _run_w2(problem, f"file:{grid}", tmp_path / "opt")
    assert optimized == pytest.approx(doc["value"], rel=1e-9)
    prob, solver = get_problem(problem), make_solver("ddim")
    for name in NAMED:
        w2 = metrics.w2_exact(prob, solver, analytic_model(prob), problem_grid(name, prob, 10))
        assert optimized < w2, name
    assert _run_w2(problem, "ays-gauss", tmp_path / "ays") > optimized


def test_sample_objective_on_a_mixture(tmp_path):
    grid = tmp_path / "g.json"
    invoke("grid", "optimize", "--solver", "heun", "--nfe", "6", "--problem", "mix-2d", "--objective",
           "path-rms", "--samples", "64", "--max-iter", "4", "--out", str(grid))
    doc = read_grid_file(grid)
    assert doc["value"] < doc["start_value"] and doc["samples"] == 64


def test_grid_file_for_other_steps_is_a_skipped_row(tmp_path):
    grid = tmp_path / "g.json"
    invoke("grid", "optimize", "--solver", "ddim", "--nfe", "4", "--problem", "gauss-1d", "--out", str(grid),
           "--max-iter", "3")
    invoke("run", "--problem", "gauss-1d", "--solvers", "ddim", "--nfe", "4,8", "--grid", f"file:{grid}",
           "--metric", "w2-exact", "--seeds", "0", "--out", str(tmp_path / "r"))
    rows = pd.read_csv(tmp_path / "r" / "results.csv").set_index("nfe_budget")
    assert rows.loc[4, "status"] == "ok" and rows.loc[8, "status"] == "skipped"
    assert "has 4 steps; this run needs 8" in rows.loc[8, "reason"]


@pytest.mark.parametrize("args, message", [
    (["grid", "optimize", "--solver", "ddim", "--nfe", "10", "--problem", "mix-2d"], "Gaussian"),
    (["grid", "optimize", "--solver", "ddim", "--nfe", "10", "--problem", "gauss-1d", "--objective", "fid"],
     "unknown objective"),
    (["grid", "optimize", "--solver", "ddim", "--nfe", "1", "--problem", "gauss-1d"], "no interior"),
    (["grid", "optimize", "--solver", "euler-maruyama", "--nfe", "8", "--problem", "mix-2d", "--objective",
      "path-rms"], "ODE solvers"),
    (["run", "--problem", "gauss-1d", "--grid", "file:/nonexistent.json"], "does not exist"),
    (["run", "--problem", "gauss-1d", "--grid", "karras[rho]"], "key=number"),
    (["grid", "export", "/nonexistent.json"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    from tests.test_cli import bench

    if "--out" not in args and args[:2] != ["grid", "export"]:
        args = [*args, "--out", str(tmp_path / "o.json")]
    elif args[:2] == ["grid", "export"]:
        args = [*args, "--out", str(tmp_path / "e.json")]
    proc = bench(*args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


def test_show_and_export(tmp_path):
    grid = tmp_path / "g.json"
    invoke("grid", "optimize", "--solver", "dpmpp-2m", "--nfe", "8", "--problem", "gauss-aniso-3d", "--out",
           str(grid), "--max-iter", "5")
    png = tmp_path / "show.png"
    invoke("grid", "show", f"file:{grid}", "logsnr", "karras", "ays-gauss", "--problem", "gauss-aniso-3d",
           "--out", str(png))
    assert png.stat().st_size > 10_000
    out = tmp_path / "export.json"
    invoke("grid", "export", str(grid), "--out", str(out))
    payload = json.loads(out.read_text())
    times = read_grid_file(grid)["times"]
    assert len(payload["diffusers_timesteps"]) == len(times) == len(payload["kdiffusion_sigmas"]) - 1
    assert payload["kdiffusion_sigmas"][-1] == 0 and out.with_suffix(".pt").exists()


def test_study_and_transfer_on_the_shipped_digits_model(tmp_path):
    study = tmp_path / "study"
    out = invoke("grid", "study", "--problem", "digits-gauss", "--schedule", "ddpm-discrete", "--solvers",
                 "ddim,heun", "--nfe", "6", "--max-iter", "3", "--jobs", "1", "--out", str(study)).output
    assert "optimized" in out and "gain" in out
    assert {p.name for p in (study / "grids").iterdir()} == {"ddim-nfe6.json", "heun-nfe6.json"}
    transfer = tmp_path / "transfer"
    invoke("grid", "transfer", "--model", "digits", "--grids", str(study), "--solvers", "ddim,heun", "--nfe",
           "6", "--seeds", "0-1", "--samples", "8", "--jobs", "1", "--out", str(transfer))
    rows = pd.read_csv(transfer / "results.csv")
    ok = rows[rows["status"] == "ok"]
    assert set(ok["grid"]) >= {"optimized", "logsnr", "ays-gauss", "tangent"}
    assert (ok["value"] > 0).all() and set(ok["seed"]) == {0, 1}
    invoke("plot", str(study))
    invoke("plot", str(transfer))
    figures = [study / "figures" / "grid-study.png", transfer / "figures" / "grid-transfer.png"]
    assert all(f.exists() for f in figures)


def test_optimize_against_a_shipped_network(tmp_path):
    grid = tmp_path / "g.json"
    invoke("grid", "optimize", "--model", "digits", "--solver", "ddim", "--nfe", "4", "--objective",
           "path-rms", "--samples", "4", "--max-iter", "1", "--out", str(grid))
    doc = read_grid_file(grid)
    assert doc["model"] == "digits" and doc["problem"] == "digits-gmm" and doc["schedule"] == "ddpm-discrete"
    assert doc["value"] <= doc["start_value"]
