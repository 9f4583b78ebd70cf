"""The terminal summary `bench run` ends with: per problem and metric, each solver's theory order, measured
order [95 % CI] and verdict, and its error at NFE 10 / 20 / 50 (equal NFE, bench/report/equal_nfe.py),
in at most 100 columns."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.report.equal_nfe import EQUAL_NFE_BUDGETS, error_at_nfe
from bench.report.results import load_results

WIDTH = 100
HEADLINE = {"gaussian": ("w2-exact",), "mixture": ("mmd", "path-rms")}  # what --summary headline shows
FAMILY_SHORT = {"ode-singlestep": "ode-1step", "multistep": "multistep", "sde": "sde", "adaptive": "adaptive"}


def _order(row: pd.Series | None) -> tuple[str, str, str]:
    """(theory, measured [CI], verdict) of an orders.csv row; a fit without an order (too few levels
    above the floor) still shows its theory and verdict."""
    if row is None:
        return "–", "–", ""
    theory = row["theory"]
    theory_text = "–" if pd.isna(theory) else f"{theory:g}"
    if not pd.isna(row.get("theory_max")) and row["theory_max"] != theory:
        theory_text += f"–{row['theory_max']:g}"
    measured = "–"
    if not pd.isna(row["order"]):
        measured = f"{row['order']:.2f} [{row['ci_low']:.2f},{row['ci_high']:.2f}]"
    return theory_text, measured, str(row.get("verdict") or "")


def _error(cell: pd.Series | None, budget: int) -> str:
    """'0.0123', '0.0123 (9)' when the NFE used differs, '<floor' marks, '–' when none fits."""
    if cell is None:
        return "–"
    used = f" ({cell.nfe:.0f})" if round(cell.nfe) != budget else ""
    text = f"{cell.value:.3g}"
    if len(text + used) > 11:
        text = f"{cell.value:.2g}"
    return text + used + ("*" if cell.below_floor else "")


def metric_table(orders: pd.DataFrame, errors: pd.DataFrame, problem: str, metric: str) -> str:
    """The lines of one (problem, metric) block, solvers sorted by error at the middle budget."""
    o = orders[(orders.problem == problem) & (orders.metric == metric)]
    o = o[o.axis == "steps"].set_index("solver") if "axis" in o else o.set_index("solver")
    e = errors[(errors.problem == problem) & (errors.metric == metric)]
    solvers = sorted(set(o.index) | set(e.solver))
    middle = EQUAL_NFE_BUDGETS[len(EQUAL_NFE_BUDGETS) // 2]
    at = {(r.solver, r.budget): r for r in e.itertuples()}

    def key(s: str) -> float:
        cell = at.get((s, middle))
        return cell.value if cell is not None and math.isfinite(cell.value) else math.inf

    head = (f"{'solver':<18}{'family':<10}{'theory':>6} {'order [95% CI]':<17}{'verdict':<11}"
            + "".join(f"{'NFE ' + str(b):>12}" for b in EQUAL_NFE_BUDGETS))
    lines = [head]
    for s in sorted(solvers, key=key):
        row = o.loc[s] if s in o.index else None
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        family = (row["family"] if row is not None else e[e.solver == s].family.iloc[0])
        theory, measured, verdict = _order(row)
        errors_text = "".join(f" {_error(at.get((s, b)), b):>11}" for b in EQUAL_NFE_BUDGETS)
        lines.append(f"{s[:17]:<18}{FAMILY_SHORT.get(family, str(family))[:9]:<10}{theory:>6} "
                     f"{measured[:16]:<17}{verdict[:10]:<11}{errors_text}")
    return "\n".join(line[:WIDTH] for line in lines)


def terminal_summary(out: Path, headline: bool = True) -> str:
    """The summary of results directory `out`: one block per problem and metric (with `headline`, only
    w2-exact on Gaussian problems and mmd, path-rms on mixtures), then a count of cells not ok."""
    res = load_results(out)
    frame = res.rows
    orders = res.orders if res.orders is not None else pd.DataFrame(columns=["problem", "metric"])
    errors = error_at_nfe(frame)
    ok = frame[frame.status == "ok"]
    blocks = []
    for problem in sorted(ok.problem.unique()):
        present = list(dict.fromkeys(ok[ok.problem == problem].metric))
        if headline:
            wanted = HEADLINE["gaussian"] + HEADLINE["mixture"]
            present = [m for m in present if m in wanted] or present[:1]
        for metric in present:
            title = f"{problem} · {metric}: error at equal NFE (seed mean; * below the noise floor)"
            blocks.append(f"{title[:WIDTH]}\n{metric_table(orders, errors, problem, metric)}")
    bad = frame[frame.status != "ok"]
    if not bad.empty:
        counts = ", ".join(f"{n} {s}" for s, n in bad.drop_duplicates(["problem", "solver", "steps", "seed"])
                           .status.value_counts().items())
        blocks.append(f"cells not ok: {counts} (status and reason columns of results.csv)")
    if not blocks:
        return "no successful cells"
    return "\n\n".join(blocks)
