"""CLI commands for learned, perturbed and guided scores: `bench train-score`, `bench decompose`,
`bench guided`."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from bench.studies.learned import CheckpointError


@click.command("train-score")
@click.argument("problem")
@click.option("--param", "parameterization", type=click.Choice(["eps", "score"]), default="eps",
              show_default=True, help="What the network outputs.")
@click.option("--width", default=128, show_default=True, type=int, help="Hidden width.")
@click.option("--depth", default=3, show_default=True, type=int, help="Hidden layers.")
@click.option("--train-steps", default=3000, show_default=True, type=int, help="Adam steps.")
@click.option("--samples", default=20000, show_default=True, type=int,
              help="Size of the fixed training set of exact data samples.")
@click.option("--batch", default=512, show_default=True, type=int)
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Checkpoint path (default checkpoints/<problem>-w<width>-s<steps>.pt).")
def train_score_cmd(problem, parameterization, width, depth, train_steps, samples, batch, lr, seed,
                    schedule, out) -> None:
    """Train a time-conditioned MLP by denoising score matching on exact samples of PROBLEM and
    report its score error E_t E_x sigma_t^2 ||s_theta - grad log p_t||^2 against the exact score."""
    from bench.studies.learned import TrainConfig, save_checkpoint, train

    torch.set_num_threads(1)  # small tensors on a shared machine: threads only spin-wait
    config = TrainConfig(problem=problem, schedule=schedule, parameterization=parameterization, width=width,
                         depth=depth, train_steps=train_steps, samples=samples, batch=batch, lr=lr, seed=seed,
                         eval_every=max(1, train_steps // 10))

    def progress(point: dict) -> None:
        click.echo(f"step {point['step']:>6}  loss {point['loss']:.4f}  score error "
                   f"{point['score_error']:.5f}  {point['seconds']:.1f} s", err=True)

    trained = train(config, progress)
    out = out or Path("checkpoints") / f"{problem}-w{width}-s{train_steps}.pt"
    save_checkpoint(trained, out)
    click.echo(json.dumps({"checkpoint": str(out), "score_error": trained.curve[-1]["score_error"],
                           "initial_score_error": trained.curve[0]["score_error"]}))


@click.command("decompose")
@click.option("--problem", default="mix-2d", show_default=True, help="Problem name or JSON file.")
@click.option("--model", "model_spec", required=True,
              help="A checkpoint from `bench train-score`, perturb:bias=SIZE or perturb:noise=SIZE.")
@click.option("--solvers", default=None, help="Comma-separated ODE solvers (default ddim,heun,dpmpp-2m,"
              "dpm-solver-3).")
@click.option("--steps", default="4,8,16,32,64,128,256", show_default=True)
@click.option("--seeds", default=3, show_default=True, type=int)
@click.option("--samples", default=500, show_default=True, type=int)
@click.option("--schedule", default=None)
@click.option("--jobs", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
def decompose_cmd(problem, model_spec, solvers, steps, seeds, samples, schedule, jobs, out) -> None:
    """Per (solver, steps): error with the exact score (discretization), of the reference solver with
    the tested model (score) and with both; a results directory of the one format (`component` column),
    a table and the decomposition figures."""
    from bench.cli.main import _ints, _names
    from bench.report.decomposition import plot_decomposition
    from bench.studies.decompose import DEFAULT_SOLVERS, DecomposeConfig, DecomposeStudy, crossover, table
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    if seeds <= 0 or samples <= 0:
        raise click.BadParameter("--seeds and --samples must be positive")
    config = DecomposeConfig(problem, model_spec, _names(solvers) or list(DEFAULT_SOLVERS),
                             _ints(steps, "--steps"), list(range(seeds)), samples, schedule)
    run_study(DecomposeStudy(config), out, command=_command(), jobs=jobs, progress=_progress())
    frame = load_rows(out)
    for metric in ("path-rms", "w2"):
        click.echo(f"\n{metric}:\n{table(frame, metric).to_string(index=False, float_format='%.4g')}")
        click.echo(f"score error dominates from NFE: {json.dumps(crossover(frame, metric))}")
        if metric == "w2":
            floor = frame.loc[frame["metric"] == "w2", "noise_floor"].mean()
            click.echo(f"w2 noise floor at --samples {samples}: {floor:.4g} (not resolved below it)")
        click.echo(str(plot_decomposition(frame, out / "figures" / f"decomposition-{metric}.png", metric)))


@click.command("guided")
@click.option("--problem", default="mix-2d", show_default=True, help="Problem name or JSON file.")
@click.option("--label", default=0, show_default=True, type=int, help="Class (component index) to guide to.")
@click.option("--kind", type=click.Choice(["classifier", "cfg"]), default="classifier", show_default=True)
@click.option("--scales", default="0,1,2,4,8", show_default=True, help="Comma-separated guidance scales w.")
@click.option("--solvers", default=None, help="Comma-separated ODE solvers (default ddim,heun,dpmpp-2m,"
              "dpm-solver-3).")
@click.option("--steps", default="4,8,16,32,64", show_default=True)
@click.option("--seeds", default=2, show_default=True, type=int)
@click.option("--samples", default=500, show_default=True, type=int)
@click.option("--schedule", default=None)
@click.option("--jobs", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
def guided_cmd(problem, label, kind, scales, solvers, steps, seeds, samples, schedule, jobs, out) -> None:
    """Exact classifier / classifier-free guidance: each solver's path-rms to the same guided PF-ODE
    solved to high accuracy, per guidance scale; a results directory of the one format and a table."""
    from bench.cli.main import _ints, _names
    from bench.studies.guidance import DEFAULT_SOLVERS, GuidedConfig, GuidedStudy
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    if seeds <= 0 or samples <= 0:
        raise click.BadParameter("--seeds and --samples must be positive")
    try:
        values = [float(v) for v in scales.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"--scales takes comma-separated numbers, got {scales!r}") from None
    config = GuidedConfig(problem, label, values, kind, _names(solvers) or list(DEFAULT_SOLVERS),
                          _ints(steps, "--steps"), list(range(seeds)), samples, schedule)
    run_study(GuidedStudy(config), out, command=_command(), jobs=jobs, progress=_progress())
    frame = load_rows(out)
    wide = frame.pivot_table(index=["solver", "steps", "nfe"], columns="scale", values="value")
    wide.columns = [f"w={c:g}" for c in wide.columns]
    click.echo("path-rms to the guided reference:")
    click.echo(wide.reset_index().to_string(index=False, float_format="%.4g"))
    freq = frame.groupby("scale")["ref_class_freq"].mean()
    click.echo("reference class frequency: " + ", ".join(f"w={k:g}: {v:.3f}" for k, v in freq.items()))


def _command() -> str:
    import shlex
    import sys

    return "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _progress():
    from bench.cli.main import Progress

    return Progress()


COMMANDS = [train_score_cmd, decompose_cmd, guided_cmd]
ERRORS = (CheckpointError,)
