"""`bench learned train|decompose|guided`: learned, perturbed and guided scores on exact problems."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.options import (
    FLOATS,
    INTS,
    NAMES,
    SEEDS,
    command_line,
    jobs_option,
    one,
    out_option,
    problem_option,
    sampling_options,
    stacked,
)

DEFAULT_SOLVERS = "ddim,heun,dpmpp-2m,dpm-solver-3"


@click.group("learned")
def learned_group() -> None:
    """Learned scores on exact problems: train a network, split its error, guided sampling."""


def _exact_sampling(study: str, device: str) -> None:
    """These studies run on CPU: their references are float64 on CPU (the solvers run in --dtype)."""
    if device != "cpu":
        raise click.BadParameter(f"{study} runs on cpu (its float64 references need it); got --device "
                                 f"{device}")


def _study_options(steps: str, seeds: str):
    """--solvers, --steps, --seeds, --samples, the sampling options, --jobs and --out of the studies
    on exact problems with a learned or guided model (decompose, guided)."""
    return stacked(
        click.option("--solvers", type=NAMES, default=DEFAULT_SOLVERS, show_default=True,
                     help="Comma list of ODE solvers."),
        click.option("--steps", type=INTS, default=steps, show_default=True, help="Step counts."),
        click.option("--seeds", type=SEEDS, default=seeds, show_default=True,
                     help="Seeds: list and/or ranges."),
        click.option("--samples", type=click.IntRange(min=1), default=500, show_default=True),
        sampling_options(), jobs_option, out_option(required=True),
    )


def _progress():
    from bench.cli.main import Progress

    return Progress()


@learned_group.command("train")
@problem_option("mix-2d", single=True)
@click.option("--param", "parameterization", type=click.Choice(["eps", "score"]), default="eps",
              show_default=True, help="What the network outputs.")
@click.option("--width", type=click.IntRange(min=1), default=128, show_default=True, help="Hidden width.")
@click.option("--depth", type=click.IntRange(min=1), default=3, show_default=True, help="Hidden layers.")
@click.option("--train-steps", type=click.IntRange(min=1), default=3000, show_default=True,
              help="Adam steps.")
@click.option("--samples", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Size of the fixed training set of exact data samples.")
@click.option("--batch", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Training seed.")
@click.option("--schedule", default=None, help="Override the problem's noise schedule.")
@out_option(help="Checkpoint path [default: checkpoints/<problem>-w<width>-s<train-steps>.pt].")
def train_cmd(problems, parameterization, width, depth, train_steps, samples, batch, lr, seed, schedule,
              out) -> None:
    """Train a time-conditioned MLP by denoising score matching on exact samples of the problem and
    report its score error E_t E_x sigma_t^2 ||s_theta - grad log p_t||^2 against the exact score."""
    import torch

    from bench.studies.learned import TrainConfig, save_checkpoint, train

    problem = one(problems, "--problem")
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


@learned_group.command("decompose")
@problem_option("mix-2d", single=True)
@click.option("--model", "model_spec", required=True,
              help="A checkpoint from `bench learned train`, perturb:bias=SIZE or perturb:noise=SIZE.")
@_study_options(steps="4,8,16,32,64,128,256", seeds="0-2")
def decompose_cmd(problems, model_spec, solvers, steps, seeds, samples, grid, schedule, device, dtype, jobs,
                  out) -> None:
    """Per (solver, steps): error with the exact score (discretization), of the reference solver with
    the tested model (score) and with both; a results directory of the one format (`component`
    column), a table and the decomposition figures."""
    from bench.report.decomposition import plot_decomposition
    from bench.studies.decompose import DecomposeConfig, DecomposeStudy, crossover, table
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    _exact_sampling("decompose", device)
    config = DecomposeConfig(one(problems, "--problem"), model_spec, solvers, steps, seeds, samples, schedule,
                             grid, dtype)
    run_study(DecomposeStudy(config), out, command=command_line(), jobs=jobs, progress=_progress())
    frame = load_rows(out)
    for metric in ("path-rms", "w2"):
        click.echo(f"\n{metric}:\n{table(frame, metric).to_string(index=False, float_format='%.4g')}")
        click.echo(f"score error dominates from NFE: {json.dumps(crossover(frame, metric))}")
        if metric == "w2":
            floor = frame.loc[frame["metric"] == "w2", "noise_floor"].mean()
            click.echo(f"w2 noise floor at --samples {samples}: {floor:.4g} (not resolved below it)")
        click.echo(str(plot_decomposition(frame, out / "figures" / f"decomposition-{metric}.png", metric)))


@learned_group.command("guided")
@problem_option("mix-2d", single=True)
@click.option("--label", type=click.IntRange(min=0), default=0, show_default=True,
              help="Class (component index) to guide to.")
@click.option("--guidance", type=click.Choice(["classifier", "cfg"]), default="classifier", show_default=True)
@click.option("--scales", type=FLOATS, default="0,1,2,4,8", show_default=True, help="Guidance scales w.")
@_study_options(steps="4,8,16,32,64", seeds="0-1")
def guided_cmd(problems, label, guidance, scales, solvers, steps, seeds, samples, grid, schedule, device,
               dtype, jobs, out) -> None:
    """Exact classifier / classifier-free guidance: each solver's path-rms to the same guided PF-ODE
    solved to high accuracy, per guidance scale; a results directory of the one format and a table."""
    from bench.studies.guidance import GuidedConfig, GuidedStudy
    from bench.sweep.engine import run_study
    from bench.sweep.store import load_rows

    _exact_sampling("guided", device)
    config = GuidedConfig(one(problems, "--problem"), label, scales, guidance, solvers, steps, seeds, samples,
                          schedule, grid, dtype)
    run_study(GuidedStudy(config), out, command=command_line(), jobs=jobs, progress=_progress())
    frame = load_rows(out)
    wide = frame.pivot_table(index=["solver", "steps", "nfe"], columns="scale", values="value")
    wide.columns = [f"w={c:g}" for c in wide.columns]
    click.echo("path-rms to the guided reference:")
    click.echo(wide.reset_index().to_string(index=False, float_format="%.4g"))
    freq = frame.groupby("scale")["ref_class_freq"].mean()
    click.echo("reference class frequency: " + ", ".join(f"w={k:g}: {v:.3f}" for k, v in freq.items()))
