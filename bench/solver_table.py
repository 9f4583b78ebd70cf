"""The README's solver table, generated from the solver classes' declared attributes plus the order
measured here (exact W2 on gauss-aniso-3d, vp-linear, log-SNR grid).

    python -m bench.solver_table --write README.md
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from analytic import get_problem, make_grid
from bench.exact_law import bures_w2, output_law
from bench.models import analytic_model
from bench.sweep import family
from solvers import Solver, resolve

START, END = "<!-- solver-table:start -->", "<!-- solver-table:end -->"


def measured_order(solver: Solver) -> float:
    """Least-squares slope of log exact-W2 over the step counts where the declared order shows."""
    if "adaptive" in solver.all_tags or not solver.affine:
        return math.nan
    problem = get_problem("gauss-aniso-3d")
    model = analytic_model(problem)
    prior, target = problem.marginal(problem.t_max), problem.marginal(problem.t_min)
    steps = (64, 128, 256, 512) if solver.order < 3 else (32, 64, 128, 256)
    logs = []
    for n in steps:
        times = make_grid("logsnr", problem.schedule, n, problem.t_min, problem.t_max)
        law = output_law(solver, model, times, prior.means[0], prior.covs[0])
        logs.append(math.log(bures_w2(law.mean, law.cov, target.means[0], target.covs[0])))
    xs = [math.log(n) for n in steps]
    mx, my = sum(xs) / len(xs), sum(logs) / len(logs)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, logs, strict=True)) / sum((x - mx) ** 2 for x in xs)


def table(measure: bool = True) -> str:
    lines = ["| solver | family | theory order | measured order | NFE/step | reference |",
             "|---|---|---|---|---|---|"]
    for solver in resolve("all"):
        measured = f"{measured_order(solver):.2f}" if measure else "?"
        if measured == "nan":
            measured = "–"
        lines.append(f"| `{solver.name}` | {family(solver)} | {solver.order:g} | {measured} | "
                     f"{solver.nfe_per_step} | {solver.reference} |")
    return "\n".join(lines)


def splice(text: str, new_table: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{new_table}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="README to update in place")
    args = parser.parse_args()
    new = table()
    if args.write:
        args.write.write_text(splice(args.write.read_text(), new))
    else:
        print(new)


if __name__ == "__main__":
    main()
