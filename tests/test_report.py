"""report.md and tables.tex from a synthetic results directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.report.figures import ResultsError
from bench.report.report import disagreement_reason, write_report
from tests.test_plots import write_results_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    d = write_results_dir(tmp_path_factory.mktemp("results"))
    return write_report(d)


def _section(text: str, heading: str) -> str:
    return text.split(heading)[1].split("\n## ")[0]


def test_report_has_tables_and_figures(report: Path):
    text = report.read_text()
    d = report.parent
    headings = ["## Leaderboard: error at equal NFE 10/20/50", "## Verdicts", "## Run", "## Measured orders",
                "## Solvers that disagree with theory", "## Unresolved fits", "## Failed runs", "## Figures"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)  # leaderboard and verdicts first, figures last
    # manifest summary
    assert "0123456789abcdef" in text and "12 min 30 s" in text and "torch 2.13" in text
    assert "`bench sweep --problems gauss-aniso-3d,mix-2d --solvers all`" in text
    # figures were made because they were missing, and are linked relatively
    for stem in ("leaderboard-mix-2d-sw2", "error_vs_nfe-mix-2d-w2", "work_precision-mix-2d-sw2",
                 "order_vs_theory-gauss-aniso-3d-w2-exact"):
        assert f"](figures/{stem}.png)" in text
        assert (d / "figures" / f"{stem}.png").stat().st_size > 1000
    # one orders row per (problem, metric, solver) fit on the steps axis: 3 panels x 5 solvers
    orders_rows = [ln for ln in _section(text, "## Measured orders").splitlines()
                   if ln.startswith("| gauss") or ln.startswith("| mix")]
    assert len(orders_rows) == 15


def _board(text: str, heading: str) -> dict[str, list[str]]:
    section = text.split(f"### {heading}\n")[1].split("\n#")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return {r[1]: r for r in rows[2:]}


def test_leaderboard_reads_errors_at_equal_nfe(report: Path):
    text = report.read_text()
    exact = _board(text, "gauss-aniso-3d: w2-exact")
    # synthetic euler error is 2 / steps: NFE 10 -> 0.2, 20 -> 0.1, 50 -> the largest NFE below is 40
    assert exact["euler"][-3:] == ["0.2 exact", "0.1 exact", "0.05 exact (40)"]
    assert exact["rk45[rtol=1e-3]"][-3:-1] == ["–", "–"]  # no rk45 run has NFE <= 20 (6 NFE per step)
    assert [int(r[0]) for r in exact.values()] == list(range(1, 6))  # ranked by the error at NFE 50
    sw2 = _board(text, "mix-2d: sw2")
    assert "±" in sw2["ddim-eta[eta=1.0]"][-1]  # three seeds: a CI
    # the learned model of mix-2d has a leaderboard of its own
    assert "### mix-2d, perturbed-0.3: w2" in text and "### mix-2d, exact: w2" in text
    verdicts = _section(text, "## Verdicts")
    assert "| all " in verdicts and "agrees" in verdicts and "disagrees" in verdicts


def test_disagreements_and_reasons(report: Path):
    section = _section(report.read_text(), "## Solvers that disagree with theory")
    rows = [ln for ln in section.splitlines() if ln.startswith("| mix")]
    assert len(rows) == 9 and all("points below noise floor" in r for r in rows)
    assert all("gauss" not in r for r in rows)
    assert "_none_" in _section(report.read_text(), "## Unresolved fits")
    assert disagreement_reason("warm-up steps cap the order", 5, 0) == "warm-up"
    assert disagreement_reason("", 2, 1) == "1 point(s) excluded; only 2 point(s) in the fit"
    assert disagreement_reason("stiff near t_min", math.nan, math.nan) == "stiffness near t_min"
    assert disagreement_reason("", 6, 0) == "not explained by the fit's note"


def test_latex_tables(report: Path):
    tex = (report.parent / "tables.tex").read_text()
    assert tex.count("\\begin{table}") + tex.count("\\begin{longtable}") == 6  # unresolved: a comment
    assert "% Unresolved order fits: no rows" in tex
    for label in ("tab:errors", "tab:verdicts", "tab:run", "tab:orders", "tab:disagree", "tab:failures"):
        assert f"\\label{{{label}}}" in tex
    assert "95\\% CI" in tex and "ddim-eta[eta=1.0]" in tex


def test_report_without_orders_or_manifest(tmp_path: Path):
    d = write_results_dir(tmp_path / "r", learned=False)
    (d / "orders.csv").unlink()
    (d / "manifest.json").unlink()
    text = write_report(d, style="slides", problems=["gauss-aniso-3d"]).read_text()
    assert "_no orders.csv, or no fits in it_" in text and "_no manifest.json in the directory_" in text
    assert "mix-2d" not in text.split("## Leaderboard")[1]
    assert "_no orders.csv, or no fits in it_" in _section(text, "## Verdicts")
    assert "problems ['gauss-aniso-3d']" in text


def test_unfinished_manifest_and_bad_directory(tmp_path: Path):
    d = write_results_dir(tmp_path / "r", learned=False)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "finished": None}))
    assert "unfinished" in write_report(d).read_text()
    pd.read_csv(d / "results.csv").iloc[:0].to_csv(d / "results.csv", index=False)
    (d / "results.parquet").unlink()
    with pytest.raises(ResultsError, match="has no rows"):
        write_report(d)


def test_unresolved_fits_have_their_own_table(tmp_path: Path):
    d = write_results_dir(tmp_path / "r", learned=False)
    orders = pd.read_csv(d / "orders.csv")
    pick = orders.index[(orders["problem"] == "gauss-aniso-3d") & (orders["axis"] == "steps")][0]
    orders.loc[pick, ["verdict", "reason"]] = ["unresolved", "local slopes 0.5, 0.8 are still drifting"]
    orders.to_csv(d / "orders.csv", index=False)
    text = write_report(d).read_text()
    section = _section(text, "## Unresolved fits")
    assert "still drifting" in section and orders.loc[pick, "solver"] in section
    assert "still drifting" not in _section(text, "## Solvers that disagree with theory")
    legacy = orders.drop(columns=["verdict", "reason"]).assign(agrees=True)  # orders.csv of older runs
    legacy.to_csv(d / "orders.csv", index=False)
    assert "_none_" in _section(write_report(d).read_text(), "## Unresolved fits")
