"""Conformance cards (`bench conformance`, `bench report`): one card per sampler from a conformance
study's rows, each finding one line with the measured numbers behind it, and a PASS/FLAG summary.

FLAG findings: a step count whose exact error is > 3x the trend of its neighbours (bench/measure/
anomalies.py), a non-finite output or a raise after the first model call at some N, a counted NFE that
differs from the declared one, a measured order that disagrees with the declared one, a non-finite
output in reduced precision where float64 is finite or a rounding error above the data's spread where
float64 is accurate, and a guided error at the largest scale above twice first-order DDIM's (our `ddim`
on the study's grid at the same NFE): the sampler has lost the advantage its order promises. Notes (not
flags): step counts the sampler refuses before any model call, level shifts of the error between
consecutive N, unresolved order verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from analytic import get_problem
from bench.measure.anomalies import outliers, ranges, shifts
from bench.measure.orders import orders_table
from bench.measure.precision import DTYPES
from bench.report.style import format_log_axes, write_png
from bench.studies.conformance import FIT_SAMPLES, order_rows

FLAG, OK, NOTE = "FLAG", "ok", "note"
GUIDANCE_FACTOR = 2.0  # error at the largest w relative to first-order DDIM's that flags
SHIFT_FACTOR = 2.0  # level shifts noted (not flagged) above this
SHIFT_MIN_N = 8


@dataclass
class Finding:
    level: str  # FLAG | ok | note
    axis: str  # dense | order | precision | guidance
    text: str


@dataclass
class Card:
    sampler: str
    context: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def flags(self) -> list[Finding]:
        return [f for f in self.findings if f.level == FLAG]

    @property
    def summary(self) -> str:
        return f"FLAG ({len(self.flags)})" if self.flags else "PASS"

    def add(self, level: str, axis: str, text: str) -> None:
        self.findings.append(Finding(level, axis, text))


def _g(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.2g}" if abs(v) < 1e-3 or abs(v) >= 1e3 else f"{v:.3g}"


def cards(frame: pd.DataFrame) -> list[Card]:
    """One card per sampler, in the order the rows name them."""
    orders = orders_table(order_rows(frame)) if len(frame) else pd.DataFrame()
    spread = _spread(frame[frame["axis"] == "dense"])  # one target for every card of a study
    out = []
    for sampler in dict.fromkeys(frame["solver"]):
        rows = frame[frame["solver"] == sampler]
        dense = rows[rows["axis"] == "dense"]
        problems = ", ".join(dict.fromkeys(rows["problem"].dropna()))
        context = f"{problems}; schedule {rows['schedule'].iloc[0]}, grid {rows['grid'].iloc[0]}"
        card = Card(sampler, context)
        _dense(card, dense)
        _order(card, orders[orders["solver"] == sampler] if len(orders) else orders)
        _precision(card, dense, spread)
        _guidance(card, rows[rows["axis"] == "guidance"])
        out.append(card)
    return out


def _law_rows(dense: pd.DataFrame) -> pd.DataFrame:
    law = dense[(dense["dtype"] == "float64") & dense["metric"].isin(["w2-exact", "w2-fit"])]
    return law.sort_values("steps")


def _dense(card: Card, dense: pd.DataFrame) -> None:
    law = _law_rows(dense)
    if law.empty:
        return
    if (law["status"] == "skipped").all():
        card.add(NOTE, "dense", f"not run: {law['reason'].iloc[0]}")
        return
    ok = law[law["status"] == "ok"]
    fit = ok[ok["metric"] == "w2-fit"]
    what = "exact W2"
    if len(fit):
        floor = _g(float(fit["noise_floor"].median()))
        what = (f"W2 of a Gaussian fit to {FIT_SAMPLES} outputs (noise floor {floor})" if len(fit) == len(ok)
                else f"exact W2 (a Gaussian fit at N = {ranges(fit['steps'])}, where the run is not affine)")
    refused = law[law["reason"].astype(str).str.startswith("refused")]
    failed = law[law["status"] == "diverged"]
    for reason, group in _by_message(failed):
        card.add(FLAG, "dense", f"N = {ranges(group['steps'])}: {reason}")
    for reason, group in _by_message(refused):
        card.add(NOTE, "dense", f"N = {ranges(group['steps'])} {reason}")
    found = outliers(ok["steps"], ok["value"], ok["noise_floor"])
    for o in found:
        card.add(FLAG, "dense", f"N = {o.n}: {what} {_g(o.value)} is {o.ratio:.1f}x the trend of its "
                                f"neighbours ({_g(o.trend)})")
    jumps = shifts(ok["steps"], ok["value"], ok["noise_floor"], SHIFT_FACTOR, SHIFT_MIN_N)
    if jumps:
        big = max(jumps, key=lambda s: abs(math.log(s.ratio)))
        factor = big.ratio if big.ratio > 1 else 1 / big.ratio
        side = "below" if big.ratio > 1 else "above"
        card.add(NOTE, "dense", f"the detrended error level jumps by > {SHIFT_FACTOR:g}x between "
                                f"consecutive N at {len(jumps)} place(s) (N = {ranges(s.n for s in jumps)}); "
                                f"the largest, {factor:.1f}x, is worse {side} {big.n}|{big.n_next}")
    counted = ok.dropna(subset=["declared_nfe"])
    wrong = counted[counted["nfe"].astype(float) != counted["declared_nfe"].astype(float)]
    if len(wrong):
        first = wrong.iloc[0]
        card.add(FLAG, "dense", f"counted NFE differs from the declared one at {len(wrong)} of "
                                f"{len(counted)} N (N = {ranges(wrong['steps'])}), e.g. "
                                f"N = {int(first['steps'])}: "
                                f"{int(first['nfe'])} calls, {int(first['declared_nfe'])} declared")
    if len(ok):
        lo, hi = ok.iloc[0], ok.iloc[-1]
        clean = "" if found or len(failed) else ", no step count > 3x its neighbours' trend"
        nfe = "" if len(wrong) else ", counted NFE = declared"
        card.add(OK if not (found or len(failed) or len(wrong)) else NOTE, "dense",
                 f"{len(ok)} of {len(law)} N measured; {what} {_g(lo['value'])} at N = {int(lo['steps'])} -> "
                 f"{_g(hi['value'])} at N = {int(hi['steps'])}{clean}{nfe}")


def _by_message(rows: pd.DataFrame):
    """Rows grouped by their reason with the numbers in it masked (one line for 'N = 51-100 refused ...'),
    each group's first reason shown."""
    if rows.empty:
        return []
    keys = rows["reason"].astype(str).str.replace(r"\d+", "#", regex=True)
    return [(group["reason"].iloc[0], group) for _, group in rows.groupby(keys, sort=False)]


def _order(card: Card, orders: pd.DataFrame) -> None:
    if orders.empty:
        return
    fits = orders[orders["axis"] == "steps"]
    for fit in fits.itertuples():
        source = "exact W2" if fit.metric == "w2-exact" else fit.metric
        if getattr(fit, "theory_kind", "") == "ode":  # an ODE solver: weak and strong order are its order
            kind = "order (weak)" if fit.metric.startswith("w2") else "order (pathwise)"
        else:
            kind = "strong order" if fit.metric in ("path-rms", "path-median") else "weak order"
        theory = f"{fit.theory:g}" if fit.theory == fit.theory_max else f"{fit.theory:g}..{fit.theory_max:g}"
        measured = (f"{fit.order:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]" if math.isfinite(fit.order)
                    else "not fitted")
        level = {"agrees": OK, "disagrees": FLAG}.get(fit.verdict, NOTE)
        reason = f" ({fit.reason})" if isinstance(fit.reason, str) and fit.reason else ""
        card.add(level, "order", f"{kind} {measured} vs declared {theory} ({source} on {fit.problem}): "
                                 f"{fit.verdict}{reason}")


def _spread(dense: pd.DataFrame) -> float:
    """The RMS spread sqrt(tr Cov) of the dense axis' target: a rounding error above it leaves nothing of
    the data in the output."""
    if dense.empty:
        return math.nan
    try:
        target = get_problem(str(dense["problem"].iloc[0])).target
    except (ValueError, KeyError):
        return math.nan
    return math.sqrt(float(torch.trace(target.cov())))


def _precision(card: Card, dense: pd.DataFrame, spread: float) -> None:
    """Per reduced dtype: from which NFE on the rounding RMS exceeds the float64 run's exact error (the
    error stops falling there: beyond it the bound grows with N), the first non-finite N, and the step
    counts where rounding alone moves the output further than the data's own spread (flagged)."""
    law = _law_rows(dense)
    w64 = law[law["status"] == "ok"].set_index("steps")["value"].astype(float)
    for name in DTYPES:
        if name == "float64":
            continue
        bounds = dense[(dense["metric"] == "w2-bound") & (dense["dtype"] == name)].sort_values("steps")
        if bounds.empty:
            continue
        rounding = dense[(dense["metric"] == "rounding-rms") & (dense["dtype"] == name)
                         & (dense["status"] == "ok")].set_index("steps")
        bad = bounds[(bounds["status"] == "diverged") & bounds["steps"].isin(w64.index)]
        parts = []
        paired = rounding.index.intersection(w64.index).sort_values()
        if len(paired):
            over = rounding.loc[paired, "value"].astype(float) >= w64.loc[paired]
            tail = [n for k, n in enumerate(paired) if over.iloc[k:].all()]
            last = paired[-1]
            nfe = rounding["nfe"].astype(float)
            end = (f"at NFE {int(nfe[last])}: rounding RMS {_g(float(rounding.loc[last, 'value']))}, "
                   f"exact W2 {_g(float(w64[last]))}")
            if tail:
                first = tail[0]
                parts.append(f"error stops falling at NFE {int(nfe[first])}: from there on rounding RMS "
                             f"exceeds the float64 exact W2 ({_g(float(rounding.loc[first, 'value']))} vs "
                             f"{_g(float(w64[first]))}; {end})")
            else:
                parts.append(f"discretization error dominates to the end ({end})")
        else:
            skipped = dense[(dense["metric"] == "rounding-rms") & (dense["dtype"] == name)
                            & (dense["status"] == "skipped")]
            if len(skipped):
                parts.append(f"rounding not measured ({skipped['reason'].iloc[0]})")
        # where the float64 run is a usable sample (exact W2 below a tenth of the spread) and rounding alone
        # moves the output further than the data's spread
        usable = w64[w64 < 0.1 * spread].index if math.isfinite(spread) else w64.index[:0]
        lost = rounding[(rounding["value"].astype(float) > spread) & rounding.index.isin(usable)]
        if len(lost):
            worst = float(lost["value"].max())
            parts.append(f"rounding RMS above the data's spread {_g(spread)} at N = {ranges(lost.index)} "
                         f"(up to {_g(worst)}) where float64 is accurate")
        if len(bad):
            parts.append(f"first non-finite N = {int(bad['steps'].min())} ({len(bad)} N: "
                         f"{ranges(bad['steps'])}; {bad['reason'].iloc[0]})")
        else:
            parts.append("finite wherever float64 is")
        card.add(FLAG if len(bad) or len(lost) else OK, "precision", f"{name}: " + "; ".join(parts))


def _guidance(card: Card, rows: pd.DataFrame) -> None:
    if rows.empty:
        return
    skipped = rows[rows["status"] == "skipped"]
    if len(skipped) == len(rows):
        card.add(NOTE, "guidance", f"not measured: {skipped['reason'].iloc[0]}")
        return
    for budget, group in rows.groupby("nfe_budget"):
        group = group.sort_values("scale")
        bad = group[group["status"] == "diverged"]
        if len(bad):
            card.add(FLAG, "guidance", f"NFE {int(budget)}: w = {', '.join(f'{w:g}' for w in bad['scale'])}: "
                                       f"{bad['reason'].iloc[0]}")
        ok = group[group["status"] == "ok"]
        if len(ok) < 2:
            continue
        first, last = ok.iloc[0], ok.iloc[-1]
        growth = float(last["value"]) / float(first["value"])
        base = float(last["baseline"]) / float(first["baseline"])
        versus = float(last["value"]) / float(last["baseline"])
        values = ", ".join(f"{_g(v)}" for v in ok["value"].astype(float))
        scales = ", ".join(f"{w:g}" for w in ok["scale"])
        level = FLAG if versus > GUIDANCE_FACTOR else OK
        card.add(level, "guidance",
                 f"NFE {int(budget)}: path-rms at w = {scales}: {values} (x{growth:.2g} from w = "
                 f"{first['scale']:g} to {last['scale']:g}, first-order DDIM x{base:.2g}; at w = "
                 f"{last['scale']:g} {versus:.2g}x DDIM's {_g(float(last['baseline']))})")


def render(card: Card) -> str:
    """The card as plain text: a header line, then one line per finding."""
    lines = [f"{card.sampler}: {card.summary}", f"  on {card.context}"]
    lines += [f"  [{f.level:>4}] {f.axis:<9} {f.text}" for f in card.findings]
    return "\n".join(lines)


def markdown(all_cards: list[Card]) -> str:
    """The cards for report.md: a summary table, then each card's findings."""
    out = ["## Conformance cards", "", "| sampler | result | flags |", "|---|---|---|"]
    for card in all_cards:
        out.append(f"| `{card.sampler}` | {card.summary} | "
                   f"{'; '.join(f'{f.axis}: {f.text}' for f in card.flags) or '–'} |")
    for card in all_cards:
        out += ["", f"### `{card.sampler}`: {card.summary}", "", f"On {card.context}.", ""]
        out += [f"- **{f.level}** {f.axis}: {f.text}" for f in card.findings]
    return "\n".join(out) + "\n"


DTYPE_COLORS = {"float64": "black", "float32": "tab:blue", "bfloat16": "tab:orange", "float16": "tab:green"}


def plot_cards(frame: pd.DataFrame, out, all_cards: list[Card] | None = None):
    """One panel per sampler: exact W2 (or its bound in each dtype) against N on log axes, flagged step
    counts circled in red, non-finite ones as red crosses along the top."""
    import matplotlib.pyplot as plt

    all_cards = cards(frame) if all_cards is None else all_cards
    cols = min(4, len(all_cards))
    rows_n = math.ceil(len(all_cards) / cols)
    height = 2.5 * rows_n + 0.6
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, height), squeeze=False, sharex=True)
    for ax, card in zip(axes.flat, all_cards, strict=False):
        dense = frame[(frame["solver"] == card.sampler) & (frame["axis"] == "dense")]
        bounds = dense[dense["metric"] == "w2-bound"]
        top = 1.0
        for name, color in reversed(DTYPE_COLORS.items()):  # float64 last, dashed on top of float32
            rows = bounds[(bounds["dtype"] == name) & (bounds["status"] == "ok")].sort_values("steps")
            if len(rows):
                ax.plot(rows["steps"], rows["value"], color=color, lw=1, label=name,
                        ls="--" if name == "float64" else "-")
                top = max(top, float(rows["value"].max()))
        law = _law_rows(dense)
        ok = law[law["status"] == "ok"]
        if bounds.empty or (bounds["status"] == "skipped").all():
            ax.text(0.5, 0.5, "no dense axis\n" + (str(law["reason"].iloc[0]) if len(law) else ""),
                    ha="center", va="center", fontsize=6, transform=ax.transAxes, wrap=True)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{card.sampler}\n{card.summary}", fontsize=7,
                         color="red" if card.flags else "black")
            continue
        for o in outliers(ok["steps"], ok["value"], ok["noise_floor"]):
            ax.plot([o.n], [o.value], "o", mfc="none", mec="red", ms=8)
        bad = bounds[bounds["status"] == "diverged"]
        for name, group in bad.groupby("dtype"):
            ax.plot(group["steps"], [top * 2] * len(group), "x", color=DTYPE_COLORS.get(name, "red"), ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{card.sampler.replace('diffusers:', 'd:').replace('kdiff:', 'k:')}\n{card.summary}",
                     fontsize=7, color="red" if card.flags else "black")
        ax.tick_params(labelsize=6)
        format_log_axes(ax)
    for ax in list(axes.flat)[len(all_cards):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.supxlabel("steps N", fontsize=8, y=0.32 / height)
    fig.supylabel("W2 error (bound in reduced precision)", fontsize=8)
    fig.tight_layout(rect=(0.02, 0.5 / height, 1, 1))
    return write_png(fig, out)
