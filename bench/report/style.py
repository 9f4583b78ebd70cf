"""One visual language for every figure: a colour family and a marker family per solver family,
shades and marker variants within a family, and two sizes ("paper" single column, "slides")."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

FAMILIES = ("ode-singlestep", "multistep", "sde", "adaptive")
FAMILY_LABELS = {"ode-singlestep": "ODE single-step", "multistep": "multistep", "sde": "SDE",
                 "adaptive": "adaptive"}
# Sequential colormap per family: solvers take evenly spaced shades of their family's map.
FAMILY_CMAPS = {"ode-singlestep": "Blues", "multistep": "Greens", "sde": "Reds", "adaptive": "Purples",
                "other": "Greys"}
# The first marker is the family's own; later solvers of the family cycle through the rest.
FAMILY_MARKERS = {"ode-singlestep": ("o", "h", "p", "8"), "multistep": ("s", "D", "d", "P"),
                  "sde": ("^", "v", "<", ">"), "adaptive": ("X", "*", "H", "+"),
                  "other": ("x", "1", "2", "3")}


@dataclass(frozen=True)
class Size:
    """Figure geometry and type sizes of one style."""

    width: float  # inches, whole figure
    panel_height: float  # inches per row of panels
    max_cols: int
    font: float
    line: float
    marker: float
    context: str


STYLES = {
    "paper": Size(width=3.4, panel_height=1.65, max_cols=2, font=6.5, line=0.9, marker=3.0,
                  context="paper"),
    "slides": Size(width=11.0, panel_height=3.4, max_cols=3, font=14.0, line=2.0, marker=7.0,
                   context="talk"),
}


def get_size(style: str) -> Size:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
    return STYLES[style]


@dataclass(frozen=True)
class SolverStyle:
    color: tuple[float, float, float]
    marker: str
    family: str


def solver_styles(solvers: Iterable[tuple[str, str]]) -> dict[str, SolverStyle]:
    """Colour and marker for each (solver label, family), stable for a given set of solvers.

    Pass every solver of the results directory at once (known families first) so that all
    figures agree."""
    by_family: dict[str, list[str]] = {}
    seen: set[str] = set()
    for label, family in solvers:  # a label keeps the first family given for it
        if label in seen:
            continue
        seen.add(label)
        by_family.setdefault(family if family in FAMILIES else "other", []).append(label)
    out: dict[str, SolverStyle] = {}
    for fam, labels in by_family.items():
        cmap = mpl.colormaps[FAMILY_CMAPS[fam]]
        n = len(labels)
        markers = FAMILY_MARKERS[fam]
        for k, label in enumerate(labels):
            shade = 0.85 if n == 1 else 0.95 - 0.5 * k / (n - 1)  # dark to mid, never washed out
            out[label] = SolverStyle(tuple(cmap(shade)[:3]), markers[k % len(markers)], fam)
    return out


def family_of(family: str) -> str:
    return family if family in FAMILIES else "other"


@contextmanager
def use_style(style: str) -> Iterator[Size]:
    """Seaborn theme and rc settings of one style, restored on exit."""
    size = get_size(style)
    rc = {
        "font.size": size.font, "axes.titlesize": size.font, "axes.labelsize": size.font,
        "xtick.labelsize": size.font * 0.9, "ytick.labelsize": size.font * 0.9,
        "legend.fontsize": size.font * 0.9, "legend.title_fontsize": size.font,
        "lines.linewidth": size.line, "lines.markersize": size.marker, "axes.linewidth": 0.6,
        "grid.linewidth": 0.4, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
        "xtick.minor.width": 0.4, "ytick.minor.width": 0.4, "pdf.fonttype": 42, "ps.fonttype": 42,
        "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "axes.titlepad": 3.0,
    }
    with mpl.rc_context():
        sns.set_theme(context=size.context, style="ticks", rc=rc)
        sns.set_style("ticks", {"axes.grid": True, "grid.color": "0.9"})
        mpl.rcParams.update(rc)
        yield size


def _tick(value: float, _pos: object = None) -> str:
    if value <= 0:
        return ""
    k = round(math.log10(value))
    if abs(value - 10.0 ** k) <= 1e-9 * value and not -2 <= k <= 3:
        return f"$10^{{{k}}}$"
    return f"{value:g}"


def _minor_tick(value: float, pos: object = None) -> str:
    lead = round(value / 10.0 ** math.floor(math.log10(value) + 1e-12), 6) if value > 0 else 0
    return _tick(value) if lead in (2, 5) else ""


def _every_minor_tick(value: float, pos: object = None) -> str:
    return _tick(value) if value > 0 else ""


def format_log_axes(ax: Axes) -> None:
    """Plain numbers (10, 0.01) for decades, powers of ten outside 1e-2..1e3; minor ticks are
    labelled (2, 5 times a decade) when the axis spans less than 1.3 decades or shows at most one
    power of ten, and all of them below half a decade."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or lo <= 0 or hi <= lo:
            continue
        span = math.log10(hi / lo)
        decades = math.floor(math.log10(hi) + 1e-9) - math.ceil(math.log10(lo) - 1e-9) + 1
        minor = _every_minor_tick if span < 0.5 else _minor_tick if span < 1.3 or decades <= 1 else None
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(FuncFormatter(minor or (lambda v, p: "")))
