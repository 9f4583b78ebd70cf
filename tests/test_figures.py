"""The figures as matplotlib objects, built in memory from a sweep with 11 solvers in one family: no panel
has more than 8 solver lines, every solver is drawn, a solver looks the same in every figure, legends
sit outside the axes, reference slopes and noise floors are drawn where they apply, and row charts
have room for every label."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from bench.report.charts import leaderboard
from bench.report.figures import build_figures, load_results, make_figures
from bench.report.report import equal_nfe_cell, leaderboard_tables, verdict_counts
from bench.report.style import MARKERS, PALETTE, registered_slots, solver_styles, use_style
from tests.test_plots import RESULT_COLUMNS, _row, synthetic_orders

ODE = ["ddim", "euler", "dpm-solver-1", "edm-euler", "heun", "midpoint", "ralston", "dpm-solver-2", "dpm2",
       "dpm-solver-3", "rk4"]
ORDER = {"ddim": 1, "euler": 1, "dpm-solver-1": 1, "edm-euler": 1, "dpm-solver-3": 3, "rk4": 4}
SOLVERS = [(s, s, {}, "ode-singlestep", False, float(ORDER.get(s, 2)), 4 if s == "rk4" else 1) for s in ODE]
SOLVERS += [("dpmpp-2m", "dpmpp-2m", {}, "multistep", False, 2.0, 1),
            ("ddpm", "ddpm", {}, "sde", True, 1.0, 1)]
STEPS = (4, 8, 16, 32, 64)


def sweep_rows() -> pd.DataFrame:
    """w2-exact (no floor, no stderr) on one problem; w2 (floor 0.002, stderr, converging to half the
    floor) on another, 2 seeds."""
    rng = np.random.default_rng(1)
    rows = []
    for k, solver in enumerate(SOLVERS):
        order = solver[5]
        for steps in STEPS:
            exact = (1 + 0.1 * k) * steps ** -order
            rows.append(_row("gauss-aniso-3d", solver, steps, 0, "w2-exact", exact, math.nan))
            for seed in (0, 1):
                value = exact + 0.001 * math.exp(0.1 * rng.standard_normal())
                row = _row("mix-2d", solver, steps, seed, "w2", value, 0.002)
                rows.append({**row, "stderr": 0.1 * value})
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "stderr"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    rows = sweep_rows()
    rows.to_csv(d / "results.csv", index=False)
    orders = synthetic_orders(rows[rows["metric"] == "w2-exact"])
    orders.loc[orders["solver"] == "midpoint", ["verdict", "order"]] = ["unresolved", math.nan]
    orders.to_csv(d / "orders.csv", index=False)
    (d / "manifest.json").write_text(json.dumps({"command": "bench run", "seeds": [0, 1]}))
    return d


@pytest.fixture(scope="module")
def figures(sweep: Path) -> dict[str, Figure]:
    with use_style("paper") as size:
        named = build_figures(load_results(sweep), size)
        for _, fig in named:
            fig.draw_without_rendering()  # constrained layout: the extents below are final
    return dict(named)


def _panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _solver_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if str(ln.get_gid()).startswith("solver:")]


def _curves(figures: dict[str, Figure]) -> dict[str, Figure]:
    return {n: f for n, f in figures.items() if n.startswith(("error_vs_nfe", "work_precision"))}


def test_panels_have_at_most_eight_solvers_and_show_every_solver(figures):
    curves = _curves(figures)
    assert {"error_vs_nfe-gauss-aniso-3d-w2-exact", "error_vs_nfe-mix-2d-w2"} <= set(curves)
    for name, fig in curves.items():
        drawn = []
        for ax in _panels(fig):
            lines = _solver_lines(ax)
            assert 0 < len(lines) <= 8, name
            drawn += [ln.get_gid().removeprefix("solver:") for ln in lines]
        assert sorted(drawn) == sorted(s[0] for s in SOLVERS), name  # each solver once
        titles = [ax.get_legend().get_title().get_text() for ax in _panels(fig)]
        assert titles[:2] == ["ODE single-step (1/2)", "ODE single-step (2/2)"], titles
        assert fig.get_figwidth() == pytest.approx(3.3)


def test_a_solver_looks_the_same_in_every_figure(figures, sweep):
    seen: dict[str, set] = {}
    for fig in _curves(figures).values():
        for ax in _panels(fig):
            for ln in _solver_lines(ax):
                seen.setdefault(ln.get_gid(), set()).add((ln.get_color(), ln.get_marker()))
    assert all(len(v) == 1 for v in seen.values()), seen
    styles = load_results(sweep, solvers=["heun", "ddpm"]).styles  # a filter restyles nothing
    assert seen["solver:heun"] == {(styles["heun"].color, styles["heun"].marker)}
    # within a panel the solvers differ in colour (8 consecutive slots, 8 colours)
    for fig in _curves(figures).values():
        for ax in _panels(fig):
            colours = [ln.get_color() for ln in _solver_lines(ax)]
            assert len(set(colours)) == len(colours)


def test_style_map_is_deterministic_and_unique():
    pairs = [(name, family) for name, (_, family) in registered_slots().items()]
    styles = solver_styles(pairs)  # the default study: every registered solver
    assert len({(s.color, s.marker) for s in styles.values()}) == len(styles)
    assert {s.color for s in styles.values()} <= set(PALETTE)
    assert {s.marker for s in styles.values()} <= set(MARKERS)
    assert solver_styles(reversed(pairs)) == styles  # the order rows come in does not matter
    few = solver_styles([("heun", "ode-singlestep"), ("kdiff:sample_euler", "ode-singlestep"),
                         ("ddim", "ode-singlestep"), ("dpmpp-2m", "multistep")])
    assert few["ddim"].color != few["heun"].color  # a small family still gets distinct colours
    assert few["kdiff:sample_euler"].family == "peers"
    assert len({(s.color, s.marker) for s in few.values()}) == 4


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legends_do_not_cover_data(figures):
    for name, fig in figures.items():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        legends = [ax.get_legend() for ax in axes if ax.get_legend()] + list(fig.legends)
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent()
            for ax in axes:
                assert not _overlaps(box, ax.get_window_extent()), (name, legend)
                for ln in _solver_lines(ax):
                    points = ax.transData.transform(np.column_stack(ln.get_data()))
                    inside = ((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0)
                              & (points[:, 1] < box.y1))
                    assert not inside.any(), (name, ln.get_gid())


def test_reference_slopes_and_floor_only_where_they_apply(figures):
    for name, fig in _curves(figures).items():
        for ax in _panels(fig):
            slopes = {str(a.get_gid()) for a in [*ax.get_lines(), *ax.texts]
                      if str(a.get_gid()).startswith("slope:")}
            assert slopes == ({f"slope:{p}" for p in (1, 2, 3, 4)} if name.startswith("error") else set())
            labels = sorted(t.get_text() for t in ax.texts if str(t.get_gid()).startswith("slope:"))
            assert labels == (["1", "2", "3", "4"] if name.startswith("error") else [])
            floors = [c for c in ax.collections if c.get_gid() == "floor"]
            if "w2-exact" in name:
                assert not floors  # w2-exact rows carry no noise floor
            else:  # the floor spans the x range of the panel's data, not the axes
                assert floors
                xs = np.concatenate([ln.get_xdata() for ln in _solver_lines(ax)])
                extent = floors[0].get_datalim(ax.transData)
                assert extent.x0 == pytest.approx(xs.min()) and extent.x1 == pytest.approx(xs.max())


def _label_boxes(ax) -> list:
    return [t.get_window_extent() for t in ax.get_yticklabels() if isinstance(t, Text) and t.get_text()]


def test_row_charts_have_a_row_per_solver_and_no_overlapping_labels(figures):
    charts = {n: f for n, f in figures.items() if n.startswith(("leaderboard", "order_vs_theory"))}
    assert {"leaderboard-mix-2d-w2", "order_vs_theory-gauss-aniso-3d-w2-exact"} <= set(charts)
    for name, fig in charts.items():
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_yticklabels() if str(t.get_gid()).startswith("solver:")]
        assert sorted(labels) == sorted(s[0] for s in SOLVERS), name
        boxes = sorted(_label_boxes(ax), key=lambda b: b.y0)
        assert all(lo.y1 <= hi.y0 + 0.5 for lo, hi in zip(boxes, boxes[1:], strict=False)), name
        assert all(b.x0 >= 0 for b in boxes), name  # inside the figure
    order = charts["order_vs_theory-gauss-aniso-3d-w2-exact"].axes[0]
    assert any(t.get_text().startswith("no fit") for t in order.texts)  # midpoint's NaN order


def test_paper_writes_pdf_and_png_slides_png(sweep: Path, tmp_path: Path):
    paper = make_figures(sweep, problems=["gauss-aniso-3d"])
    assert {p.suffix for p in paper} == {".pdf", ".png"}
    assert len({p.stem for p in paper}) * 2 == len(paper)
    slides = make_figures(sweep, style="slides", solvers=["heun", "euler"], problems=["mix-2d"])
    assert {p.suffix for p in slides} == {".png"}
    assert {p.stem for p in slides} == {"error_vs_nfe-mix-2d-w2", "leaderboard-mix-2d-w2",
                                        "work_precision-mix-2d-w2"}


def test_leaderboard_cells_and_verdict_counts(sweep: Path):
    res = load_results(sweep)
    with use_style("paper") as size:  # no run within the budgets (a sweep of 50-400 steps): no figure
        assert leaderboard(res, size, budgets=(1, 2)) == []
    assert leaderboard_tables(res, budgets=(1, 2)) == []
    boards = dict(leaderboard_tables(res))
    exact = boards["gauss-aniso-3d: w2-exact"].set_index("solver")
    assert exact.loc["euler", "NFE 10"] == f"{1.1 / 8:.3g} exact (8)"  # at the largest NFE <= 10
    assert exact.loc["rk4", "NFE 10"] == "–" and exact.loc["rk4", "NFE 20"].endswith("exact (16)")
    assert exact.index[0] == "dpm-solver-3" and list(exact["rank"]) == list(range(1, len(SOLVERS) + 1))
    w2 = boards["mix-2d: w2"].set_index("solver")
    assert " ± " in w2.loc["ddpm", "NFE 20"] and "< floor" in w2.loc["rk4", "NFE 50"]
    row = pd.Series({"value": 0.0123, "stderr": 0.001, "below_floor": False, "nfe": 9.0, "budget": 10})
    assert equal_nfe_cell(row, "weak-mean") == "0.0123 ± 0.002 (9)"
    below = pd.Series({**row, "nfe": 10.0, "below_floor": True})
    assert equal_nfe_cell(below, "mmd") == "0.0123 ± 0.002 < floor"
    counts = verdict_counts(res).set_index("problem")
    assert counts.loc["all", "unresolved"] == 1 and counts.loc["all", "fits"] == len(SOLVERS)
    assert list(counts.columns) == ["agrees", "disagrees", "unresolved", "fits"]
