"""Does the exact study predict the learned one? Tables and the figure of an image split study
(bench/studies/images/split.py).

Rankings of the same solvers at one NFE budget, each from its own study:
  exact-gauss w2   w2-exact on the `-gauss` target fitted to the data (no sampling error)
  exact-gmm mmd    the paired weak error (mmd) of the solver with the exact `-gmm` score
  learned path-rms the solver's discretization error with the network (vs its own fine flow)
  FID              FID of the network's samples (a `bench images run` on a GPU), when given
Kendall's tau-b between two rankings, with a 95% percentile-bootstrap CI: seeds resampled with
replacement (the same draw for every seeded ranking), per-solver means recomputed; a ranking with no
seeds (w2-exact, FID) is fixed, so a pair of them has no CI. Reading: positive / negative when the CI
excludes 0, else unresolved.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from bench.report.results import budget_of  # noqa: E402
from bench.report.style import format_log_axes, write_png  # noqa: E402
from bench.sweep.store import load_rows  # noqa: E402

RANKINGS = {  # name -> (component, metric) of the split study's rows
    "exact-gauss w2": ("exact-gauss", "w2-exact"),
    "exact-gmm mmd": ("exact", "mmd"),
    "learned path-rms": ("discretization", "path-rms"),
}
BOOTSTRAP = 2000
SPLIT_COLUMNS = ("discretization", "both", "exact", "score")


def _values(frame: pd.DataFrame, fid: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Per ranking: rows (solver, budget, seed, value); seed -1 where the ranking has no seeds."""
    ok = frame[frame["status"] == "ok"].assign(budget=budget_of)
    out = {}
    for name, (component, metric) in RANKINGS.items():
        part = ok[(ok["component"] == component) & (ok["metric"] == metric)]
        seeded = component != "exact-gauss"
        out[name] = pd.DataFrame({"solver": part["solver"], "budget": part["budget"].astype(float),
                                  "seed": part["seed"] if seeded else -1, "value": part["value"]})
    if fid is not None:
        part = fid[(fid["metric"] == "fid") & (fid["status"] == "ok")]
        part = part.assign(budget=budget_of(part))
        out["FID"] = pd.DataFrame({"solver": part["solver"], "budget": part["budget"].astype(float),
                                   "seed": -1, "value": part["value"]})
    return out


def _means(values: pd.DataFrame, budget: float, seeds: np.ndarray | None) -> pd.Series:
    part = values[values["budget"] == budget]
    if seeds is not None and (part["seed"] >= 0).any():
        counts = pd.Series(seeds).value_counts()
        part = part[part["seed"].isin(counts.index)]
        weights = part["seed"].map(counts)
        return (part["value"] * weights).groupby(part["solver"]).sum() / weights.groupby(part["solver"]).sum()
    return part.groupby("solver")["value"].mean()


def _tau(a: pd.Series, b: pd.Series) -> tuple[float, int]:
    common = a.index.intersection(b.index)
    if len(common) < 3:
        return math.nan, len(common)
    return float(kendalltau(a[common], b[common]).statistic), len(common)


def kendall_table(frame: pd.DataFrame, fid: pd.DataFrame | None = None, boot: int = BOOTSTRAP,
                  seed: int = 0) -> pd.DataFrame:
    """One row per (budget, pair of rankings): tau, its bootstrap CI, the solvers ranked, the reading."""
    values = _values(frame, fid)
    seeds = np.array(sorted(frame.loc[frame["seed"].notna(), "seed"].unique()))
    budgets = sorted(set(values["learned path-rms"]["budget"]))
    rng = np.random.default_rng(seed)
    draws = [rng.choice(seeds, len(seeds)) for _ in range(boot)] if len(seeds) else []
    rows = []
    seeded = {name: bool((v["seed"] >= 0).any()) for name, v in values.items()}
    for budget in budgets:
        point = {name: _means(v, budget, None) for name, v in values.items()}
        # per ranking, its means under every bootstrap draw, once (a ranking enters several pairs)
        resampled = {name: ([_means(v, budget, d) for d in draws] if seeded[name]
                            else [point[name]] * len(draws)) for name, v in values.items()}
        for first, second in combinations(values, 2):
            tau, n = _tau(point[first], point[second])
            if math.isnan(tau):
                continue
            taus = ([_tau(x, y)[0] for x, y in zip(resampled[first], resampled[second], strict=True)]
                    if seeded[first] or seeded[second] else [])
            taus = [t for t in taus if math.isfinite(t)]
            lo, hi = (np.percentile(taus, [2.5, 97.5]) if taus else (math.nan, math.nan))
            reading = ("positive" if lo > 0 else "negative" if hi < 0 else "unresolved") if taus else \
                "no CI (neither ranking has seeds)"
            rows.append({"nfe": int(budget), "ranking": first, "against": second, "solvers": n,
                         "tau": round(tau, 3), "ci_low": round(float(lo), 3), "ci_high": round(float(hi), 3),
                         "reading": reading})
    return pd.DataFrame(rows)


def split_table(frame: pd.DataFrame, metric: str = "path-rms") -> pd.DataFrame:
    """path-rms per (solver, budget), mean over seeds, for each component, with w2-exact on -gauss."""
    ok = frame[frame["status"] == "ok"].assign(budget=budget_of)
    part = ok[(ok["metric"] == metric) & ok["component"].isin(SPLIT_COLUMNS[:3])]
    wide = part.pivot_table(index=["solver", "budget"], columns="component", values="value", aggfunc="mean")
    score = ok[(ok["component"] == "score") & (ok["metric"] == metric)]["value"].mean()
    gauss = ok[ok["component"] == "exact-gauss"].set_index(["solver", "budget"])["value"]
    wide["score"] = score
    wide["exact-gauss w2"] = gauss.reindex(wide.index)
    wide = wide.reset_index().rename(columns={"budget": "nfe"})
    wide["nfe"] = wide["nfe"].astype(int)
    cols = ["solver", "nfe", *[c for c in SPLIT_COLUMNS if c in wide], "exact-gauss w2"]
    return wide[cols].sort_values(["nfe", "discretization"]).round(4)


def plot_split(frame: pd.DataFrame, out: str | Path, metric: str = "path-rms") -> Path:
    """Small multiples, one panel per solver: error vs NFE with the network (discretization, both),
    with the exact score on the fitted target (exact), and the score error as a band."""
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == metric)]
    score = ok[ok["component"] == "score"]["value"]
    solvers = sorted(set(ok[ok["component"] == "discretization"]["solver"]))
    cols = min(4, len(solvers))
    rows = -(-len(solvers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    styles = {"discretization": ("tab:blue", "-", "network: discretization"),
              "both": ("tab:red", "--", "network vs exact flow: both"),
              "exact": ("black", ":", "exact score on the fitted target")}
    for ax, solver in zip(axes.flat, solvers, strict=False):
        if len(score):
            lo, hi = float(score.min()), float(score.max())
            ax.axhspan(lo, hi if hi > lo else lo * 1.02, color="tab:gray", alpha=0.3, lw=0)
        for component, (color, ls, _) in styles.items():
            part = ok[(ok["solver"] == solver) & (ok["component"] == component)]
            mean = part.groupby("nfe")["value"].agg(["mean", "std", "count"]).sort_index()
            if len(mean):
                ci = 1.96 * mean["std"].fillna(0) / np.sqrt(mean["count"])
                ax.errorbar(mean.index, mean["mean"], yerr=ci, color=color, ls=ls, marker="o", ms=3, lw=1.2,
                            capsize=2)
        ax.set(xscale="log", yscale="log", title=solver)
        ax.title.set_fontsize(9)
        format_log_axes(ax)
    for ax in axes.flat[len(solvers):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("NFE")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    handles = [plt.Line2D([], [], color=c, ls=ls, marker="o", ms=3, label=lab)
               for c, ls, lab in styles.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:gray", alpha=0.3, label="score error (network's "
                                 "fine flow vs exact flow), min..max over seeds"))
    learned = ok[ok["component"] == "discretization"]
    fig.suptitle(f"model {learned['model'].iloc[0]}: error split against the exact target "
                 f"{learned['problem'].iloc[0]} ({metric})", fontsize=10)
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return write_png(fig, out)


def fid_frame(directory: str | Path | None) -> pd.DataFrame | None:
    """The rows of a `bench images run` results directory holding FID (its results.csv, else its cell
    log), or None."""
    if directory is None:
        return None
    csv = Path(directory) / "results.csv"
    return pd.read_csv(csv) if csv.exists() else load_rows(Path(directory))


def link_sections(rows: pd.DataFrame, manifest: dict, markdown) -> list[str]:
    """report.md sections of an image split study: the split table and the Kendall-tau table."""
    fid_dir = (manifest.get("config") or {}).get("fid_results")
    fid = fid_frame(fid_dir) if fid_dir and Path(fid_dir).is_dir() else None
    return [
        "## Exact vs learned: error split", "",
        "path-rms per solver and NFE budget, mean over seeds: the solver with the network against the "
        "network's fine flow (discretization) and against the exact flow (both), the solver with the exact "
        "score of the fitted target (exact), the network's fine flow against the exact flow (score); "
        "exact-gauss w2: w2-exact on the -gauss target of the same data.", "",
        markdown(split_table(rows), "no rows"), "",
        "## Does the exact study predict the learned one?", "",
        __doc__.split("\n\n", 1)[1].strip() if __doc__ else "", "",
        markdown(kendall_table(rows, fid), "too few solvers"), "",
    ]
