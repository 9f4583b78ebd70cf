"""`report.md` and `tables.tex` for a results directory: run summary (manifest), measured orders,
fits that disagree with theory and unresolved ones (with their reasons),
errors at NFE 10/20/50, failed runs, and the figures. Reads only the directory's files."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.figures import Results, load_results, make_figures
from bench.report.peers import external_sections

NFE_TARGETS = (10, 20, 50)
FIGURE_ORDER = ("error_vs_nfe", "order_vs_theory", "work_precision", "fid_vs_nfe", "score_vs_discretization")
FIGURE_CAPTIONS = {
    "error_vs_nfe": "Error against NFE; bands: 95 % CI over seeds; dashed: reference slopes of order 1-4; "
                    "grey: metric noise floor.",
    "order_vs_theory": "Measured order (95 % CI) against theoretical order; hollow: disagrees with theory, "
                       "grey: unresolved.",
    "work_precision": "Work-precision: error against sampling wall time.",
    "fid_vs_nfe": "FID against NFE (learned models).",
    "score_vs_discretization": "Exact score (discretization error, solid) against learned model (total "
                               "error, dashed); dash-dot: the learned model's own error.",
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


def preferred_fits(orders: pd.DataFrame) -> pd.DataFrame:
    """One fit per (problem, schedule, model, grid, metric, solver): the 'steps' axis when present,
    else 'nfe' (adaptive solvers)."""
    ident = ["problem", "schedule", "model", "grid", "metric", "solver"]
    pref = (orders["axis"] != "steps").astype(int)
    return orders.assign(_pref=pref).sort_values("_pref", kind="stable").drop_duplicates(ident).drop(
        columns="_pref").sort_values(ident)


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


def errors_table(res: Results, targets: tuple[int, ...] = NFE_TARGETS) -> tuple[pd.DataFrame, dict[str, str]]:
    """Mean value over seeds at the largest NFE at or below each target (the NFE used is shown when
    it differs from the target)."""
    rows = res.rows[(res.rows["status"] == "ok") & np.isfinite(res.rows["value"])]
    if rows.empty:
        return pd.DataFrame(), {}
    varying, fixed = _constant(rows, ("schedule", "model", "grid"))
    keys = ["problem", *varying, "metric", "solver"]
    out = []
    for values, grp in rows.groupby(keys, sort=True):
        record = dict(zip(keys, values, strict=True))
        for target in targets:
            below = grp[grp["nfe"] <= target]
            if below.empty:
                record[f"NFE {target}"] = "–"
                continue
            nfe = below["nfe"].max()
            value = below.loc[below["nfe"] == nfe, "value"].mean()
            record[f"NFE {target}"] = _fmt(value) + ("" if nfe == target else f" (@{int(nfe)})")
        out.append(record)
    return pd.DataFrame(out), fixed


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
    return frame.to_latex(index=False, escape=True, caption=caption, label=f"tab:{label}", position="htbp",
                          longtable=len(frame) > 40)


def _figures(res: Results, style: str, solvers: list[str] | None, problems: list[str] | None) -> list[Path]:
    figdir = res.directory / "figures"
    if not figdir.is_dir() or not any(figdir.glob("*.png")):
        make_figures(res.directory, style, solvers, problems)

    def rank(p: Path) -> tuple[int, str]:
        stem = next((i for i, s in enumerate(FIGURE_ORDER) if p.stem.startswith(s)), len(FIGURE_ORDER))
        return stem, p.stem

    return sorted(figdir.glob("*.png"), key=rank)


def write_report(results_dir: Path, style: str = "paper", solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> Path:
    """Write report.md and tables.tex into the results directory (figures made first if missing)."""
    res = load_results(results_dir, solvers, problems)
    figures = _figures(res, style, solvers, problems)
    run = manifest_table(res)
    orders, orders_fixed = orders_table(res)
    disagree = disagreements_table(res)
    unresolved = verdicts_table(res, "unresolved")
    errors, errors_fixed = errors_table(res)
    failures = failures_table(res)

    filters = ""
    if solvers or problems:
        filters = f"Filtered to solvers {solvers or 'all'}, problems {problems or 'all'}.\n\n"
    targets = "/".join(str(t) for t in NFE_TARGETS)
    lines = [
        f"# Solver benchmark report: {res.directory.name}", "",
        filters + "## Run", "", "" if res.manifest else "_no manifest.json in the directory_\n",
        _markdown(run, ""), "",
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
        f"## Error at NFE {targets}", "",
        _fixed_text(errors_fixed) + "Mean over seeds at the largest NFE at or below the target; "
        "(@n) marks the NFE used when it differs.", "",
        _markdown(errors, "no successful rows"), "",
        "## Failed runs", "", _markdown(failures, "none"), "",
    ]
    lines += external_sections(res.rows, res.orders, _markdown)
    lines += ["## Figures", ""]
    for fig in figures:
        base = next((s for s in FIGURE_ORDER if fig.stem.startswith(s)), "")
        caption = FIGURE_CAPTIONS.get(base, fig.stem)
        lines += [f"![{fig.stem}](figures/{fig.name})", "", f"*{caption}*", ""]
    report = res.directory / "report.md"
    report.write_text("\n".join(lines))

    tex = [
        "% Tables of the solver benchmark; needs \\usepackage{booktabs} (and longtable for long tables).",
        _latex(run.assign(value=run["value"].str.replace("`", "", regex=False)), "Run summary", "run"),
        _latex(orders, "Measured orders of convergence", "orders"),
        _latex(disagree, "Solvers that disagree with theory", "disagree"),
        _latex(unresolved, "Unresolved order fits", "unresolved"),
        _latex(errors, f"Error at NFE {targets} (largest NFE at or below the target)", "errors"),
        _latex(failures, "Failed runs", "failures"),
    ]
    (res.directory / "tables.tex").write_text("\n".join(tex))
    return report
