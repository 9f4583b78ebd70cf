"""`report.md` and `tables.tex` for a results directory. report.md leads with the leaderboard (error at
equal NFE 10/20/50 per problem and metric, bench/report/equal_nfe.py) and the verdict counts, then the
run summary (manifest), the measured orders, the fits that disagree with theory and the unresolved
ones (each with its reason), failed runs, external solvers, and the figures. Reads only the
directory's files (figures are drawn first when figures/ has none)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure.paired import Z95
from bench.report.conformance import cards, markdown
from bench.report.equal_nfe import EQUAL_NFE_BUDGETS, error_at_nfe
from bench.report.figures import Results, load_results, make_figures
from bench.report.link import link_sections
from bench.report.peers import external_sections
from bench.report.results import by_cell, ok_rows, preferred_fits

NFE_TARGETS = EQUAL_NFE_BUDGETS
VERDICTS = ("agrees", "disagrees", "unresolved")
FIGURE_ORDER = ("leaderboard", "error_vs_nfe", "order_vs_theory", "work_precision", "fid_vs_nfe",
                "score_vs_discretization", "decomposition")
FIGURE_CAPTIONS = {
    "leaderboard": "Error at equal NFE (10 and 20) per solver with 95 % CI, sorted by the error at NFE 20; "
                   "hollow: below the noise floor.",
    "error_vs_nfe": "Error against NFE, a panel per solver family; bands: 95 % CI (standard error); hollow: "
                    "below 3x the noise floor or 2x the standard error (not fitted); dashed: reference "
                    "slopes of order 1-4; grey: the noise floor where the metric has a shared one.",
    "order_vs_theory": "Measured order (95 % CI) per solver, coloured by verdict; grey bar: the theory "
                       "(its range for capped implementations).",
    "work_precision": "Work-precision: error against sampling wall time, a panel per solver family.",
    "fid_vs_nfe": "FID against NFE (learned models).",
    "score_vs_discretization": "Exact score (discretization error, solid) against learned model (total "
                               "error, dashed); dash-dot: the learned model's own error.",
    "decomposition": "Score / discretization split per solver.",
}
# Words in an orders.csv note and the reason they stand for (first match wins per keyword).
NOTE_REASONS = (
    ("floor", "points below noise floor"), ("warm", "warm-up"), ("stiff", "stiffness near t_min"),
    ("diverg", "diverged points"), ("round", "round-off"), ("float32", "round-off"),
    ("saturat", "error saturates"), ("pre-asymptotic", "pre-asymptotic range"),
)
MIN_FIT_POINTS = 3


def disagreement_reason(note: str, n_points: float, n_excluded: float) -> str:
    """A short reason for a disagreement, derived only from the fit's note and point counts."""
    text = (note or "").lower()
    reasons = list(dict.fromkeys(reason for word, reason in NOTE_REASONS if word in text))
    if np.isfinite(n_excluded) and n_excluded > 0 and "points below noise floor" not in reasons:
        reasons.append(f"{int(n_excluded)} point(s) excluded")
    if np.isfinite(n_points) and n_points < MIN_FIT_POINTS:
        reasons.append(f"only {int(n_points)} point(s) in the fit")
    return "; ".join(reasons) or "not explained by the fit's note"


def _constant(frame: pd.DataFrame, cols: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Split columns into those that vary (kept) and those with one value (stated once)."""
    keep, fixed = [], {}
    for c in cols:
        values = frame[c].astype(str).unique()
        if len(values) == 1:
            fixed[c] = values[0]
        else:
            keep.append(c)
    return keep, fixed


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def orders_table(res: Results) -> tuple[pd.DataFrame, dict[str, str]]:
    """The measured orders, one fit per solver and cell (see preferred_fits)."""
    if res.orders is None or res.orders.empty:
        return pd.DataFrame(), {}
    o = preferred_fits(res.orders)
    varying, fixed = _constant(o, ("schedule", "model", "grid", "axis"))
    table = o[["problem", *[c for c in varying if c != "axis"], "metric", "solver", "family"]].copy()
    if "axis" in varying:
        table["axis"] = o["axis"]
    table["order"] = o["order"].map(lambda v: _fmt(v, 3))
    table["95% CI"] = [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(o["ci_low"], o["ci_high"], strict=True)]
    table["theory"] = [_theory_text(*v) for v in zip(o["theory"], _col(o, "theory_max", o["theory"]),
                                                     _col(o, "theory_kind", ""), strict=True)]
    table["verdict"] = o["verdict"]
    table["points (excl.)"] = [f"{_int(n)} ({_int(e)})" for n, e in zip(o["n_points"], o["n_excluded"],
                                                                         strict=True)]
    table["note"] = o["note"]
    return table.reset_index(drop=True), fixed


def _int(value: float) -> str:
    return "–" if not np.isfinite(value) else str(int(value))


def _col(frame: pd.DataFrame, name: str, default) -> pd.Series:
    if name in frame:
        return frame[name]
    return default if isinstance(default, pd.Series) else pd.Series(default, index=frame.index)


def _theory_text(low: float, high: float, kind: str) -> str:
    """'2', '3..4' (a capped implementation) with the kind of order: '1 (strong)'."""
    if not np.isfinite(low):
        return "–"
    text = _fmt(low) if not np.isfinite(high) or high == low else f"{_fmt(low)}..{_fmt(high)}"
    return text + (f" ({kind})" if isinstance(kind, str) and kind in ("weak", "strong") else "")


def verdicts_table(res: Results, verdict: str) -> pd.DataFrame:
    """The fits with a given verdict ('disagrees' or 'unresolved') and the verdict's reason; for
    disagreements also a hint read from the fit's note."""
    if res.orders is None or res.orders.empty:
        return pd.DataFrame()
    o = preferred_fits(res.orders)
    o = o[o["verdict"] == verdict]
    if o.empty:
        return pd.DataFrame()
    table = pd.DataFrame({
        "problem": o["problem"], "metric": o["metric"], "solver": o["solver"], "axis": o["axis"],
        "order": o["order"].map(_fmt),
        "theory": [_theory_text(*v) for v in zip(o["theory"], _col(o, "theory_max", o["theory"]),
                                                 _col(o, "theory_kind", ""), strict=True)],
        "reason": _col(o, "reason", "").fillna("").astype(str),
    })
    if verdict == "disagrees":
        table["direction"] = np.where(~np.isfinite(o["order"].astype(float)), "no fit",
                                      np.where(o["order"] > o["theory"], "above theory", "below theory"))
        table["fit note"] = [disagreement_reason(*v) for v in zip(o["note"], o["n_points"], o["n_excluded"],
                                                                  strict=True)]
    return table.reset_index(drop=True)


def disagreements_table(res: Results) -> pd.DataFrame:
    return verdicts_table(res, "disagrees")


def _nfe_text(nfe: float) -> str:
    return str(int(nfe)) if float(nfe).is_integer() else f"{nfe:.3g}"


def equal_nfe_cell(row: pd.Series, metric: str) -> str:
    """'0.012 ± 0.001', 'exact' in place of the CI for w2-exact, '< floor' below the noise floor and the
    NFE used in parentheses when it differs from the budget: '0.012 ± 0.001 < floor (9)'."""
    text = _fmt(row["value"])
    if metric == "w2-exact":
        text += " exact"
    elif np.isfinite(row["stderr"]):
        text += f" ± {Z95 * row['stderr']:.2g}"
    if row["below_floor"]:
        text += " < floor"
    if row["nfe"] != row["budget"]:
        text += f" ({_nfe_text(row['nfe'])})"
    return text


def leaderboard_tables(res: Results, budgets: tuple[int, ...] = NFE_TARGETS
                       ) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) per problem and metric (and schedule/model/grid where they vary): the error at
    each NFE budget per solver, ranked by the error at the largest budget, then the smaller ones."""
    out = []
    for labels, rows in by_cell(ok_rows(res.rows, positive=False)):
        table = error_at_nfe(rows, budgets)
        if table.empty:
            continue
        metric = labels[-1]
        values = table.pivot_table(index="solver", columns="budget", values="value", aggfunc="first")
        cols = sorted(values.columns, reverse=True)
        ranked = values.sort_values(cols, na_position="last").index
        cells = table.assign(text=[equal_nfe_cell(r, metric) for _, r in table.iterrows()])
        wide = cells.pivot_table(index="solver", columns="budget", values="text", aggfunc="first")
        wide = wide.reindex(index=ranked, columns=sorted(values.columns)).fillna("–")
        wide.columns = [f"NFE {int(b)}" for b in wide.columns]
        families = table.drop_duplicates("solver").set_index("solver")["family"]
        wide.insert(0, "family", families.reindex(wide.index).to_numpy())
        wide.insert(0, "solver", wide.index)
        wide.insert(0, "rank", range(1, len(wide) + 1))
        out.append((f"{', '.join(labels[:-1])}: {metric}", wide.reset_index(drop=True)))
    return out


def verdict_counts(res: Results) -> pd.DataFrame:
    """Fits per verdict (one per solver and cell, see preferred_fits), per problem and overall."""
    if res.orders is None or res.orders.empty:
        return pd.DataFrame()
    fits = preferred_fits(res.orders)
    counts = pd.crosstab(fits["problem"], fits["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    counts.loc["all"] = counts.sum()
    counts["fits"] = counts.sum(axis=1)
    return counts.reset_index().rename(columns={"index": "problem"}).rename_axis(columns=None)


def failures_table(res: Results) -> pd.DataFrame:
    bad = res.rows[res.rows["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    grouped = bad.groupby(["status", "problem", "solver", "reason"], sort=True)
    return grouped.agg(rows=("value", "size"), steps=("steps", lambda s: ", ".join(
        str(int(v)) for v in sorted(set(s.dropna()))))).reset_index()


def _duration(manifest: dict) -> str:
    try:
        start = datetime.fromisoformat(str(manifest["started"]))
    except (KeyError, ValueError):
        return "unknown"
    if not manifest.get("finished"):
        return "unfinished (no 'finished' time)"
    try:
        seconds = (datetime.fromisoformat(str(manifest["finished"])) - start).total_seconds()
    except ValueError:
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _dict_text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "–"
    return "–" if value in (None, "") else str(value)


def manifest_table(res: Results) -> pd.DataFrame:
    m = res.manifest or {}
    counts = res.rows["status"].value_counts()
    rows_item = ("rows", ", ".join(f"{k} {v}" for k, v in counts.items()))
    if not m:
        return pd.DataFrame([rows_item], columns=["item", "value"])
    items = [
        ("command", f"`{m['command']}`" if m.get("command") else "–"),
        ("git commit", str(m.get("git_commit") or "–")),
        ("started", str(m.get("started") or "–")),
        ("finished", str(m.get("finished") or "–")),
        ("duration", _duration(m)),
        ("seeds", ", ".join(str(s) for s in m.get("seeds") or []) or "–"),
        ("versions", _dict_text(m.get("versions"))),
        ("machine", _dict_text(m.get("machine"))),
        rows_item,
    ]
    return pd.DataFrame(items, columns=["item", "value"])


def _markdown(frame: pd.DataFrame, empty: str) -> str:
    return frame.to_markdown(index=False) if not frame.empty else f"_{empty}_"


def _fixed_text(fixed: dict[str, str]) -> str:
    return ("All rows: " + ", ".join(f"{k} {v}" for k, v in fixed.items()) + ".\n\n") if fixed else ""


def _latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    if frame.empty:
        return f"% {caption}: no rows\n"
    tex = frame.to_latex(index=False, escape=True, caption=caption, label=f"tab:{label}", position="htbp",
                         longtable=len(frame) > 40)
    return tex.replace("±", r"$\pm$").replace("–", "--")  # no unicode symbols for pdflatex


def _figures(res: Results, style: str, solvers: list[str] | None, problems: list[str] | None) -> list[Path]:
    figdir = res.directory / "figures"
    if not figdir.is_dir() or not any(figdir.glob("*.png")):
        make_figures(res.directory, style, solvers, problems)

    def rank(p: Path) -> tuple[int, str]:
        stem = next((i for i, s in enumerate(FIGURE_ORDER) if p.stem.startswith(s)), len(FIGURE_ORDER))
        return stem, p.stem

    return sorted(figdir.glob("*.png"), key=rank)


def _leaderboard_lines(boards: list[tuple[str, pd.DataFrame]]) -> list[str]:
    targets = "/".join(str(t) for t in NFE_TARGETS)
    lines = [
        f"## Leaderboard: error at equal NFE {targets}", "",
        "Mean over seeds at the NFE budget (bench/report/equal_nfe.py): cells placed at that budget, else "
        "the largest NFE at or below it (an adaptive solver: its tolerance whose mean NFE is the largest "
        "at or below it); (n): the NFE used where it differs from the budget. ± half the 95 % CI from the "
        "standard error; exact: w2-exact is computed, not sampled; < floor: below the noise floor. "
        "Ranked by the error at the largest budget.", "",
    ]
    if not boards:
        return lines + ["_no successful rows_", ""]
    for heading, table in boards:
        lines += [f"### {heading}", "", table.to_markdown(index=False), ""]
    return lines


def _figure_lines(figures: list[Path]) -> list[str]:
    lines = ["## Figures", ""]
    kind = None
    for fig in figures:
        base = next((s for s in FIGURE_ORDER if fig.stem.startswith(s)), "")
        if base != kind:
            kind = base
            lines += [f"### {base or 'other'}", "", f"*{FIGURE_CAPTIONS.get(base, '')}*", ""]
        lines += [f"![{fig.stem}](figures/{fig.name})", ""]
    return lines


def _conformance_report(res: Results, figures: list[Path]) -> Path:
    """report.md of a conformance study: the cards, the run and the figure."""
    lines = [f"# Conformance report: {res.directory.name}", "", markdown(cards(res.rows)),
             "## Run", "", _markdown(manifest_table(res), "_no manifest.json in the directory_"), ""]
    lines += _figure_lines(figures)
    report = res.directory / "report.md"
    report.write_text("\n".join(lines))
    return report


def write_report(results_dir: Path, style: str = "paper", solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> Path:
    """Write report.md and tables.tex into the results directory (figures made first if missing)."""
    res = load_results(results_dir, solvers, problems)
    figures = _figures(res, style, solvers, problems)
    if (res.manifest or {}).get("kind") == "conformance":
        return _conformance_report(res, figures)
    split = (res.manifest or {}).get("kind") == "image-split"
    boards = [] if split else leaderboard_tables(res)  # a split's components have their own tables
    counts = verdict_counts(res)
    run = manifest_table(res)
    orders, orders_fixed = orders_table(res)
    disagree = disagreements_table(res)
    unresolved = verdicts_table(res, "unresolved")
    failures = failures_table(res)

    filters = ""
    if solvers or problems:
        filters = f"Filtered to solvers {solvers or 'all'}, problems {problems or 'all'}.\n\n"
    lines = [f"# Solver benchmark report: {res.directory.name}", "", filters]
    lines += link_sections(res.rows, res.manifest, _markdown) if split else _leaderboard_lines(boards)
    lines += [
        "## Verdicts", "",
        "Order fits per verdict (one fit per solver, problem and metric: the steps axis where present).", "",
        _markdown(counts, "no orders.csv, or no fits in it"), "",
        "## Run", "", "" if res.manifest else "_no manifest.json in the directory_\n", _markdown(run, ""), "",
    ]
    if res.manifest and res.manifest.get("config"):
        lines += ["<details><summary>config</summary>", "", "```json",
                  json.dumps(res.manifest["config"], indent=1, default=str), "```", "", "</details>", ""]
    lines += [
        "## Measured orders", "",
        _fixed_text(orders_fixed) + "Least-squares slope of log error against log steps (against log NFE "
        "where no steps fit exists); points (excl.): points in the fit (points left out).", "",
        _markdown(orders, "no orders.csv, or no fits in it"), "",
        "## Solvers that disagree with theory", "",
        "The fit's CI excludes the theory (± tolerance) and its finest local slopes have settled there. "
        "Weak errors are compared with weak orders, pathwise errors with strong orders.", "",
        _markdown(disagree, "none"), "",
        "## Unresolved fits", "",
        "Neither agreement nor disagreement can be claimed; the reason says why (too few levels above "
        "the noise floor or the standard error, local slopes still drifting, or a CI too wide).", "",
        _markdown(unresolved, "none"), "",
        "## Failed runs", "", _markdown(failures, "none"), "",
    ]
    lines += external_sections(res.rows, res.orders, _markdown)
    lines += _figure_lines(figures)
    report = res.directory / "report.md"
    report.write_text("\n".join(lines))

    flat = pd.concat([t.assign(cell=h) for h, t in boards], ignore_index=True) if boards else pd.DataFrame()
    if not flat.empty:
        flat = flat[["cell", *[c for c in flat.columns if c != "cell"]]]
    targets = "/".join(str(t) for t in NFE_TARGETS)
    tex = [
        "% Tables of the solver benchmark; needs \\usepackage{booktabs} (and longtable for long tables).",
        _latex(flat, f"Error at equal NFE {targets}", "errors"),
        _latex(counts, "Order fits per verdict", "verdicts"),
        _latex(run.assign(value=run["value"].str.replace("`", "", regex=False)), "Run summary", "run"),
        _latex(orders, "Measured orders of convergence", "orders"),
        _latex(disagree, "Solvers that disagree with theory", "disagree"),
        _latex(unresolved, "Unresolved order fits", "unresolved"),
        _latex(failures, "Failed runs", "failures"),
    ]
    (res.directory / "tables.tex").write_text("\n".join(tex))
    return report
