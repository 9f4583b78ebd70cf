"""The exact-vs-learned split on images (bench images split) and its Kendall-tau table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.link import kendall_table, split_table
from bench.studies.images.split import SplitConfig, SplitStudy
from bench.sweep.engine import run_study
from bench.sweep.store import load_rows


@pytest.fixture(scope="module")
def digits_split(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("split")
    cfg = SplitConfig(model="digits", solvers=["ddim", "dpmpp-2m"], nfe=[5, 20], seeds=[0, 1], samples=6,
                      reference_steps=10)
    run_study(SplitStudy(cfg), out)
    return load_rows(out)


def _mean(frame: pd.DataFrame, component: str, solver: str, budget: int, metric: str = "path-rms") -> float:
    part = frame[(frame["component"] == component) & (frame["solver"] == solver)
                 & (frame["nfe_budget"] == budget) & (frame["metric"] == metric)]
    assert len(part), (component, solver, budget, metric)
    return float(part["value"].mean())


def test_split_rows_have_every_component(digits_split: pd.DataFrame) -> None:
    frame = digits_split
    assert (frame["status"] == "ok").all()
    assert set(frame["component"]) == {"discretization", "both", "exact", "score", "exact-gauss"}
    score = frame[frame["component"] == "score"]
    assert sorted(set(score["seed"])) == [0, 1] and set(score["metric"]) >= {"path-rms", "mmd"}
    gauss = frame[frame["component"] == "exact-gauss"]
    assert set(gauss["problem"]) == {"digits-gauss"} and set(gauss["metric"]) == {"w2-exact"}
    assert set(frame.loc[frame["component"] == "discretization", "problem"]) == {"digits-gmm"}
    assert np.isfinite(frame["value"]).all() and (frame["value"] >= 0).all()


def test_split_errors_fall_with_nfe(digits_split: pd.DataFrame) -> None:
    for component in ("discretization", "exact"):
        coarse = _mean(digits_split, component, "dpmpp-2m", 5)
        assert _mean(digits_split, component, "dpmpp-2m", 20) < 0.5 * coarse
    # the total error against the exact flow cannot fall below the score error by much
    score = float(digits_split.query("component == 'score' and metric == 'path-rms'")["value"].mean())
    assert _mean(digits_split, "both", "dpmpp-2m", 20) > 0.5 * score
    table = split_table(digits_split)
    assert list(table.columns[:2]) == ["solver", "nfe"] and "exact-gauss w2" in table


def _synthetic(values: dict[str, list[float]], seeds: int = 4, noise: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    solvers = [f"s{i}" for i in range(len(values["exact-gauss"]))]
    for component, vals in values.items():
        metric = {"exact-gauss": "w2-exact", "exact": "mmd", "discretization": "path-rms"}[component]
        for i, solver in enumerate(solvers):
            for seed in range(1 if component == "exact-gauss" else seeds):
                rows.append({"component": component, "metric": metric, "solver": solver, "seed": seed,
                             "nfe_budget": 10, "nfe": 10, "status": "ok",
                             "value": vals[i] * (1 + noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_kendall_tau_reads_agreement_and_inversion() -> None:
    up = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    frame = _synthetic({"exact-gauss": up, "exact": up, "discretization": up[::-1]}, noise=0.01)
    table = kendall_table(frame, boot=200).set_index(["ranking", "against"])
    same = table.loc[("exact-gauss w2", "exact-gmm mmd")]
    assert same["tau"] == 1.0 and same["reading"] == "positive" and same["ci_low"] > 0.5
    flipped = table.loc[("exact-gauss w2", "learned path-rms")]
    assert flipped["tau"] == -1.0 and flipped["reading"] == "negative"
    fid = pd.DataFrame({"solver": [f"s{i}" for i in range(6)], "metric": "fid", "status": "ok",
                        "nfe_budget": 10, "nfe": 10, "value": up})
    with_fid = kendall_table(frame, fid, boot=50).set_index(["ranking", "against"])
    assert with_fid.loc[("exact-gauss w2", "FID"), "tau"] == 1.0
    assert with_fid.loc[("exact-gauss w2", "FID"), "reading"] == "no CI (neither ranking has seeds)"


def test_noisy_rankings_are_unresolved() -> None:
    frame = _synthetic({"exact-gauss": [1, 2, 3, 4, 5, 6], "exact": [1, 1, 1, 1, 1, 1],
                        "discretization": [1, 1, 1, 1, 1, 1]}, seeds=6, noise=0.5)
    table = kendall_table(frame, boot=300).set_index(["ranking", "against"])
    assert table.loc[("exact-gmm mmd", "learned path-rms"), "reading"] == "unresolved"


def test_split_refuses_stochastic_solvers(tmp_path: Path) -> None:
    """One line on stderr and exit status 2 (the CLI's error policy, as `bench` runs it)."""
    out = subprocess.run([sys.executable, "-m", "bench.cli", "images", "split", "--solvers", "ddpm", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: the split is for fixed-step ODE solvers; not: ddpm"


def test_a_rerun_may_add_fid_results_but_not_change_the_study() -> None:
    old = SplitStudy(SplitConfig(model="digits")).config()
    assert SplitStudy(SplitConfig(model="digits", fid_results="results/x")).incompatibility(old) is None
    assert "different run" in SplitStudy(SplitConfig(model="digits", samples=8)).incompatibility(old)
