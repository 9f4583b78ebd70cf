"""The README's solver table: declared orders from the solver classes (nominal, strong, the cap of
this implementation, where each is proven) beside the orders measured by the sweep engine, each
with its 95 % CI and verdict:
- weak: exact W2 on `gauss-aniso-3d` (vp-linear, log-SNR grid, 32-512 steps, no sampling error);
- strong (stochastic solvers): path-rms on `gauss-aniso-3d` against the shared reverse-SDE reference
  (else the same solver) at 1024 vs 2048 steps on the same Brownian path (16-256 steps, 500 samples,
  one seed).

    python -m bench.report.solver_table --write README.md [--cache results/solver-table]

The measurements run as an ordinary resumable sweep into `--cache`.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pandas as pd

from bench.studies.analytic import SweepConfig, run_sweep
from solvers import Solver, resolve

START, END = "<!-- solver-table:start -->", "<!-- solver-table:end -->"
PROBLEM = "gauss-aniso-3d"
WEAK = SweepConfig(problems=[PROBLEM], solvers=["all"], steps=[32, 64, 128, 256, 512], metrics=["w2-exact"],
                   seeds=[0])
STRONG = SweepConfig(problems=[PROBLEM], solvers=["sde"], steps=[16, 32, 64, 128, 256], metrics=["path-rms"],
                     seeds=[0])
HEADER = ("| solver | family | order (weak) | strong | cap | NFE/step | measured weak: exact W2 | "
          "measured strong: path-rms | order proven in |")


def measured(cache: Path) -> pd.DataFrame:
    """orders.csv rows (steps axis) of the two sweeps, indexed by (solver, metric)."""
    frames = []
    for name, config in (("weak", WEAK), ("strong", STRONG)):
        out = run_sweep(config, cache / name, command="python -m bench.report.solver_table", jobs=2)
        frames.append(pd.read_csv(out / "orders.csv"))
    orders = pd.concat(frames)
    return orders[orders["axis"] == "steps"].set_index(["solver", "metric"])


def _cell(orders: pd.DataFrame | None, solver: Solver, metric: str) -> str:
    if orders is None:
        return "?"
    if metric.startswith("path-") and solver.stochastic and not solver.pathwise:
        return "– (no pathwise limit)"
    if (solver.label, metric) not in orders.index:
        return "–"
    r = orders.loc[(solver.label, metric)]
    if not math.isfinite(r["order"]):
        return f"– ({r['verdict']})"
    return f"{r['order']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] {r['verdict']}"


def short_source(source: str, width: int = 110) -> str:
    """The citation without its parenthesised explanations (" (...)", not "O(h^2)"), cut at a word
    within `width` characters (the whole text: `bench list solvers --format json`)."""
    depth, out = 0, []
    for i, ch in enumerate(source):
        if ch == "(" and (depth or (i and source[i - 1] == " ")):
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    text = re.sub(r"\s+([,;:])", r"\1", " ".join("".join(out).split()))
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def table(orders: pd.DataFrame | None = None) -> str:
    """The markdown table; `orders` from `measured` (None: declared columns only, '?' measured)."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for solver in resolve("all"):
        if type(solver).__module__.split(".")[0] != "solvers":  # a file or plugin solver loaded in-process
            continue
        cap = _num(solver.order_cap) + ("*" if solver.order_exceptions else "")
        lines.append(f"| `{solver.name}` | {solver.family} | {_num(solver.order)} | "
                     f"{_num(solver.strong_order)} | {cap} | {solver.nfe_per_step} | "
                     f"{_cell(orders, solver, 'w2-exact')} | "
                     f"{_cell(orders, solver, 'path-rms') if solver.stochastic else ''} | "
                     f"{short_source(solver.order_source)} |")
    return "\n".join(lines)


def splice(text: str, new_table: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{new_table}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="README to update in place")
    parser.add_argument("--cache", type=Path, default=Path("results/solver-table"),
                        help="results directory of the measuring sweeps (resumable)")
    args = parser.parse_args()
    new = table(measured(args.cache))
    if args.write:
        args.write.write_text(splice(args.write.read_text(), new))
        print(f"wrote the solver table into {args.write}")
    else:
        print(new)


if __name__ == "__main__":
    main()
