"""Figures from a small synthetic results directory that follows the results schema exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.figures import ORDER_COLUMNS, RESULT_COLUMNS, ResultsError, load_results, make_figures

# (label, name, params, family, stochastic, theory order, NFE per step)
SOLVERS = [
    ("euler", "euler", {}, "ode-singlestep", False, 1.0, 1),
    ("heun", "heun", {}, "ode-singlestep", False, 2.0, 2),
    ("dpmpp-2m", "dpmpp-2m", {}, "multistep", False, 2.0, 1),
    ("ddim-eta[eta=1.0]", "ddim-eta", {"eta": 1.0}, "sde", True, 1.0, 1),
    ("rk45[rtol=1e-3]", "rk45", {"rtol": 1e-3}, "adaptive", False, 4.0, 6),
]
STEPS = (5, 10, 20, 40)


def _row(problem: str, solver: tuple, steps: int, seed: int, metric: str, value: float, floor: float,
         model: str = "exact", tolerance: float = math.nan, status: str = "ok", reason: str = "") -> dict:
    label, name, params, family, stochastic, order, per_step = solver
    return {
        "problem": problem, "schedule": "vp-linear", "model": model, "solver": label, "solver_name": name,
        "params": json.dumps(params), "family": family, "stochastic": stochastic, "theory_order": order,
        "grid": "logsnr", "steps": steps, "nfe": steps * per_step, "seed": seed, "metric": metric,
        "value": value if status == "ok" else math.nan, "noise_floor": floor, "n_samples": 2000,
        "dtype": "float64", "status": status, "reason": reason, "sample_time": 1e-3 * steps * per_step,
        "metric_time": 0.01, "tolerance": tolerance,
    }


def synthetic_rows(learned: bool = True) -> pd.DataFrame:
    """Errors C n^-p with seed scatter; a sample metric with a noise floor; a learned model."""
    rng = np.random.default_rng(0)
    rows = []
    for solver in SOLVERS:
        order, stochastic = solver[5], solver[4]
        seeds = (0, 1, 2) if stochastic else (0,)
        for steps in STEPS:
            for seed in seeds:
                tol = 10.0 ** (-steps / 10) if solver[3] == "adaptive" else math.nan
                scatter = math.exp(0.1 * rng.standard_normal()) if stochastic else 1.0
                exact = 2.0 * steps ** -order * scatter
                rows.append(_row("gauss-aniso-3d", solver, steps, seed, "w2-exact", exact, math.nan,
                                 tolerance=tol))
                for metric, floor in (("w2", 0.17), ("sw2", 0.07)):
                    value = math.hypot(exact, floor * math.exp(0.2 * rng.standard_normal()))
                    rows.append(_row("mix-2d", solver, steps, seed, metric, value, floor, tolerance=tol))
                if learned:
                    rows.append(_row("mix-2d", solver, steps, seed, "w2", math.hypot(exact, 0.3), 0.17,
                                     model="perturbed-0.3", tolerance=tol))
                    rows.append(_row("fashion-mnist", solver, steps, seed, "fid", 20 + 400 * steps ** -order,
                                     12.6, model="unet-small", tolerance=tol))
    rows.append(_row("gauss-aniso-3d", SOLVERS[0], 2, 0, "w2-exact", 0.0, math.nan, status="diverged",
                     reason="non-finite sample"))
    rows.append(_row("mix-2d", SOLVERS[1], 1, 0, "w2", 0.0, 0.17, status="skipped", reason="min_steps 2"))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def synthetic_orders(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (problem, solver, metric), grp in rows[(rows["status"] == "ok") & (rows["model"] == "exact")
                                               & (rows["metric"] != "fid")].groupby(
                                                   ["problem", "solver", "metric"]):
        first = grp.iloc[0]
        for axis in ("steps", "nfe"):
            mean = grp.groupby(axis)["value"].mean()
            fit = np.polyfit(np.log(mean.index.to_numpy(float)), np.log(mean.to_numpy()), 1)
            order = -fit[0]
            floored = metric != "w2-exact"
            out.append({
                "problem": problem, "schedule": first["schedule"], "model": "exact", "solver": solver,
                "family": first["family"], "grid": "logsnr", "metric": metric, "axis": axis,
                "order": order, "ci_low": order - 0.1, "ci_high": order + 0.1,
                "theory": first["theory_order"],
                "verdict": "agrees" if abs(order - first["theory_order"]) < 0.3 else "disagrees",
                "n_points": 2 if floored else len(mean), "n_excluded": 2 if floored else 0,
                "note": "2 points below noise floor excluded" if floored else "",
            })
    return pd.DataFrame(out, columns=list(ORDER_COLUMNS))


def write_results_dir(path: Path, learned: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(learned)
    rows.to_csv(path / "results.csv", index=False)
    rows.to_parquet(path / "results.parquet", index=False)
    synthetic_orders(rows).to_csv(path / "orders.csv", index=False)
    manifest = {
        "command": "bench sweep --problems gauss-aniso-3d,mix-2d --solvers all", "config": {"steps": STEPS},
        "seeds": [0, 1, 2], "versions": {"python": "3.12", "torch": "2.13", "POT": "0.9.7"},
        "git_commit": "0123456789abcdef", "machine": {"cpu": "test", "cores": 2},
        "started": "2025-01-01T10:00:00", "finished": "2025-01-01T10:12:30",
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return write_results_dir(tmp_path_factory.mktemp("results"))


def _check_files(paths: list[Path]) -> set[str]:
    assert paths
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    return {p.name for p in paths}


def _stems(names: set[str], ext: str) -> set[str]:
    return {n.rsplit(".", 1)[0] for n in names if n.endswith(f".{ext}")}


def test_every_figure_written(results_dir: Path):
    names = _check_files(make_figures(results_dir))
    pngs, pdfs = _stems(names, "png"), _stems(names, "pdf")
    assert pngs == pdfs  # paper: a PDF and a PNG of each figure
    for kind in ("error_vs_nfe", "leaderboard", "order_vs_theory", "work_precision"):
        assert {f"{kind}-mix-2d-sw2", f"{kind}-gauss-aniso-3d-w2-exact"} <= pngs, kind
    # mix-2d w2 has an exact and a learned model: panels of one figure, leaderboards of their own
    assert {"error_vs_nfe-mix-2d-w2", "order_vs_theory-mix-2d-w2", "work_precision-mix-2d-w2"} <= pngs
    assert "fid_vs_nfe-fashion-mnist-fid" in pngs and "score_vs_discretization" in pngs
    assert "leaderboard-mix-2d-perturbed-0-3-w2" in pngs and "leaderboard-mix-2d-exact-w2" in pngs
    assert all(p.parent == results_dir / "figures" for p in make_figures(results_dir, solvers=["euler"]))


def test_slides_style_and_filters(tmp_path: Path):
    d = write_results_dir(tmp_path / "r", learned=False)
    names = _check_files(make_figures(d, style="slides", solvers=["euler", "ddim-eta*"],
                                      problems=["mix-2d"]))
    assert not _stems(names, "pdf")  # slides: PNGs only
    # without learned-model rows the learned-model figures are skipped cleanly
    assert not any(n.startswith(("fid_vs_nfe", "score_vs_discretization")) for n in names)
    assert {"error_vs_nfe-mix-2d-w2.png", "leaderboard-mix-2d-sw2.png"} <= names
    assert not any("gauss" in n for n in names)
    with pytest.raises(ResultsError, match="no rows"):
        make_figures(d, solvers=["no-such-solver"])
    with pytest.raises(ValueError, match="unknown style"):
        make_figures(d, style="poster")


def test_filters_keep_consistent_styles(results_dir: Path):
    full = load_results(results_dir)
    pairs = {(s.color, s.marker) for s in full.styles.values()}
    assert len(pairs) == len(full.styles)
    fams = {label: st.family for label, st in full.styles.items()}
    assert fams["dpmpp-2m"] == "multistep" and fams["ddim-eta[eta=1.0]"] == "sde"
    assert full.styles["euler"].marker != full.styles["heun"].marker
    # a filter never restyles a solver: the map covers the whole directory
    assert load_results(results_dir, solvers=["heun", "rk45*"]).styles == full.styles


def test_failed_rows_without_family_do_not_restyle_solvers(tmp_path: Path):
    d = write_results_dir(tmp_path / "r", learned=False)
    rows = pd.read_csv(d / "results.csv")
    extra = rows.iloc[:1].assign(family="", status="error", value=math.nan, reason="crash")
    pd.concat([rows, extra]).to_csv(d / "results.csv", index=False)
    (d / "results.parquet").unlink()
    styles = load_results(d).styles
    assert styles[extra["solver"].iloc[0]].family == "ode-singlestep"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("damage", ["no-dir", "no-results", "garbage-csv", "missing-column", "empty",
                                    "bad-number", "bad-orders", "bad-manifest", "csv-parquet-mismatch"])
def test_malformed_directory_raises_one_line(tmp_path: Path, damage: str):
    d = write_results_dir(tmp_path / "r", learned=False)
    (d / "results.parquet").unlink()
    rows = pd.read_csv(d / "results.csv")
    if damage == "no-dir":
        d = tmp_path / "absent"
    elif damage == "no-results":
        (d / "results.csv").unlink()
    elif damage == "garbage-csv":
        (d / "results.csv").write_bytes(b'"a,b\n\x00\x01"unterminated\n1,2,3,4\n')
    elif damage == "missing-column":
        rows.drop(columns=["noise_floor", "nfe"]).to_csv(d / "results.csv", index=False)
    elif damage == "empty":
        rows.iloc[:0].to_csv(d / "results.csv", index=False)
    elif damage == "bad-number":
        rows.astype({"value": object}).assign(value="fast").to_csv(d / "results.csv", index=False)
    elif damage == "bad-orders":
        (d / "orders.csv").write_text("problem,solver\nx,y\n")
    elif damage == "bad-manifest":
        (d / "manifest.json").write_text("{not json")
    elif damage == "csv-parquet-mismatch":
        rows.iloc[:5].to_parquet(d / "results.parquet", index=False)
    with pytest.raises(ResultsError) as exc:
        make_figures(d)
    msg = _one_line(exc)
    assert isinstance(exc.value, ValueError)
    assert str(d.name) in msg or "absent" in msg


def test_floor_label_names_what_each_metric_floor_is():
    from bench.report.figures import floor_label

    # image-run: path-rms only, whose floor is the reference's self-check (no exact samples exist)
    assert floor_label(["path-rms"]) == "noise floor (path-rms: reference vs. half its steps)"
    assert floor_label(["sw2", "w2", "path-rms", "w2"]) == (
        "noise floor (sw2, w2: two exact samples; path-rms: reference vs. half its steps)")
    assert floor_label(["fid"]) == "noise floor (fid: as many real images)"
