"""Report sections for external solvers (diffusers:, kdiff:): findings read from the measured rows
(NaN or diverged runs, error rising with NFE, order below theory) and a comparison with our
implementation of the same method at each step count.

Nothing here knows a library's bugs: a finding is raised only by the rows of the run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from solvers.external import PREFIXES, TWINS

RISE_FACTOR = 1.5  # error at a larger NFE above 1.5x the best error at smaller NFE: "rises"
PEER_TOL = 0.05  # comparison: relative difference of the errors beyond which a pair is flagged


def _external(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["solver"].astype(str).str.startswith(PREFIXES)]


def _base(label: str) -> str:
    return label.split("[", 1)[0]


def findings_table(rows: pd.DataFrame, orders: pd.DataFrame | None) -> pd.DataFrame:
    """One line per external (problem, solver, metric) with something wrong in its measured data."""
    ext = _external(rows)
    out = []
    for (problem, solver, metric), grp in ext.groupby(["problem", "solver", "metric"], sort=True):
        found = []
        bad = grp[grp["status"] == "diverged"]
        if not bad.empty:
            steps = ", ".join(str(int(s)) for s in sorted(set(bad["steps"])))
            found.append(f"NaN/diverged at steps {steps} ({bad['reason'].iloc[0]})")
        ok = grp[grp["status"] == "ok"].groupby("steps")["value"].mean().sort_index()
        best, rises = np.inf, []
        for steps, value in ok.items():
            if value > RISE_FACTOR * best:
                rises.append(f"{int(steps)} ({value:.3g} vs best {best:.3g})")
            best = min(best, value)
        if rises:
            found.append("error rises with NFE at steps " + ", ".join(rises))
        if orders is not None and not orders.empty:
            fit = orders[(orders["problem"] == problem) & (orders["solver"] == solver)
                         & (orders["metric"] == metric) & (orders["axis"] == "steps")]
            for _, f in fit.iterrows():
                # the whole CI below the theory: a finding whether the local slopes settled or not
                if np.isfinite(f["order"]) and np.isfinite(f["theory"]) and f["verdict"] != "agrees" \
                        and f["ci_high"] < f["theory"]:
                    found.append(f"order below theory: {f['order']:.2f} vs {f['theory']:g} ({f['verdict']})")
        if found:
            out.append({"problem": problem, "solver": solver, "metric": metric, "finding": "; ".join(found)})
    return pd.DataFrame(out)


def comparison_table(rows: pd.DataFrame, tol: float = PEER_TOL) -> pd.DataFrame:
    """Peer against our solver of the same method (TWINS) at equal step counts: errors (mean over
    seeds), their relative difference, and a flag beyond `tol` or where the peer gave NaN."""
    ext = _external(rows)
    out = []
    for peer, grp in ext.groupby("solver", sort=True):
        twin = TWINS.get(_base(str(peer)))
        ours = rows[rows["solver_name"] == twin] if twin else rows.iloc[:0]
        for (problem, metric, steps), prow in grp.groupby(["problem", "metric", "steps"], sort=True):
            mine = ours[(ours["problem"] == problem) & (ours["metric"] == metric) & (ours["steps"] == steps)]
            for label, orow in mine.groupby("solver", sort=True):
                e_peer = prow.loc[prow["status"] == "ok", "value"].mean()
                e_ours = orow.loc[orow["status"] == "ok", "value"].mean()
                rel = abs(e_peer - e_ours) / e_ours if np.isfinite(e_peer) and e_ours > 0 else np.nan
                flag = "NaN" if not np.isfinite(e_peer) else ("differs" if rel > tol else "")
                out.append({"problem": problem, "metric": metric, "peer": peer, "ours": label,
                            "steps": int(steps), "nfe_peer": int(prow["nfe"].max()),
                            "nfe_ours": int(orow["nfe"].max()), "error_peer": e_peer, "error_ours": e_ours,
                            "rel_diff": rel, "flag": flag})
    return pd.DataFrame(out)


def external_sections(rows: pd.DataFrame, orders: pd.DataFrame | None, markdown) -> list[str]:
    """report.md lines for the external solvers of a run (none when the run has none)."""
    if _external(rows).empty:
        return []
    comparison = comparison_table(rows)
    if not comparison.empty:
        comparison = comparison.assign(**{c: comparison[c].map(lambda v: f"{v:.3g}")
                                          for c in ("error_peer", "error_ours", "rel_diff")})
    return [
        "## External solvers: findings", "",
        f"Read from the measured rows: diverged/NaN runs, an error above {RISE_FACTOR}x the best error at "
        "fewer steps, fitted orders below theory.", "",
        markdown(findings_table(rows, orders), "none"), "",
        "## External solvers against ours", "",
        f"Same method, same step count; rel_diff = |error_peer - error_ours| / error_ours, flagged above "
        f"{PEER_TOL:g} or when the peer gave NaN.", "",
        markdown(comparison, "no peer/ours pairs in this run"), "",
    ]
