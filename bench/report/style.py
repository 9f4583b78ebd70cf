"""One visual language for every figure: a fixed colour and marker per solver, panels by solver family,
and two sizes: "paper" (single column, 3.3 in wide, small type; PDF and PNG) and "slides" (PNG).

Solver styles are deterministic and computed once per results directory (before any --solvers filter),
so a solver looks the same in every figure of it. The solvers of each family are ordered by the
registry (theory order, then name; labels the registry does not know, such as ddim-eta[eta=0.5] or
peers, after them by label), and the i-th takes colour i mod 8 and marker (i + i div 8 + a family
offset) mod 8: up to 8 solvers of a family, hence every panel (8 consecutive ones), have 8 different
colours, and no two solvers of a directory share colour and marker (the registered ones never do). A
study with every registered solver (the default study) therefore styles each solver the same in every
run."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from solvers import make_solver, names
from solvers.external import PREFIXES

FAMILIES = ("ode-singlestep", "multistep", "sde", "adaptive", "peers", "other")
FAMILY_LABELS = {"ode-singlestep": "ODE single-step", "multistep": "multistep", "sde": "SDE",
                 "adaptive": "adaptive", "peers": "peers (external)", "other": "other"}
# tab10 without its grey (kept for references and floors) and olive: distinguishable, colour-blind safe
# in pairs of different lightness; the markers tell the lines apart in greyscale
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p")
MAX_LINES = 8  # solver lines per panel


@dataclass(frozen=True)
class Size:
    """Figure geometry, type sizes and output formats of one style."""

    width: float  # inches, whole figure
    panel_height: float  # inches per row of panels (axes only)
    max_cols: int
    font: float
    line: float
    marker: float
    context: str
    formats: tuple[str, ...]  # file types written per figure
    dpi: int  # of the PNG


STYLES = {
    "paper": Size(width=3.3, panel_height=1.05, max_cols=2, font=6.0, line=0.8, marker=2.6,
                  context="paper", formats=("pdf", "png"), dpi=300),
    "slides": Size(width=12.0, panel_height=2.8, max_cols=4, font=12.0, line=1.6, marker=5.5,
                   context="talk", formats=("png",), dpi=150),
}


def write_png(fig, out: str | Path, dpi: int = 150) -> Path:
    """Save `fig` as a PNG at `out` (creating its folder) and close it: the one-off figures' writer."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def get_size(style: str) -> Size:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
    return STYLES[style]


@dataclass(frozen=True)
class SolverStyle:
    color: str
    marker: str
    family: str  # panel family: one of FAMILIES
    slot: int  # position in the directory's order (family, registry order); panels list solvers so


def panel_family(label: str, family: str) -> str:
    """The family panel a solver is drawn in: external samplers in 'peers', unknown families in 'other'."""
    if str(label).startswith(PREFIXES):
        return "peers"
    return family if family in FAMILIES[:4] else "other"


MARKER_OFFSETS = {"ode-singlestep": 0, "multistep": 2, "sde": 4, "adaptive": 6, "peers": 7, "other": 5}


@functools.cache
def registered_slots() -> dict[str, tuple[int, str]]:
    """Position in the registry's order (family, theory order, name) and family of every registered
    solver that can be built with its defaults."""
    keys = []
    for name in names():
        try:
            solver = make_solver(name)
        except Exception:  # a plugin that cannot be built with defaults: styled as an unknown label
            continue
        family = panel_family(name, solver.family)
        keys.append((FAMILIES.index(family), float(solver.order or 0), name, family))
    return {name: (slot, family) for slot, (_, _, name, family) in enumerate(sorted(keys))}


def solver_styles(solvers: Iterable[tuple[str, str]]) -> dict[str, SolverStyle]:
    """Colour, marker and panel family for each (solver label, family) of a results directory; a label
    keeps the first family given for it."""
    known = registered_slots()
    families: dict[str, str] = {}
    for label, family in solvers:
        families.setdefault(str(label), panel_family(label, family))

    def rank(label: str) -> tuple:
        fam = FAMILIES.index(families[label])
        return (fam, 0, known[label][0], "") if label in known else (fam, 1, 0, label)

    out: dict[str, SolverStyle] = {}
    position: dict[str, int] = {}
    for slot, label in enumerate(sorted(families, key=rank)):
        fam = families[label]
        i = position[fam] = position.get(fam, -1) + 1
        out[label] = SolverStyle(PALETTE[i % 8], MARKERS[(i + i // 8 + MARKER_OFFSETS[fam]) % 8], fam, slot)
    return out


@contextmanager
def use_style(style: str) -> Iterator[Size]:
    """Seaborn theme and rc settings of one style, restored on exit."""
    size = get_size(style)
    rc = {
        "font.size": size.font, "axes.titlesize": size.font, "axes.labelsize": size.font,
        "xtick.labelsize": size.font * 0.9, "ytick.labelsize": size.font * 0.9,
        "legend.fontsize": size.font * 0.85, "legend.title_fontsize": size.font * 0.9,
        "lines.linewidth": size.line, "lines.markersize": size.marker, "axes.linewidth": 0.6,
        "grid.linewidth": 0.4, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
        "xtick.minor.width": 0.4, "ytick.minor.width": 0.4, "pdf.fonttype": 42, "ps.fonttype": 42,
        "savefig.bbox": "standard",  # constrained layout fills the figure: no second draw to trim it
        "savefig.pad_inches": 0.02, "axes.titlepad": 3.0,
        "figure.constrained_layout.h_pad": 0.02, "figure.constrained_layout.w_pad": 0.02,
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
