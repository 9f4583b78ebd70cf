"""`bench images split`: a learned image model against the exact target fitted to the same data
(bench/studies/images/split.py), and the Kendall-tau table of the exact-vs-learned link."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.options import INTS, NAMES, SEEDS, command_line, jobs_option, out_option
from bench.studies.defaults import DEFAULT_GRID, LINK_NFE, LINK_SOLVERS


@click.command("split")
@click.option("--model", default="digits", show_default=True,
              help="A shipped model (digits, fmnist) or a diffusers model directory.")
@click.option("--target", default=None,
              help="The exact target fitted to the same data [default: digits-gmm / fmnist-gmm].")
@click.option("--solvers", type=NAMES, default=",".join(LINK_SOLVERS), show_default=True,
              help="Comma list of fixed-step ODE solvers.")
@click.option("--nfe", type=INTS, default=",".join(map(str, LINK_NFE)), show_default=True,
              help="NFE budgets.")
@click.option("--seeds", type=SEEDS, default="0-3", show_default=True,
              help="Seeds (each its own x_T batch and references): list and/or ranges.")
@click.option("--samples", type=click.IntRange(min=2), default=64, show_default=True,
              help="Samples per seed.")
@click.option("--grid", default=DEFAULT_GRID, show_default=True, help="Time grid (bench list grids).")
@click.option("--reference-method", default="dpmpp-3m", show_default=True,
              help="The network's high-accuracy solver.")
@click.option("--reference-steps", type=click.IntRange(min=2), default=100, show_default=True,
              help="Its steps N (self-checked against 2N; the 2N run is the reference).")
@click.option("--fid-results", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A `bench images run` results directory with FID rows of the same model: adds FID to "
                   "the Kendall-tau table.")
@jobs_option
@out_option(required=True)
def split_cmd(model: str, target: str | None, solvers: list[str], nfe: list[int], seeds: list[int],
              samples: int, grid: str, reference_method: str, reference_steps: int, fid_results: Path | None,
              jobs: int | None, out: Path) -> None:
    """Discretization, score and total error of every solver on a learned image model, the exact
    study's error on the fitted target, and whether the exact study ranks solvers as the learned one."""
    from bench.cli.main import Progress
    from bench.report.link import fid_frame, kendall_table, split_table
    from bench.studies.images.split import SplitConfig, SplitStudy
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    config = SplitConfig(model, target, solvers, nfe, seeds, samples, grid, reference_method, reference_steps,
                         None if fid_results is None else str(fid_results))
    run_study(SplitStudy(config), out, command=command_line(), jobs=jobs, progress=Progress())
    frame = load_rows(out)
    click.echo(f"\npath-rms by component (mean over seeds):\n{split_table(frame).to_string(index=False)}")
    click.echo(f"\nKendall tau between solver rankings (95% bootstrap CI over seeds):\n"
               f"{kendall_table(frame, fid_frame(config.fid_results)).to_string(index=False)}")
    click.echo(f"\n{len(frame)} rows in {out / 'results.csv'}\n  figures: bench plot {out}\n"
               f"  report:  bench report {out}")
