"""The `bench` command line."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from analytic import BUILTIN, GRIDS, SCHEDULES, ProblemError
from bench.measure import metrics
from bench.studies.analytic import DEFAULT_PROBLEMS, DEFAULT_SAMPLES, DEFAULT_STEPS, SweepConfig, SweepError
from bench.sweep.executor import ExecutorError
from bench.sweep.store import RunDirError

USER_ERRORS: tuple[type[Exception], ...] = (SweepError, RunDirError, ProblemError, metrics.MetricError,
                                             ExecutorError)


def _user_errors() -> tuple[type[Exception], ...]:
    from bench.report.figures import ResultsError
    from bench.studies.learned import CheckpointError
    from solvers.registry import UnknownSolverError

    return (*USER_ERRORS, ResultsError, UnknownSolverError, CheckpointError)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"{option} needs positive integers, got {text!r}")
    return values


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
    """Built-in problems (any JSON problem file works too)."""
    from analytic import get_problem

    rows = []
    for name, (description, _) in BUILTIN.items():
        p = get_problem(name)
        rows.append({"name": name, "dim": p.dim, "components": p.target.k, "gaussian": p.is_gaussian,
                     "schedule": p.schedule.name, "description": description})
    _emit(rows, fmt)


@list_cmd.command("grids")
@FORMAT
def list_grids(fmt: str) -> None:
    """Time grids (parameters in brackets, e.g. karras[rho=5])."""
    _emit([{"name": k, "description": d} for k, (_, d) in GRIDS.items()], fmt)


@list_cmd.command("schedules")
@FORMAT
def list_schedules(fmt: str) -> None:
    """Noise schedules."""
    from analytic import get_schedule

    rows = []
    for name, (_, description) in SCHEDULES.items():
        s = get_schedule(name)
        rows.append({"name": name, "t_min": s.t_min, "t_max": s.t_max, "description": description})
    _emit(rows, fmt)


@list_cmd.command("metrics")
@FORMAT
def list_metrics(fmt: str) -> None:
    """Error metrics."""
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
@click.option("--problem", "problems", multiple=True,
              help=f"Problem name or JSON file (repeatable). Default: {', '.join(DEFAULT_PROBLEMS)}.")
@click.option("--solvers", default="all", show_default=True,
              help="Comma-separated names, brackets for parameters (ddim-eta[eta=0.5]), selectors "
                   "(all, ode, sde, singlestep, multistep, adaptive) or globs (dpmpp-*).")
@click.option("--steps", default=",".join(map(str, DEFAULT_STEPS)), show_default=True,
              help="Comma-separated step counts.")
@click.option("--nfe", default=None, help="Comma-separated NFE budgets instead of --steps: each solver "
              "gets the most steps whose counted NFE fits.")
@click.option("--grid", default="logsnr", show_default=True, help="Time grid (bench list grids).")
@click.option("--schedule", default=None, help="Override the problems' noise schedule.")
@click.option("--metric", "metric_names", multiple=True,
              help="Metric (repeatable; bench list metrics). Default: w2-exact on Gaussian problems, "
                   "w2 and path-rms on mixtures.")
@click.option("--samples", default=DEFAULT_SAMPLES, show_default=True, type=int,
              help="Samples per cell (w2: POT exact EMD costs ~0.05 s at 500, ~1.2 s at 2000; the "
                   "noise floor falls like n^-1/d, see the noise_floor column).")
@click.option("--seeds", default=3, show_default=True, type=int, help="Number of seeds (0..N-1).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float64", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--prior", type=click.Choice(["exact", "standard"]), default="exact", show_default=True,
              help="exact: x_T from the exact p_T (isolates discretization error); standard: "
                   "N(0, sigma(t_max)^2 I).")
@click.option("--denoise-final", is_flag=True, help="Add one explicit Tweedie step x <- E[x0|x] at t_min.")
@click.option("--jobs", default=None, type=int, help="Worker processes [default: one per CPU].")
@click.option("--cluster", default=None, help="Run the cells on Dask instead of --jobs: tcp://HOST:PORT of a "
              "running scheduler, or local:N to start N local workers (needs the cluster extra).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default results/<timestamp>-<commit>/). Rerun with the same "
                   "--out to resume: finished cells are skipped.")
def run_cmd(problems, solvers, steps, nfe, grid, schedule, metric_names, samples, seeds, dtype, device,
            prior, denoise_final, jobs, cluster, out) -> None:
    """Run a sweep and write tidy results (results.csv/.parquet, orders.csv, manifest.json)."""
    from bench.studies.analytic import run_sweep
    from bench.sweep.manifest import short_commit

    if seeds <= 0:
        raise click.BadParameter(f"--seeds must be positive, got {seeds}")
    if jobs is not None and jobs <= 0:
        raise click.BadParameter(f"--jobs must be positive, got {jobs}")
    config = SweepConfig(
        problems=list(problems) or list(DEFAULT_PROBLEMS), solvers=[solvers],
        steps=_ints(steps, "--steps"), nfe=_ints(nfe, "--nfe") if nfe else None, grid=grid,
        schedule=schedule, metrics=list(metric_names) or None, samples=samples,
        seeds=list(range(seeds)), dtype=dtype, device=device, prior=prior, denoise_final=denoise_final,
    )
    if out is None:
        out = Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{short_commit()}"
    command = "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    start = time.perf_counter()
    run_sweep(config, out, command=command, jobs=jobs, progress=Progress(), cluster=cluster)
    _summary(out)
    click.echo(f"wrote {out} in {time.perf_counter() - start:.1f} s", err=True)


def _summary(out: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(out / "results.csv")
    ok = frame[frame.status == "ok"]
    if ok.empty:
        click.echo("no successful cells")
        return
    table = ok.pivot_table(index=["problem", "metric", "solver"], columns="steps", values="value",
                           aggfunc="mean")
    orders = pd.read_csv(out / "orders.csv")
    if not orders.empty:
        o = orders[orders.axis == "steps"].set_index(["problem", "metric", "solver"])[
            ["order", "theory", "verdict"]]
        table = table.join(o, how="left")
    fmt = "{:.3g}".format
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.float_format", fmt):
        click.echo(table.to_string())
    skipped = frame[frame.status != "ok"]
    if not skipped.empty:
        counts = skipped.groupby(["status"]).size().to_dict()
        click.echo(f"not ok: {counts} (see status/reason columns)")


@cli.command("plot")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--style", type=click.Choice(["paper", "slides"]), default="paper", show_default=True)
@click.option("--solvers", default=None, help="Comma-separated solver labels to include.")
@click.option("--problems", default=None, help="Comma-separated problems to include.")
def plot_cmd(results_dir: Path, style: str, solvers: str | None, problems: str | None) -> None:
    """Draw figures from a results directory (reads files only; never reruns)."""
    from bench.report.figures import make_figures

    paths = make_figures(results_dir, style=style, solvers=_names(solvers), problems=_names(problems))
    for path in paths:
        click.echo(str(path))


@cli.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--style", type=click.Choice(["paper", "slides"]), default="paper", show_default=True)
@click.option("--solvers", default=None, help="Comma-separated solver labels to include.")
@click.option("--problems", default=None, help="Comma-separated problems to include.")
def report_cmd(results_dir: Path, style: str, solvers: str | None, problems: str | None) -> None:
    """Write report.md and tables.tex for a results directory."""
    from bench.report.report import write_report

    path = write_report(results_dir, style=style, solvers=_names(solvers), problems=_names(problems))
    click.echo(str(path))


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@cli.group("perf")
def perf_cmd() -> None:
    """Speed benchmarks (figures for notes and README; asv tracks them over commits)."""


@perf_cmd.command("score")
@click.option("--n", default=65536, show_default=True)
@click.option("--k", default=8, show_default=True)
@click.option("--dims", default="2,16", show_default=True)
@click.option("--repeats", default=10, show_default=True)
def perf_score(n: int, k: int, dims: str, repeats: int) -> None:
    """Analytic score evaluations per second against autograd of the log-density."""
    from bench.studies.speed import score_throughput

    for d in _ints(dims, "--dims"):
        res = score_throughput(n, k, d, repeats)
        click.echo(f"n={n} K={k} d={d}: analytic {res['analytic']:.3g} evals/s; autograd through "
                   f"torch.distributions {res['autograd']:.3g} (x{res['analytic'] / res['autograd']:.1f}), "
                   f"autograd of our log-density {res['autograd_same_density']:.3g} "
                   f"(x{res['analytic'] / res['autograd_same_density']:.1f})")


@perf_cmd.command("overhead")
@click.option("--steps", default=50, show_default=True)
@click.option("--solvers", "names", default="ddim,dpmpp-2m,unipc-2", show_default=True)
def perf_overhead(steps: int, names: str) -> None:
    """Per-step loop overhead against diffusers' scheduler.step loop (needs diffusers)."""
    from bench.studies.speed import loop_overhead

    for name in _names(names) or []:
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


from bench.cli.learned import COMMANDS as _LEARNED  # noqa: E402

for _command in _LEARNED:
    cli.add_command(_command)


from bench.cli.images import image_run, train_image  # noqa: E402 (image commands live in bench/studies/images)

cli.add_command(train_image)
cli.add_command(image_run)


from bench.cli.fid import fid_cmd  # noqa: E402 (FID tools live in bench/studies/images)

cli.add_command(fid_cmd)


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
