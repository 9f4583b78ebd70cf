"""`bench grid`: optimise a solver's time grid against an exact error, compare grids over many
solvers (`study`), carry optimised grids to a shipped learned model (`transfer`), plot grids side by
side (`show`) and export them to diffusers and k-diffusion (`export`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.options import INTS, NAMES, SEEDS, command_line, jobs_option, out_option
from bench.studies.defaults import GRID_SOLVERS

OBJECTIVE_HELP = "w2-exact (Gaussian problems), path-rms, path-median, weak-mean, weak-cov, weak-bump, mmd."


@click.group("grid")
def grid_group() -> None:
    """Time grids: optimise, compare, transfer, show, export."""


@grid_group.command("optimize")
@click.option("--solver", required=True, help="One solver spec (bench list solvers).")
@click.option("--nfe", type=click.IntRange(min=1), required=True, help="NFE budget.")
@click.option("--problem", default=None, help="Built-in problem or JSON problem file.")
@click.option("--model", default=None, help="A shipped model (digits, fmnist): optimise against its own "
              "high-accuracy flow from x_T of its fitted target (instead of --problem).")
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@click.option("--objective", default="w2-exact", show_default=True, help=OBJECTIVE_HELP)
@click.option("--samples", type=click.IntRange(min=2), default=256, show_default=True,
              help="x_T draws of sample-based objectives.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of those draws (check the grid on another seed with bench run).")
@click.option("--max-iter", type=click.IntRange(min=1), default=200, show_default=True,
              help="L-BFGS-B iterations per start.")
@click.option("--starts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Start from each of the N best standard grids and keep the best optimum.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The grid file to write (JSON).")
def optimize_cmd(solver: str, nfe: int, problem: str | None, model: str | None, schedule: str | None,
                 objective: str, samples: int, seed: int, max_iter: int, starts: int, out: Path) -> None:
    """Minimise an exact objective over the interior times of SOLVER's grid at an NFE budget, from
    the best standard grid; prints every standard grid's value and writes the optimised grid."""
    from analytic.grid_files import write_grid_file
    from bench.studies.grid_optimize import OptimizeError, optimize
    from bench.studies.grid_study import problem_and_objective, refuse_exact_objective
    from solvers import make_solver

    if (problem is None) == (model is None):
        raise click.BadParameter("give --problem or --model (one of them)")
    refuse_exact_objective(objective, model)
    sampler = make_solver(solver)
    steps = sampler.steps_for_nfe(nfe)
    if steps is None:
        raise OptimizeError(f"{sampler.label} needs at least {sampler.nfe(sampler.min_steps)} NFE")
    if steps < 2:
        raise OptimizeError(f"a 1-step grid has no interior time to optimise (NFE {nfe} gives "
                            f"{sampler.label} 1 step)")
    prob, f = problem_and_objective(objective, sampler, problem=problem, schedule=schedule, model=model,
                                    samples=samples, seed=seed)
    click.echo(f"{sampler.label} at NFE {sampler.nfe(steps)} ({steps} steps) on {prob.name}, "
               f"objective {objective}", err=True)
    found = optimize(f, prob, steps, max_iter=max_iter, starts=starts)
    write_grid_file(out, found.times, prob.schedule.name, problem=prob.name, solver=sampler.label,
                    nfe=sampler.nfe(steps), objective=objective, value=found.value, start=found.start,
                    start_value=found.start_value, standard=found.standard, model=model or "exact",
                    **({} if objective == "w2-exact" else {"samples": samples, "seed": seed}))
    width = max(map(len, found.standard)) + 2
    for name, value in sorted(found.standard.items(), key=lambda kv: kv[1]):
        click.echo(f"{name:<{width}}{value:.6g}")
    best, best_value = found.best_standard
    ratio = best_value / found.value if found.value > 0 else float("inf")
    click.echo(f"{'optimized':<{width}}{found.value:.6g}  ({ratio:.3g}x lower than {best}; started from "
               f"{found.start}; {found.evaluations} evaluations, {found.seconds:.1f} s)")
    click.echo(f"wrote {out}  (use: --grid file:{out})")


@grid_group.command("study")
@click.option("--problem", default=None, help="Built-in problem or JSON problem file.")
@click.option("--model", default=None, help="A shipped model (digits, fmnist): optimise against its own flow "
              "on its fitted target (instead of --problem).")
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@click.option("--solvers", type=NAMES, default=",".join(GRID_SOLVERS), show_default=True,
              help="Comma list of solvers.")
@click.option("--nfe", type=INTS, default="10", show_default=True, help="NFE budgets.")
@click.option("--objective", default="w2-exact", show_default=True, help=OBJECTIVE_HELP)
@click.option("--samples", type=click.IntRange(min=2), default=256, show_default=True,
              help="x_T draws of sample-based objectives.")
@click.option("--max-iter", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--starts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Start from each of the N best standard grids.")
@jobs_option
@out_option(required=True)
def study_cmd(problem: str | None, model: str | None, schedule: str | None, solvers: list[str],
              nfe: list[int], objective: str, samples: int, max_iter: int, starts: int, jobs: int | None,
              out: Path) -> None:
    """Every standard grid and the optimised one, per (solver, NFE); grid files in OUT/grids/."""
    from bench.cli.main import Progress
    from bench.report.grids import grid_table
    from bench.studies.grid_study import GridConfig, GridStudy
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    if (problem is None) == (model is None):
        raise click.BadParameter("give --problem or --model (one of them)")
    config = GridConfig(problem or "", schedule, solvers, nfe, objective, samples, max_iter, str(out), starts,
                        model)
    run_study(GridStudy(config), out, command=command_line(), jobs=jobs, progress=Progress())
    click.echo(grid_table(load_rows(out)).to_string())
    click.echo(f"\ngrids in {out / 'grids'}; figures: bench plot {out}")


@grid_group.command("transfer")
@click.option("--model", default="fmnist", show_default=True, help="A shipped model (digits, fmnist).")
@click.option("--grids", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="A `bench grid study` directory whose grids/ to carry over.")
@click.option("--solvers", type=NAMES, default=",".join(GRID_SOLVERS), show_default=True)
@click.option("--nfe", type=INTS, default="5,10,20", show_default=True)
@click.option("--seeds", type=SEEDS, default="0-3", show_default=True)
@click.option("--samples", type=click.IntRange(min=2), default=64, show_default=True)
@jobs_option
@out_option(required=True)
def transfer_cmd(model: str, grids: Path, solvers: list[str], nfe: list[int], seeds: list[int], samples: int,
                 jobs: int | None, out: Path) -> None:
    """path-rms of each solver with the learned model on the standard grids and on the grids optimised
    on the exact target (the network against its own high-accuracy flow; 95% CI over seeds)."""
    from bench.cli.main import Progress
    from bench.report.grids import transfer_table
    from bench.studies.grid_study import TransferConfig, TransferStudy
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    config = TransferConfig(model, str(grids), solvers, nfe, seeds, samples)
    run_study(TransferStudy(config), out, command=command_line(), jobs=jobs, progress=Progress())
    click.echo(transfer_table(load_rows(out)).to_string())


@grid_group.command("show")
@click.argument("grids", nargs=-1, required=True)
@click.option("--problem", required=True, help="The problem whose schedule and interval the grids use.")
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps of the named grids [default: those of the first grid file, else 10].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
def show_cmd(grids: tuple[str, ...], problem: str, schedule: str | None, steps: int | None,
             out: Path) -> None:
    """Plot GRIDS (names, name[k=v] or file:PATH) side by side: time and log-SNR against step index."""
    from analytic import get_problem
    from analytic.grid_files import read_grid_file
    from bench.measure.grids import problem_grid
    from bench.report.grids import plot_grids

    prob = get_problem(problem, schedule)
    if steps is None:
        files = [g for g in grids if g.startswith("file:")]
        steps = len(read_grid_file(files[0][5:])["times"]) - 1 if files else 10
    times = {}
    for g in grids:
        n = len(read_grid_file(g[5:])["times"]) - 1 if g.startswith("file:") else steps
        times[Path(g[5:]).stem if g.startswith("file:") else g] = problem_grid(g, prob, n)
    files = tuple(Path(g[5:]).stem for g in grids if g.startswith("file:"))
    title = f"{prob.name} ({prob.schedule.name}), {steps} steps"
    click.echo(f"wrote {plot_grids(times, prob.schedule, out, title, files)}")


@grid_group.command("export")
@click.argument("grid_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--problem", default=None, help="The problem whose discrete schedule the diffusers timesteps "
              "use [default: the grid file's].")
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="JSON with diffusers timesteps= and sigmas= and the k-diffusion sigmas (a .pt tensor of "
                   "the latter is written beside it).")
def export_cmd(grid_file: Path, problem: str | None, schedule: str | None, out: Path) -> None:
    """Write a grid file as diffusers `timesteps=` / `sigmas=` and a k-diffusion sigma tensor."""
    import torch

    from analytic import get_problem
    from analytic.grid_files import read_grid_file
    from analytic.grids import GridError
    from solvers.external.grid_export import export_payload

    doc = read_grid_file(grid_file)
    name = problem or doc.get("problem")
    if not name:
        raise GridError(f"{grid_file} names no problem; give --problem")
    prob = get_problem(name, schedule or doc.get("schedule"))
    times = torch.tensor(doc["times"], dtype=torch.float64)
    payload = export_payload(prob.schedule, times, prob.t_min, prob.t_max)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc_out = {"grid_file": str(grid_file), "schedule": prob.schedule.name, **payload}
    out.write_text(json.dumps(doc_out, indent=1))
    pt = out.with_suffix(".pt")
    torch.save(torch.tensor(payload["kdiffusion_sigmas"], dtype=torch.float64), pt)
    click.echo(f"wrote {out} and {pt} (max timestep rounding {payload['max_timestep_rounding']:.3g} in t)")
