"""`bench conformance SAMPLERS`: a conformance card per sampler (bench/studies/conformance.py measures,
bench/report/conformance.py judges and renders)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from bench.cli.options import DTYPE_NAMES, FLOATS, INTS, NAMES, SEEDS, command_line, jobs_option, out_option


@click.command("conformance")
@click.argument("samplers", type=NAMES)
@click.option("--gauss-problem", default="gauss-unit-3d", show_default=True,
              help="Gaussian target of the dense and precision axes (exact W2 of the output law).")
@click.option("--mixture-problem", default="mix-unit-2d", show_default=True,
              help="Mixture of the strong-order and guidance axes (path-rms; one class per component).")
@click.option("--schedule", default=None,
              help="Override the problems' noise schedule (bench list schedules).")
@click.option("--grid", default="logsnr", show_default=True,
              help="Time grid of our solvers and k-diffusion (diffusers keeps its own timestep spacing).")
@click.option("--dense", type=SEEDS, default="2-100", show_default=True, help="Step counts, every one.")
@click.option("--ladder", type=INTS, default="128,256,512,1024", show_default=True,
              help="Further step counts (a doubling ladder).")
@click.option("--dtypes", type=NAMES, default=",".join(DTYPE_NAMES), show_default=True,
              help="Precisions of the precision axis (float64 is always the reference).")
@click.option("--samples", type=click.IntRange(min=2), default=64, show_default=True,
              help="x_T per dense cell (the rounding RMS of the precision axis).")
@click.option("--order-steps", type=INTS, default="4,8,16,32,64,128,256", show_default=True,
              help="Step ladder of the strong order (path-rms on the mixture).")
@click.option("--scales", type=FLOATS, default="0,1,2,4,8", show_default=True,
              help="Classifier-guidance scales w of the guidance axis.")
@click.option("--guidance-nfe", type=INTS, default="10,20", show_default=True,
              help="NFE budgets of the guidance axis.")
@jobs_option
@out_option(help="Output directory [default: results/conformance-<timestamp>-<commit>/]; rerun with the same "
                 "--out to resume.")
def conformance_cmd(samplers, gauss_problem, mixture_problem, schedule, grid, dense, ladder, dtypes, samples,
                    order_steps, scales, guidance_nfe, jobs, out) -> None:
    """Conformance cards: run SAMPLERS (any solver spec: ours, 'diffusers:*', 'kdiff:*', file.py:Class,
    'all') on exact problems at every step count 2..100 and a ladder to 1024, in float64/32, bfloat16
    and float16, and under guidance; print one card per sampler with PASS/FLAG and the numbers behind
    each finding."""
    from bench.cli.main import Progress
    from bench.report.conformance import cards, render
    from bench.studies.conformance import ConformanceConfig, ConformanceStudy
    from bench.sweep.engine import run_study
    from bench.sweep.manifest import short_commit
    from bench.sweep.store import load_rows

    bad = [d for d in dtypes if d not in DTYPE_NAMES]
    if bad:
        raise click.BadParameter(f"unknown dtype {bad[0]!r}; valid: {', '.join(DTYPE_NAMES)}",
                                 param_hint="--dtypes")
    config = ConformanceConfig(samplers=list(samplers), gauss_problem=gauss_problem,
                               mixture_problem=mixture_problem, schedule=schedule, grid=grid, dense=dense,
                               ladder=ladder, dtypes=["float64", *(d for d in dtypes if d != "float64")],
                               samples=samples, order_steps=order_steps, scales=scales,
                               guidance_nfe=guidance_nfe)
    if out is None:
        out = Path("results") / f"conformance-{time.strftime('%Y%m%d-%H%M%S')}-{short_commit()}"
    start = time.perf_counter()
    run_study(ConformanceStudy(config), out, command=command_line(), jobs=jobs, progress=Progress())
    all_cards = cards(load_rows(out))
    for card in all_cards:
        click.echo(render(card) + "\n")
    flagged = sum(bool(c.flags) for c in all_cards)
    click.echo(f"{len(all_cards)} cards: {len(all_cards) - flagged} PASS, {flagged} FLAG\n"
               f"wrote {out} in {time.perf_counter() - start:.0f} s\n  report:  bench report {out}")
