"""The `bench` command line: `bench list`, `run`, `plot`, `report`, `perf` here; `bench learned`,
`bench images` and `bench fid` in their own modules. Only click is imported at start (`bench --help` in
well under a second): every command imports what it needs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from bench.cli.options import (
    INTS,
    NAMES,
    SEEDS,
    command_line,
    flat,
    jobs_option,
    out_option,
    problem_option,
    sampling_options,
)
from bench.studies.defaults import DEFAULT_NFE, DEFAULT_PROBLEMS, DEFAULT_SAMPLES, DEFAULT_SEEDS

_ERROR_CLASSES = {  # module: exceptions whose message is meant for the user
    "analytic": ["ProblemError"], "analytic.grids": ["GridError"], "bench.measure.metrics": ["MetricError"],
    "bench.report.figures": ["ResultsError"], "bench.studies.analytic": ["SweepError"],
    "bench.studies.learned": ["CheckpointError"], "bench.sweep.executor": ["ExecutorError"],
    "bench.sweep.store": ["RunDirError"], "solvers.registry": ["UnknownSolverError"],
    "bench.studies.images.data": ["DataError"], "bench.studies.images.fid": ["FIDError"],
    "bench.studies.images.models": ["ModelLoadError"], "bench.studies.images.run": ["ImageRunError"],
    "bench.studies.images.train": ["TrainError"], "bench.studies.images.split": ["SplitError"],
    "bench.studies.grid_optimize": ["OptimizeError"], "bench.studies.conformance": ["ConformanceError"],
    "bench.measure.precision": ["PrecisionError"],
}


def _user_errors() -> tuple[type[Exception], ...]:
    """The user-facing exception classes (one line on stderr, exit status 2), imported only once a
    command has failed; modules whose optional dependencies are missing are left out."""
    import importlib

    found: list[type[Exception]] = [FileNotFoundError]
    for module, names in _ERROR_CLASSES.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(mod, name) for name in names)
    return tuple(found)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """diffusion-solver-bench: how accurate is each diffusion sampler, really?

    On Gaussian mixtures the score is exact, so the errors measured are pure discretization error.
    """


@cli.group("list")
def list_cmd() -> None:
    """List solvers, problems, grids, schedules or metrics."""


def _emit(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    import pandas as pd

    frame = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        click.echo(frame.to_string(index=False))


FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                      show_default=True)


@list_cmd.command("solvers")
@FORMAT
@click.option("--tag", default=None, help="Only solvers with this tag or selector (ode, sde, ...).")
@click.option("--external", is_flag=True, help="diffusers:/kdiff: solvers the installed peers offer.")
def list_solvers(fmt: str, tag: str | None, external: bool) -> None:
    """Registered solvers: declared (weak) order, strong order, the order this implementation is capped
    at (and why), NFE per step. JSON adds the sources of the orders and the method's reference."""
    from solvers import resolve

    rows = []
    from solvers.external import installed_globs

    specs = installed_globs() if external else tag or "all"
    for solver in resolve(specs):
        if external and tag and tag not in solver.all_tags:
            continue
        info = solver.describe()
        if fmt == "table":
            info = {k: info[k] for k in ("name", "order", "strong_order", "order_cap", "nfe_per_step", "tags",
                                         "order_note")}
            info["tags"] = ",".join(t for t in info["tags"] if t not in ("ode", "sde")) + (
                ",sde" if solver.stochastic else ",ode")
            info["strong_order"] = "–" if info["strong_order"] is None else info["strong_order"]
            info["order_cap"] = "–" if info["order_cap"] is None else info["order_cap"]
            note = info["order_note"]
            info["order_note"] = note if len(note) <= 60 else note[:59] + "…"  # whole in --format json
        rows.append(info)
    _emit(rows, fmt)


@list_cmd.command("problems")
@FORMAT
def list_problems(fmt: str) -> None:
    """Built-in problems (any JSON problem file works too; default schedule vp-linear, any --schedule)."""
    from analytic import describe_problem, problem_names

    rows = [describe_problem(name) for name in problem_names()]
    for row in rows:
        row["description"] = row.pop("description")  # last column
    _emit(rows, fmt)


@list_cmd.command("grids")
@FORMAT
def list_grids(fmt: str) -> None:
    """Time grids (parameters in brackets, e.g. karras[rho=5])."""
    from analytic import GRIDS

    rows = [{"name": k, "description": g.description} for k, g in GRIDS.items()]
    rows += [{"name": "gits", "description": "GITS: DP on a teacher flow; points, coeff, samples"},
             {"name": "file:PATH", "description": "a grid file (bench grid optimize writes them)"}]
    _emit(rows, fmt)


@list_cmd.command("schedules")
@FORMAT
def list_schedules(fmt: str) -> None:
    """Noise schedules."""
    from analytic import SCHEDULES, get_schedule

    rows = []
    for name, (_, description) in SCHEDULES.items():
        s = get_schedule(name)
        rows.append({"name": name, "t_min": s.t_min, "t_max": s.t_max, "description": description})
    _emit(rows, fmt)


@list_cmd.command("metrics")
@FORMAT
def list_metrics(fmt: str) -> None:
    """Error metrics."""
    from bench.measure import metrics

    _emit([{"name": k, "description": d} for k, d in metrics.METRICS.items()], fmt)


class Progress:
    """A line per finished cell with elapsed time and ETA (rewritten in place on a TTY, at most
    every 2 s otherwise)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.first_done: int | None = None

    def __call__(self, done: int, total: int, cell, elapsed: float, rows: list[dict] | None = None) -> None:
        if self.first_done is None:
            self.first_done = done - 1  # cells already finished by an earlier (resumed) run
        now = time.monotonic()
        if not self.tty and done < total and now - self.last < 2.0:
            return
        self.last = now
        eta = elapsed / (done - self.first_done) * (total - done)
        what = cell.key.replace("|", " ")
        msg = (f"[{done:>5}/{total} {100 * done / total:3.0f}%] {what} | {_clock(elapsed)} elapsed, "
               f"ETA {_clock(eta)}")
        click.echo(("\r\033[K" + msg) if self.tty else msg, err=True, nl=not self.tty or done == total)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@cli.command("run")
@problem_option(",".join(DEFAULT_PROBLEMS))
@click.option("--solvers", type=NAMES, default="all", show_default=True,
              help="Comma list: names, brackets for parameters (ddim-eta[eta=0.5]), selectors (all, ode, "
                   "sde, singlestep, multistep, adaptive), globs (dpmpp-*), path/to/file.py:Class.")
@click.option("--nfe", type=INTS, default=None, help="NFE budgets: each solver gets the most steps whose NFE "
              f"fits (both recorded) [default: {','.join(map(str, DEFAULT_NFE))}].")
@click.option("--steps", type=INTS, default=None, help="Step counts instead of NFE budgets (e.g. 4,8,16).")
@sampling_options()
@click.option("--metric", "metric_names", type=NAMES, multiple=True,
              help="Comma list of metrics, repeatable (bench list metrics) [default: w2-exact on Gaussian "
                   "problems; weak-mean, weak-cov, weak-bump, mmd, path-rms, path-median on mixtures].")
@click.option("--samples", type=click.IntRange(min=1), default=DEFAULT_SAMPLES, show_default=True,
              help="Samples per cell.")
@click.option("--seeds", type=SEEDS, default=f"0-{DEFAULT_SEEDS[-1]}", show_default=True,
              help="Seeds: a list and/or ranges (0-63, 0,5,7).")
@click.option("--prior", type=click.Choice(["exact", "standard"]), default="exact", show_default=True,
              help="exact: x_T from the exact p_T (isolates discretization error); standard: "
                   "N(0, sigma(t_max)^2 I).")
@click.option("--denoise-final", is_flag=True, help="Add one explicit Tweedie step x <- E[x0|x] at t_min.")
@click.option("--summary", type=click.Choice(["headline", "all", "none"]), default="headline",
              show_default=True, help="Terminal summary: the headline metrics (w2-exact on Gaussians, mmd "
              "and path-rms on mixtures), every metric, or none.")
@jobs_option
@click.option("--cluster", default=None, help="Run the cells on Dask instead of --jobs: tcp://HOST:PORT of a "
              "running scheduler, or local:N to start N local workers (needs the cluster extra).")
@out_option(help="Output directory [default: results/<timestamp>-<commit>/]; rerun with the same --out to "
            "resume (finished cells are skipped).")
def run_cmd(problems, solvers, nfe, steps, grid, schedule, device, dtype, metric_names, samples, seeds, prior,
            denoise_final, summary, jobs, cluster, out) -> None:
    """Run solvers on exact problems; write tidy results (results.csv/.parquet, orders.csv,
    manifest.json) and print a summary at equal NFE."""
    from bench.studies.analytic import SweepConfig, run_sweep
    from bench.sweep.manifest import short_commit

    if nfe and steps:
        raise click.BadParameter("give --nfe or --steps, not both")
    config = SweepConfig(problems=flat(problems), solvers=[",".join(solvers)], steps=steps, nfe=nfe,
                         grid=grid, schedule=schedule, metrics=flat(metric_names), samples=samples,
                         seeds=seeds, dtype=dtype, device=device, prior=prior, denoise_final=denoise_final)
    if out is None:
        out = Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{short_commit()}"
    start = time.perf_counter()
    run_sweep(config, out, command=command_line(), jobs=jobs, progress=Progress(), cluster=cluster)
    if summary != "none":
        from bench.report.summary import terminal_summary

        click.echo(terminal_summary(out, headline=summary == "headline"))
    click.echo(f"\nwrote {out} in {time.perf_counter() - start:.0f} s: results.csv, orders.csv, manifest.json"
               f"\n  figures: bench plot {out}\n  report:  bench report {out}")


def _filters(fn):
    fn = click.option("--problems", type=NAMES, default=None, help="Comma list of problems to include.")(fn)
    fn = click.option("--solvers", type=NAMES, default=None,
                      help="Comma list of solvers (globs) to include.")(fn)
    fn = click.option("--style", type=click.Choice(["paper", "slides"]), default="paper", show_default=True,
                      help="paper: single-column PDFs and PNGs; slides: large PNGs.")(fn)
    return click.argument("results_dir", type=click.Path(path_type=Path))(fn)


@cli.command("plot")
@_filters
def plot_cmd(results_dir: Path, style: str, solvers: list[str] | None, problems: list[str] | None) -> None:
    """Draw the figures of a results directory of any kind from its files (never reruns a study; the
    sample grids of problems fitted to images draw 8 samples per solver again, deterministically)."""
    from bench.report.figures import make_figures

    for path in make_figures(results_dir, style=style, solvers=solvers, problems=problems):
        click.echo(str(path))


@cli.command("report")
@_filters
def report_cmd(results_dir: Path, style: str, solvers: list[str] | None, problems: list[str] | None) -> None:
    """Write report.md and tables.tex for a results directory of any kind."""
    from bench.report.report import write_report

    path = write_report(results_dir, style=style, solvers=solvers, problems=problems)
    text = path.read_text()
    if "## Does the exact study predict the learned one?" in text:  # an image split study: print the answer
        section = text.split("## Does the exact study predict the learned one?", 1)[1]
        click.echo("Does the exact study predict the learned one?" + section.split("\n## ", 1)[0].rstrip())
    click.echo(str(path))


@cli.group("perf")
def perf_cmd() -> None:
    """Speed benchmarks (figures for notes and README; asv tracks them over commits)."""


@perf_cmd.command("score")
@click.option("--n", default=65536, show_default=True)
@click.option("--k", default=8, show_default=True)
@click.option("--dims", type=INTS, default="2,16", show_default=True)
@click.option("--repeats", default=10, show_default=True)
@click.option("--problems", type=NAMES, default="fmnist-gauss,fmnist-gmm,fmnist-empirical", show_default=True,
              help="Problems fitted to images: score throughput against a plain GEMM of the same FLOPs "
                   "(n = 4096 rows, float32); 'none' to skip.")
def perf_score(n: int, k: int, dims: list[int], repeats: int, problems: list[str]) -> None:
    """Analytic score evaluations per second against autograd of the log-density, and on problems
    fitted to images against a plain GEMM of the same FLOPs (goal: >= 50%)."""
    from analytic import ProblemError
    from bench.studies.speed import image_score_throughput, score_throughput

    for name in [p for p in problems if p != "none"]:
        try:
            res = image_score_throughput(name, repeats=repeats)
        except ProblemError as exc:
            click.echo(f"{name}: skipped ({exc})")
            continue
        click.echo(f"{name} (n=4096, float32): {res['evals_per_s']:.3g} scores/s, {res['gflops']:.1f} "
                   f"GFLOP/s = {100 * res['efficiency']:.0f}% of a plain GEMM of the same FLOPs "
                   f"({res['gemm_gflops']:.1f} GFLOP/s)")
    for d in dims:
        res = score_throughput(n, k, d, repeats)
        click.echo(f"n={n} K={k} d={d}: analytic {res['analytic']:.3g} evals/s; autograd through "
                   f"torch.distributions {res['autograd']:.3g} (x{res['analytic'] / res['autograd']:.1f}), "
                   f"autograd of our log-density {res['autograd_same_density']:.3g} "
                   f"(x{res['analytic'] / res['autograd_same_density']:.1f})")


@perf_cmd.command("overhead")
@click.option("--steps", default=50, show_default=True)
@click.option("--solvers", "names", type=NAMES, default="ddim,dpmpp-2m,unipc-2", show_default=True)
def perf_overhead(steps: int, names: list[str]) -> None:
    """Per-step loop overhead against diffusers' scheduler.step loop (needs diffusers)."""
    from bench.studies.speed import loop_overhead

    for name in names:
        r = loop_overhead(name, steps)
        click.echo(f"{name}: ours {1e6 * r['ours']:.0f} us/step, "
                   f"diffusers {1e6 * r['diffusers']:.0f} us/step, ratio {r['ratio']:.2f}")


@perf_cmd.command("sweep")
@click.option("--jobs", default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def perf_sweep(jobs: int, out: Path | None) -> None:
    """Wall time of the default `bench run --solvers all` study and where the time goes."""
    from bench.studies.speed import default_sweep_timing

    click.echo(default_sweep_timing(jobs, out))


@perf_cmd.command("cli")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
def perf_cli(repeats: int) -> None:
    """Start-up time of `bench --help` and of every command's --help (best of --repeats, fresh processes)."""
    from bench.studies.speed import cli_startup

    for command, seconds in cli_startup(_command_paths(cli), repeats).items():
        click.echo(f"{seconds:6.3f} s  bench {command} --help".replace("  --help", " --help"))


def _command_paths(group: click.Group, prefix: str = "") -> list[str]:
    """'' and every command path ('run', 'learned train', ...) under `group`."""
    paths = [prefix.strip()]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, f"{prefix}{name} "))
        else:
            paths.append(f"{prefix}{name}")
    return paths


from bench.cli.conformance import conformance_cmd  # noqa: E402 (the groups import only click and options)
from bench.cli.fid import fid_group  # noqa: E402
from bench.cli.grid import grid_group  # noqa: E402
from bench.cli.images import images_group  # noqa: E402
from bench.cli.learned import learned_group  # noqa: E402
from bench.cli.split import split_cmd  # noqa: E402

images_group.add_command(split_cmd)
cli.add_command(conformance_cmd)
for _group in (learned_group, images_group, fid_group, grid_group):
    cli.add_command(_group)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: show its help
        click.echo(exc.format_message(), err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message().strip().splitlines()[0]}", err=True)
        sys.exit(2)
    except _user_errors() as exc:
        message = str(exc).strip().strip("'\"").splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
