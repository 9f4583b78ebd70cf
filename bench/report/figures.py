"""Figures of a results directory, written to its `figures/` folder; built in memory first
(build_figures returns matplotlib Figures, saving is separate) so tests can inspect them.

One figure per (problem, metric) of each kind, named '<kind>-<problem>-<metric>':
- error_vs_nfe: small multiples, a panel per solver family (at most 8 solvers each), see curves.py;
- leaderboard: error at NFE 10 and 20 per solver, sorted, with 95 % CIs (charts.py);
- order_vs_theory: measured order (CI) against theory per solver, coloured by verdict (charts.py);
- work_precision: error against sampling wall time, panels as error_vs_nfe;
- fid_vs_nfe and score_vs_discretization: learned-model rows, drawn only when such rows exist;
- decomposition-<metric>: a decomposition study's split per solver.

Styles: "paper" writes single-column (3.3 in) PDFs for the paper and 300-dpi PNGs of the same figures
(report.md links the PNGs); "slides" writes large-type PNGs only. Every solver keeps one colour and
marker in every figure (style.py).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from bench.report.charts import leaderboard, order_vs_theory
from bench.report.conformance import plot_cards
from bench.report.curves import error_vs_nfe, fid_vs_nfe, work_precision
from bench.report.decomposition import plot_decomposition, score_vs_discretization
from bench.report.grids import grids_origin, plot_grid_study, plot_transfer
from bench.report.image_samples import sample_grids
from bench.report.link import plot_split
from bench.report.results import (
    FLOOR_SOURCES,
    METRIC_LABELS,
    ORDER_COLUMNS,
    RESULT_COLUMNS,
    Results,
    ResultsError,
    aggregate,
    floor_label,
    load_results,
    ok_rows,
)
from bench.report.style import Size, format_log_axes, use_style

__all__ = ["FLOOR_SOURCES", "METRIC_LABELS", "ORDER_COLUMNS", "RESULT_COLUMNS", "Results", "ResultsError",
           "aggregate", "build_figures", "floor_label", "load_results", "make_figures", "ok_rows",
           "save_figure"]
KINDS = (error_vs_nfe, leaderboard, order_vs_theory, work_precision, fid_vs_nfe, score_vs_discretization)


def build_figures(res: Results, size: Size) -> list[tuple[str, Figure]]:
    """(file stem, Figure) of every figure the results support; call inside use_style(style)."""
    return [named for kind in KINDS for named in kind(res, size)]


def save_figure(fig: Figure, figdir: Path, name: str, size: Size) -> list[Path]:
    """Write one figure in the style's formats (PDF and PNG for paper, PNG for slides)."""
    figdir.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        format_log_axes(ax)
    fig.set_dpi(size.dpi)  # lay out once at the PNG's resolution (text extents depend on it), then freeze
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    paths = [figdir / f"{name}.{ext}" for ext in size.formats]
    for path in paths:
        fig.savefig(path, dpi=size.dpi)
    return paths


def make_figures(results_dir: Path, style: str = "paper", solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> list[Path]:
    """Write every figure the results directory supports into `figures/` in the style's formats;
    `solvers`/`problems` are names or globs. Returns the paths written."""
    res = load_results(results_dir, solvers, problems)
    figdir = res.directory / "figures"
    paths: list[Path] = []
    kind = (res.manifest or {}).get("kind")
    if kind == "grid":
        return [plot_grid_study(res.rows, figdir / "grid-study.png")]
    if kind == "grid-transfer":
        return [plot_transfer(res.rows, figdir / "grid-transfer.png", grids_origin(res.manifest))]
    if kind == "conformance":
        return [plot_cards(res.rows, figdir / "conformance.png")]
    if kind == "image-split":  # its own figures: the split per solver
        for metric in sorted(set(res.rows["metric"]) - {"w2-exact"}):
            paths.append(plot_split(res.rows, figdir / f"split-{metric}.png", metric))
        return paths
    with use_style(style) as size:
        for kind in KINDS:  # one kind at a time: its figures are freed once saved
            for name, fig in kind(res, size):
                paths += save_figure(fig, figdir, name, size)
    paths += sample_grids(res.rows, figdir)  # problems fitted to images: the samples themselves
    if "component" in res.rows:  # a decomposition study: its split per solver, for each metric
        for metric in sorted(set(res.rows["metric"])):
            out = figdir / f"decomposition-{metric}.png"
            paths.append(plot_decomposition(res.rows[res.rows["metric"] == metric], out, metric))
    return paths
